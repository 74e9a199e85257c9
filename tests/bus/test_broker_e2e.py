"""End to end over real brokers: drivers in this process (or CLI processes), `iworkflow worker` subprocesses,
each as another machine (``other_machine``): they share nothing with the driver but the broker."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import pytest
from broker_cleanup import run_prefix
from fresh_code import check, two_runs
from other_machine import OtherMachine

import iworkflow
from iworkflow import work

from .conftest import BROKERS, open_bus

pytestmark = pytest.mark.timeout(120)
BOTH = [pytest.param("rabbitmq", marks=pytest.mark.rabbitmq), pytest.param("activemq", marks=pytest.mark.activemq)]
RABBIT = [pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)]
CLI = [os.path.join(os.path.dirname(sys.executable), "iworkflow")]


class Deployment:
    """One broker, one fresh destination prefix and queue, the workers started on it, and a driver runtime."""

    def __init__(self, kind: str, tmp_path):
        self.kind = kind
        self.url = BROKERS[kind]
        self.prefix = run_prefix("e2e")
        self.queue = "q"
        self.tmp = tmp_path
        self.workers: list[subprocess.Popen] = []
        self.machines: list[OtherMachine] = []
        #: a directory driver and workers both see, for the tests' own markers (never for iworkflow's files)
        self.shared = tmp_path.parent / f"{tmp_path.name}-shared"
        self.shared.mkdir()
        self.env = dict(os.environ, IWORKFLOW_DESTINATION_PREFIX=self.prefix, IWORKFLOW_BROKER=self.url,
                        IWORKFLOW_QUEUE=self.queue, IWORKFLOW_HEARTBEAT_INTERVAL="0.5")

    def start_worker(self, slots: int = 2, elsewhere: bool = True, **env: str) -> subprocess.Popen:
        """A worker as another machine (``other_machine``); ``elsewhere=False``: on this one, sharing its home."""
        log = open(self.tmp / f"worker{len(self.workers)}.log", "wb")
        argv = [*CLI, "--log-level", "INFO", "worker", "--queue", self.queue, "--slots", str(slots)]
        if elsewhere:
            machine = OtherMachine(self.tmp)
            self.machines.append(machine)
            proc = machine.popen(argv, {**self.env, **env}, stdout=subprocess.PIPE, stderr=log)
        else:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, env={**self.env, **env})
        self.workers.append(proc)
        line = proc.stdout.readline().decode()
        assert "ready" in line, f"worker did not start: {line!r}; log: {self.log(len(self.workers) - 1)}"
        return proc

    def log(self, index: int) -> str:
        return (self.tmp / f"worker{index}.log").read_text(errors="replace")

    def driver(self, **settings):
        return iworkflow.configure(broker=self.url, executor="broker", queue=self.queue,
                                   destination_prefix=self.prefix, **settings)

    def close(self) -> None:
        iworkflow.shutdown()
        for proc in self.workers:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.workers:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for machine in self.machines:
            machine.cleanup()


@pytest.fixture
def deploy(request, tmp_path):
    d = Deployment(request.param, tmp_path)
    yield d
    d.close()


@work(map_results=True)
def square(x):
    return x * x, os.getppid()


def squares_ran_on(results, n: int) -> set[int]:
    """Check that each of the n ``square`` results is its own job's; return the worker pids that ran them."""
    workers = set()
    for i in range(n):
        value, worker_pid = results.get_result(args={"x": i})
        assert value == i * i
        workers.add(worker_pid)
    return workers


@work
def slow_identity(x, seconds):
    time.sleep(seconds)
    return x, os.getppid()


@pytest.mark.parametrize("deploy", BOTH, indirect=True)
def test_200_jobs_on_two_workers_every_result_keyed_correctly(deploy):
    w1, w2 = deploy.start_worker(slots=2), deploy.start_worker(slots=2)
    deploy.driver()
    results = square(multi_jobs_kwargs_list=[{"x": i} for i in range(200)])
    assert len(results) == 200
    assert squares_ran_on(results, 200) == {w1.pid, w2.pid}, "both worker processes ran jobs"


