"""The broker goes away and comes back, or takes a consumer away: nothing is lost, nothing runs twice.

Restarts use brokers this test session owns (``tests/private_brokers.py``: a private RabbitMQ node, restarted
with ``stop_app``/``start_app``, and a private ActiveMQ, restarted by stopping and starting its JVM); the
shared brokers are never restarted.  Deleting a queue under the test's own prefix is safe on the shared
RabbitMQ.
"""
from __future__ import annotations

import json
import logging
import signal
import urllib.request
from pathlib import Path

import httpx
import pika
import psutil
import pytest
from private_brokers import broker_restarted, free_port

from iworkflow import work

from .conftest import RABBIT, Cluster, wait_for

logger = logging.getLogger(__name__)

N_JOBS = 40
OUTAGE_SECONDS = 3.0
PRIVATE = [pytest.param("rabbitmq", marks=pytest.mark.rabbitmq, id="rabbitmq"),
           pytest.param("activemq", marks=pytest.mark.activemq, id="activemq")]


@work(map_results=True, return_work=True)
def nap(x: int, gate: str) -> int:
    """Half the jobs return after a nap; the other half also wait for the gate, opened once the broker is back,
    so that jobs are running and queued while it is down, however slowly the machine stops it."""
    import pathlib
    import time as _time

    _time.sleep(0.3)
    while x >= N_JOBS // 2 and not pathlib.Path(gate).exists():
        _time.sleep(0.05)
    return x * 10


@work
def plus_one(x: int) -> int:
    return x + 1


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("restartable", PRIVATE, indirect=True)
def test_broker_restart_mid_run_every_job_ends_exactly_once(restartable: Cluster, tmp_path: Path) -> None:
    """Stop the broker with jobs queued, running and finished; after it is back every job has one outcome."""
    cluster = restartable
    gate = tmp_path / "gate"
    cluster.start_worker("worker0", slots=2)
    cluster.start_worker("worker1", slots=2)
    cluster.driver()
    w = nap(multi_jobs_kwargs_list=[{"x": i, "gate": str(gate)} for i in range(N_JOBS)])
    w.submit()
    result = w.init_async_result()
    wait_for(lambda: len(result.outcomes) >= 4, 60, "the first results")
    with broker_restarted(cluster.broker, down_seconds=OUTAGE_SECONDS):
        before = len(result.outcomes)
    gate.write_text("")
    results = w.wait_results(timeout=150)

    assert 0 < before < N_JOBS, "the broker went down mid-run"
    assert sorted(result.outcomes) == sorted(w.job_keys), "every job ended exactly once for the caller"
    assert all(o.ok for o in result.outcomes.values()), [o.error for o in result.outcomes.values() if not o.ok]
    assert [results.get_result(args={"x": i, "gate": str(gate)}) for i in range(N_JOBS)] == [
        10 * i for i in range(N_JOBS)]
    logger.warning("%s: %d of %d results in before the outage; %d duplicate result(s) dropped", cluster.kind,
                   before, N_JOBS, result.duplicates)


DETACHED_SCRIPT = '''
import os, pathlib, time
from iworkflow import work, workflow

@work
def double(x):
    return 2 * x

@workflow(local=False)
def pipeline(starts, go):
    with open(starts, "a") as fh:
        fh.write(f"start {os.getpid()}\\n")
    while not pathlib.Path(go).exists():
        time.sleep(0.1)
    return sum(double(multi_jobs_kwargs_list=[{"x": i} for i in range(5)]))
'''


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("copy_to", ["holder", "other"])
@pytest.mark.parametrize("restartable", PRIVATE, indirect=True)
def test_a_detached_driver_runs_once_across_a_broker_restart(restartable: Cluster, copy_to: str,
                                                             tmp_path: Path) -> None:
    """The broker restarts while a detached driver runs, and its message comes back.  ``holder``: to the worker
    running it, which adopts the copy.  ``other``: the holder is frozen while the broker comes back, so the copy
    goes to the other worker, which holds it back while the holder renews its lease, and drops it once the
    holder says the driver finished.  Either way the driver starts once and the workflow ends with its value."""
    cluster = restartable
    starts, go = tmp_path / "starts.txt", tmp_path / "go"
    workers = [cluster.start_worker(f"worker{i}", slots=1) for i in range(1 if copy_to == "holder" else 2)]
    cluster.driver()
    script = tmp_path / "detached.py"
    script.write_text(DETACHED_SCRIPT)
    from iworkflow.cli.run import load_target

    wf = load_target(f"{script}:pipeline")(str(starts), str(go))
    wait_for(lambda: starts.exists() and starts.read_text(), 60, "the driver started")
    runner = int(starts.read_text().split()[1])
    holder = next(w for w in workers if w.pid == psutil.Process(runner).ppid())
    logs = " ".join(f"worker{i}" for i in range(len(workers)))

    def seen(line: str) -> bool:
        """The workers logged it, or the driver started a second time (what happened before issue 16)."""
        return line in _logs(cluster, logs) or starts.read_text().count("start") > 1

    frozen = holder if copy_to == "other" else None
    if frozen is not None:
        frozen.send_signal(signal.SIGSTOP)
    try:
        with broker_restarted(cluster.broker, down_seconds=1.0):
            pass
        wait_for(lambda: seen("already holds job" if copy_to == "holder" else "holds driver job"), 60,
                 f"the {copy_to} worker taking the copy")
    finally:
        if frozen is not None:
            frozen.send_signal(signal.SIGCONT)
    go.write_text("")
    assert wf.wait(timeout=90) == 2 * sum(range(5))
    if copy_to == "other":
        wait_for(lambda: seen("drops its copy of driver job"), 30, "the other worker dropping its copy")
    assert starts.read_text().count("start") == 1, starts.read_text()