@pytest.mark.parametrize("deploy", BOTH, indirect=True)
def test_a_short_function_fan_out_travels_in_bundles_and_every_result_is_keyed(deploy, caplog):
    """Once a function is measured to be short, its large fan-outs go as bundles; the caller sees no change."""
    w1, w2 = deploy.start_worker(slots=2), deploy.start_worker(slots=2)
    deploy.driver()
    square(multi_jobs_kwargs_list=[{"x": i} for i in range(10)])  # the first call measures the function
    with caplog.at_level(logging.DEBUG, logger="iworkflow.executors.broker"):
        results = square(multi_jobs_kwargs_list=[{"x": i} for i in range(1000)])
    assert any("bundles" in r.getMessage() for r in caplog.records), "the second call was bundled"
    assert squares_ran_on(results, 1000) == {w1.pid, w2.pid}, "the bundles spread over both workers"


@pytest.mark.parametrize("deploy", BOTH, indirect=True)
def test_tampered_and_unsigned_jobs_are_dead_lettered_and_the_worker_keeps_serving(deploy):
    from iworkflow.messages import JobPayload, encode_payload

    deploy.start_worker(slots=1)
    deploy.driver()
    good = encode_payload("job", JobPayload(func=b"", func_digest="x", args=b""), b"another secret",
                          work_id="w", job_key="k")
    tampered = bytearray(encode_payload("job", JobPayload(func=b"", func_digest="x", args=b""),
                                        os.environ["IWORKFLOW_SECRET"].encode(), work_id="w", job_key="k2"))
    tampered[-1] ^= 0xFF
    with open_bus(deploy.kind, deploy.prefix) as bus:
        dead = []
        bus.consume("dlq", lambda d: (dead.append(d.body), d.ack()))
        bus.publish_many(f"jobs.{deploy.queue}", [good, bytes(tampered), b"not even an envelope"])
        assert slow_identity(7, 0) == (7, deploy.workers[0].pid)
        deadline = time.monotonic() + 15
        while len(dead) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sorted(dead) == sorted([good, bytes(tampered), b"not even an envelope"])
    log = deploy.log(0)
    assert "signature does not match" in log and "dead-letters" in log


@pytest.mark.parametrize("kind", BOTH)
def test_worker_with_a_wrong_broker_url_fails_fast_naming_the_url(kind):
    url = {"rabbitmq": "amqp://guest:hunter2@127.0.0.1:1/", "activemq": "stomp://admin:hunter2@127.0.0.1:1"}[kind]
    start = time.monotonic()
    proc = subprocess.run([*CLI, "worker", "--queue", "q"], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "IWORKFLOW_BROKER": url})
    assert time.monotonic() - start < 15
    assert proc.returncode == 2
    assert url.replace("hunter2", "***") in proc.stderr
    assert "refused" in proc.stderr.lower()
    assert "hunter2" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("deploy", RABBIT, indirect=True)
def test_sigterm_lets_the_running_job_finish_and_exits_zero(deploy, tmp_path):
    worker = deploy.start_worker(slots=1)
    deploy.driver()
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(slow_identity, "done", 2.0)
        time.sleep(1.0)
        worker.send_signal(signal.SIGTERM)
        assert call.result(timeout=30) == ("done", worker.pid)
    assert worker.wait(timeout=30) == 0
    assert "stopped after 1 job(s)" in worker.stdout.read().decode()


DRIVER_SCRIPT = '''
import os, sys
from iworkflow import work, workflow

@work
def tag(i, me):
    return me, i

@workflow(local=True)
def main(me):
    out = tag(multi_jobs_kwargs_list=[{"i": i, "me": me} for i in range(40)])
    assert out == [(me, i) for i in range(40)], out
    return "ok " + me
'''