def _logs(cluster: Cluster, names: str) -> str:
    return "".join(cluster.log(name) for name in names.split())


def _health(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return json.loads(err.read())


def _delete_queue(url: str, name: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        connection.channel().queue_delete(name)
    finally:
        connection.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cluster", RABBIT, indirect=True)
def test_a_worker_whose_job_queue_is_deleted_declares_it_and_consumes_it_again(cluster: Cluster) -> None:
    """The broker cancels the worker's consumer when its queue is deleted: the worker says so, declares the queue
    again and serves jobs sent afterwards; its health endpoint reports the consumers."""
    port = free_port()
    _, line = cluster.spawn("worker", ["worker", "--queue", cluster.queue, "--slots", "1", "--health-port", str(port)])
    assert "ready" in line and f"127.0.0.1:{port}/health" in line, cluster.log("worker")
    cluster.driver()
    assert plus_one(1) == 2
    jobs = f"jobs.{cluster.queue}"
    assert _health(port)["consumers"][jobs] == "consuming"
    _delete_queue(cluster.url, cluster.prefix + jobs)
    wait_for(lambda: f"consuming {cluster.prefix}{jobs} again" in cluster.log("worker"), 30,
             "the worker consuming its queue again")
    assert "cancelled the consumer" in cluster.log("worker")
    assert plus_one(2) == 3, "a job sent after the deletion runs"
    status = _health(port)
    assert status["ok"] and set(status["consumers"].values()) == {"consuming"}, status


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cluster", RABBIT, indirect=True)
def test_the_server_recorder_consumes_its_deleted_events_queue_again(cluster: Cluster, tmp_path: Path) -> None:
    """Delete the server's durable events queue: the recorder declares and consumes it again, /api/health reports
    it, and the events of a work run afterwards are recorded."""
    url = cluster.start_server("server", f"sqlite:///{tmp_path / 'server.db'}")
    assert httpx.get(f"{url}/api/health", timeout=5).json()["consumers"] == {"events.server": "consuming"}
    cluster.start_worker("worker", slots=1)
    cluster.driver()
    _delete_queue(cluster.url, cluster.prefix + "events.server")
    wait_for(lambda: "cancelled the consumer" in cluster.log("server"), 30, "the recorder told its queue is gone")
    wait_for(lambda: httpx.get(f"{url}/api/health", timeout=5).json()["consumers"]["events.server"] == "consuming",
             30, "the recorder consuming again")

    @work(return_work=True)
    def triple(x: int) -> int:
        return 3 * x

    w = triple(x=2)
    w.submit()
    assert w.wait_results(timeout=60) == 6

    def recorded() -> bool:
        jobs = httpx.get(f"{url}/api/jobs", params={"work_id": w.internal_id, "status": "finished"}, timeout=5)
        return len(jobs.json()) == 1

    wait_for(recorded, 30, "the work's events recorded")


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.rabbitmq
def test_a_worker_that_cannot_consume_its_queue_again_exits_non_zero_saying_why(private_rabbitmq, tmp_path: Path):
    """On the session's own RabbitMQ: the worker's user loses its permissions, then its queue is deleted and its
    connection dropped; it retries, gives up, and exits with code 3 and a message naming the queue.

    The connection is dropped because RabbitMQ caches permission checks per channel: a channel that declared
    the queue before may declare it again after the revocation, so only fresh channels see the refusal."""
    cluster = Cluster("rabbitmq", tmp_path, url=private_rabbitmq.url)
    try:
        worker = cluster.start_worker("worker", slots=1)
        private_rabbitmq.ctl("set_permissions", "-p", "/", "guest", "^$", "^$", "^$")
        try:
            private_rabbitmq.ctl("delete_queue", f"{cluster.prefix}jobs.{cluster.queue}")
            private_rabbitmq.ctl("close_all_connections", "permissions revoked by the test")
            assert worker.wait(timeout=90) == 3
        finally:
            private_rabbitmq.ctl("set_permissions", "-p", "/", "guest", ".*", ".*", ".*")
        log = cluster.log("worker")
        assert f"lost its consumer of jobs.{cluster.queue}" in log and "ACCESS_REFUSED" in log, log[-3000:]
    finally:
        cluster.close()