@pytest.mark.parametrize("deploy", RABBIT, indirect=True)
def test_two_concurrent_drivers_only_see_their_own_results(deploy, tmp_path):
    deploy.start_worker(slots=2)
    script = tmp_path / "drivers.py"
    script.write_text(DRIVER_SCRIPT)
    drivers = [subprocess.Popen([*CLI, "run", f"{script}:main", "--kwargs", f'{{"me": "{me}"}}', "--executor",
                                 "broker", "--broker", deploy.url], env=deploy.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for me in ("A", "B")]
    outs = [d.communicate(timeout=60) for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], outs
    assert [o[0].strip() for o in outs] == ["'ok A'", "'ok B'"]


@pytest.mark.parametrize("deploy", BOTH, indirect=True)
def test_worker_killed_mid_job_the_job_reruns_on_the_other_worker(deploy, tmp_path):
    marker = deploy.shared / "started"
    a = deploy.start_worker(slots=1)
    deploy.driver()

    @work
    def record_and_sleep(path):
        import pathlib

        p = pathlib.Path(path)
        if not p.exists():
            p.write_text(f"{os.getppid()} {os.getpid()}")
            time.sleep(60)
        return os.getppid()

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(record_and_sleep, str(marker))
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        worker_pid, runner_pid = map(int, marker.read_text().split())
        assert worker_pid == a.pid
        b = deploy.start_worker(slots=1)
        os.kill(runner_pid, signal.SIGKILL)
        a.kill()
        assert call.result(timeout=60) == b.pid


@work
def stall_once(x, marker):
    """Job ``x == 100`` stalls the first time it runs (recording its worker and runner); the rest return."""
    import pathlib

    path = pathlib.Path(marker)
    if x == 100 and not path.exists():
        path.write_text(f"{os.getppid()} {os.getpid()}")
        time.sleep(60)
    return x


@pytest.mark.parametrize("deploy", BOTH, indirect=True)
def test_a_bundle_whose_worker_dies_is_split_and_every_job_ends_once(deploy, tmp_path):
    """A worker SIGKILLed while it holds bundles: they come back, go out again one job per message, and every
    job's result reaches the caller exactly once."""
    marker = deploy.shared / "stalled"
    workers = [deploy.start_worker(slots=1), deploy.start_worker(slots=1)]
    deploy.driver()
    stall_once(multi_jobs_kwargs_list=[{"x": -i, "marker": str(marker)} for i in range(1, 11)])  # measured short
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(stall_once, multi_jobs_kwargs_list=[{"x": i, "marker": str(marker)} for i in range(400)])
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # the marker is written before the pids are complete on a slow disk
        worker_pid, runner_pid = map(int, marker.read_text().split())
        os.kill(runner_pid, signal.SIGKILL)
        os.kill(worker_pid, signal.SIGKILL)
        assert call.result(timeout=60) == list(range(400)), "each job's own result, once"
    survivor = next(i for i, w in enumerate(workers) if w.pid != worker_pid)
    assert "splits a redelivered bundle" in deploy.log(survivor)


KILLER_SCRIPT = '''
import os, signal
from iworkflow import work

@work
def kill_my_worker():
    os.kill(os.getppid(), signal.SIGKILL)
    os._exit(1)
'''


@pytest.mark.parametrize("deploy", BOTH, indirect=True)
def test_a_job_that_keeps_killing_its_worker_fails_naming_the_lost_worker(deploy, tmp_path):
    """A redelivered job runs only once its holder notice is confirmed, so the worker it kills is named."""
    from iworkflow.errors import JobLostError

    workers = [deploy.start_worker(slots=1, IWORKFLOW_MAX_ATTEMPT="2") for _ in range(3)]
    deploy.driver()
    script = tmp_path / "killer.py"
    script.write_text(KILLER_SCRIPT)
    from iworkflow.cli.run import load_target

    kill_my_worker = load_target(f"{script}:kill_my_worker")
    with pytest.raises(JobLostError) as err:
        kill_my_worker()
    dead = [w for w in workers if w.poll() is not None]
    alive = [w for w in workers if w.poll() is None]
    assert [w.returncode for w in dead] == [-signal.SIGKILL] * 2, "two workers died; the third refused a rerun"
    message = str(err.value)
    assert any(f":{w.pid}" in message for w in dead), message
    assert not any(f":{w.pid}" in message for w in alive), "only lost workers are named"
    assert "max_attempt=2" in message


DETACHED_SCRIPT = '''
import pathlib
from iworkflow import work, workflow

@work
def double(x):
    return 2 * x

@workflow(local=False)
def pipeline(n, out=None):
    total = sum(double(multi_jobs_kwargs_list=[{"x": i} for i in range(n)]))
    if out:
        pathlib.Path(out).write_text(str(total))
    return total
'''


@pytest.mark.parametrize("deploy", BOTH, indirect=True)
def test_detached_workflow_runs_its_driver_on_a_single_slot_worker(deploy, tmp_path):
    deploy.start_worker(slots=1)
    deploy.driver()
    script = tmp_path / "detached.py"
    script.write_text(DETACHED_SCRIPT)
    from iworkflow.cli.run import load_target

    pipeline = load_target(f"{script}:pipeline")
    wf = pipeline(5)
    assert isinstance(wf, iworkflow.Workflow)
    assert wf.wait(timeout=60) == 2 * sum(range(5))


@pytest.mark.parametrize("deploy", BOTH, indirect=True)
def test_iworkflow_submit_prints_the_workflow_id_and_the_driver_runs_on_a_worker(deploy, tmp_path):
    deploy.start_worker(slots=1)
    script = tmp_path / "submitted.py"
    script.write_text(DETACHED_SCRIPT)
    out = deploy.shared / "total.txt"
    proc = subprocess.run([*CLI, "submit", f"{script}:pipeline", "--kwargs", f'{{"n": 4, "out": "{out}"}}'],
                          env=deploy.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    workflow_id = proc.stdout.strip()
    assert len(workflow_id) >= 16 and " " not in workflow_id
    deadline = time.monotonic() + 60
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert out.read_text() == str(2 * sum(range(4)))


@pytest.mark.parametrize("deploy", BOTH, indirect=True)
def test_a_long_lived_worker_serves_each_run_with_its_own_helper_module(deploy, tmp_path):
    """The same worker serves run 1, the helper module is edited, run 2 gets the new helper's values."""
    deploy.start_worker(slots=1)
    deploy.driver()
    check(*two_runs(tmp_path / "project"))


HELPER = "FACTOR = 3\n"
SCALED = """import os

import scale_helper


def scaled(x):
    return scale_helper.FACTOR * x, os.getppid()
"""


def project_with_helper(tree, map_results: bool = True):
    """A driver's project: a job module importing a helper module that only the driver's tree holds."""
    import importlib
    import sys

    tree.mkdir(parents=True, exist_ok=True)
    (tree / "scale_helper.py").write_text(HELPER)
    (tree / "scale_jobs.py").write_text(SCALED)
    sys.path.insert(0, str(tree))
    try:
        return work(map_results=map_results)(importlib.import_module("scale_jobs").scaled)
    finally:
        sys.path.remove(str(tree))
        sys.modules.pop("scale_jobs", None)
        sys.modules.pop("scale_helper", None)


@pytest.mark.parametrize("deploy", BOTH, indirect=True)
def test_a_fan_out_importing_a_helper_module_runs_on_two_other_machines(deploy, tmp_path):
    """Neither worker sees the driver's files: both fetch the tree from the driver over the broker."""
    w1, w2 = deploy.start_worker(slots=2), deploy.start_worker(slots=2)
    deploy.driver()
    scaled = project_with_helper(tmp_path / "project")
    results = iworkflow.Workflow(lambda: scaled(multi_jobs_kwargs_list=[{"x": i} for i in range(60)]),
                                 source_dir=str(tmp_path / "project")).run()
    assert [results.get_result(args={"x": i})[0] for i in range(60)] == [3 * i for i in range(60)]
    assert {results.get_result(args={"x": i})[1] for i in range(60)} == {w1.pid, w2.pid}
    assert all("fetched source" in deploy.log(i) for i in (0, 1)), "each worker fetched the tree once"


@work
def blob_of(n):
    return os.urandom(n)


@pytest.mark.parametrize("deploy", BOTH, indirect=True)
def test_a_result_larger_than_the_inline_limit_reaches_the_driver_from_another_machine(deploy):
    """The worker stores a 3 MiB result in its own store; the driver cannot read it and fetches it over the bus."""
    import hashlib

    deploy.start_worker(slots=1)
    deploy.driver()
    value = blob_of(3 * 2**20)
    assert len(value) == 3 * 2**20
    log = deploy.log(0)
    assert "sends result" in log, log[-2000:]
    digest = log.split("sends result ", 1)[1].split(" ", 1)[0]
    assert hashlib.sha256(__import__("pickle").dumps(value, protocol=5)).hexdigest().startswith(digest)


@pytest.mark.parametrize("deploy", RABBIT, indirect=True)
def test_a_worker_that_cannot_obtain_the_source_fails_the_job_naming_the_three_ways(deploy, tmp_path, monkeypatch):
    from iworkflow.errors import SourceUnavailable

    deploy.start_worker(slots=1)
    runtime = deploy.driver()

    def refuse(digest):
        raise FileNotFoundError("this driver lost its store")

    monkeypatch.setattr(runtime, "_shipped_source", refuse)
    scaled = project_with_helper(tmp_path / "project", map_results=False)
    with pytest.raises(SourceUnavailable) as err:
        iworkflow.Workflow(lambda: scaled(x=1), source_dir=str(tmp_path / "project")).run()
    message = str(err.value)
    assert "over the broker from its driver" in message and "server_url" in message and "source_store" in message
    assert "this driver lost its store" in message, "the error says why the driver did not hand the tree over"


DETACHED_PROJECT = '''
import os
import time

import dhelper
from iworkflow import work, workflow


@work
def scaled(x):
    time.sleep(0.05)
    return dhelper.FACTOR * x, os.getppid()


@workflow(local=False, executor="broker")
def pipeline(n):
    return scaled(multi_jobs_kwargs_list=[{"x": i} for i in range(n)])
'''


@pytest.mark.parametrize("deploy", BOTH, indirect=True)
def test_a_detached_driver_serves_its_tree_to_workers_on_other_machines(deploy, tmp_path):
    """The driver job carries the tree; the detached driver (on one machine) serves it to the other one."""
    workers = [deploy.start_worker(slots=1), deploy.start_worker(slots=1)]
    deploy.driver()
    project = tmp_path / "detached_project"
    project.mkdir()
    (project / "dhelper.py").write_text("FACTOR = 7\n")
    (project / "pipeline.py").write_text(DETACHED_PROJECT)
    from iworkflow.cli.run import load_target

    wf = load_target(f"{project / 'pipeline.py'}:pipeline")(40)
    results = wf.wait(timeout=90)
    assert [value for value, _pid in results] == [7 * i for i in range(40)]
    assert {pid for _value, pid in results} == {w.pid for w in workers}, "both machines ran jobs"
    logs = [deploy.log(0), deploy.log(1)]
    assert sum("fetched source" in log for log in logs) == 1, "the machine without the driver fetched the tree"


@pytest.mark.parametrize("deploy", RABBIT, indirect=True)
def test_the_jobs_of_a_driver_that_refused_its_tree_fail_at_once_without_asking_again(deploy, tmp_path, monkeypatch):
    """One refused fetch: the other jobs naming that tree and driver fail straight away, each saying why."""
    deploy.start_worker(slots=1, IWORKFLOW_BLOB_FETCH_TIMEOUT="600")
    runtime = deploy.driver()

    def refuse(digest):
        raise FileNotFoundError("this driver lost its store")

    monkeypatch.setattr(runtime, "_shipped_source", refuse)
    scaled = project_with_helper(tmp_path / "project")
    results = iworkflow.Workflow(lambda: scaled(multi_jobs_kwargs_list=[{"x": i} for i in range(6)]),
                                 source_dir=str(tmp_path / "project")).run()
    for i in range(6):
        _value, details = results.get_result(args={"x": i}, with_details=True)
        assert details["status"] == "failed" and "this driver lost its store" in details["error"], details
    assert deploy.log(0).count("could not fetch source") == 1


@pytest.mark.parametrize("deploy", RABBIT, indirect=True)
def test_with_a_server_the_tree_reaches_another_machine_through_its_source_cache(deploy, tmp_path):
    """server_url on both sides: jobs name no blobs queue, the worker downloads the tree over HTTP."""
    from iworkflow.bus.memory import MemoryBus
    from iworkflow.config import load_settings
    from iworkflow.server.service import Server, ServerOptions

    token = "source-token-" + os.urandom(4).hex()
    bus = MemoryBus()
    srv = Server(load_settings(db=f"sqlite:///{tmp_path / 'server.db'}", token=token,
                               source_store=str(tmp_path / "server-store")), bus,
                 ServerOptions(host="127.0.0.1", port=0))
    srv.start_background()
    try:
        deploy.start_worker(slots=1, IWORKFLOW_SERVER_URL=srv.url, IWORKFLOW_TOKEN=token)
        deploy.driver(server_url=srv.url, token=token)
        scaled = project_with_helper(tmp_path / "project")
        results = iworkflow.Workflow(lambda: scaled(multi_jobs_kwargs_list=[{"x": i} for i in range(4)]),
                                     source_dir=str(tmp_path / "project")).run()
        assert [results.get_result(args={"x": i})[0] for i in range(4)] == [0, 3, 6, 9]
        assert "fetched source" not in deploy.log(0), "the tree came from the server, not over the broker"
    finally:
        iworkflow.shutdown()
        srv.stop()
        bus.close()
