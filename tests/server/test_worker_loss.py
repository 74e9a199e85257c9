"""Acceptance: SIGKILL the only worker mid-job; the server's monitor requeues the job, nobody takes it, and once
the attempts are spent the driver's call returns with an error naming the lost worker.

Everything is real: RabbitMQ, `iworkflow server` and `iworkflow worker` subprocesses, the source tree shipped
through the server's HTTP source cache.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from broker_cleanup import run_prefix

import iworkflow
from iworkflow.errors import JobLostError

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(120)]

AMQP_URL = os.environ.get("IWORKFLOW_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
CLI = [sys.executable, "-c", "from iworkflow.cli import main; main()"]


class Cluster:
    """A server and workers on one broker under a destination prefix of their own; stopped by pid at the end."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.prefix = run_prefix("loss")
        self.token = "loss-" + uuid.uuid4().hex[:8]
        self.procs: list[subprocess.Popen] = []
        self.logs: list = []
        self.env = dict(os.environ, IWORKFLOW_BROKER=AMQP_URL, IWORKFLOW_DESTINATION_PREFIX=self.prefix,
                        IWORKFLOW_QUEUE="q", IWORKFLOW_TOKEN=self.token, IWORKFLOW_HEARTBEAT_INTERVAL="0.3",
                        IWORKFLOW_HEARTBEAT_TIMEOUT="2", IWORKFLOW_MAX_ATTEMPT="2")
        self.env.pop("IWORKFLOW_SERVER_URL", None)

    def start(self, name: str, *args: str) -> tuple[subprocess.Popen, str]:
        home = self.tmp / f"{name}-home"
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - the child writes to it until stop()
        self.logs.append(log)
        proc = subprocess.Popen([*CLI, "--log-level", "INFO", *args], stdout=subprocess.PIPE, stderr=log,
                                env={**self.env, "IWORKFLOW_HOME": str(home)})
        self.procs.append(proc)
        line = proc.stdout.readline().decode()
        assert line, f"{name} exited: {(self.tmp / f'{name}.log').read_text(errors='replace')}"
        return proc, line

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()


def test_sigkilled_worker_ends_the_call_with_an_error_naming_it(tmp_path):
    cluster = Cluster(tmp_path)
    started = tmp_path / "started"
    try:
        _, line = cluster.start("server", "server", "--port", "0", "--db", f"sqlite:///{tmp_path / 'server.db'}")
        url = re.search(r"listening on (http://\S+) ", line).group(1)
        worker, line = cluster.start("worker", "worker", "--slots", "1", "--grace", "1")
        worker_name = re.search(r"worker (\S+) ready", line).group(1)

        iworkflow.configure(broker=AMQP_URL, executor="broker", queue="q", destination_prefix=cluster.prefix,
                            server_url=url, token=cluster.token, result_timeout=60)

        @iworkflow.work
        def hang(seconds):
            import os as _os
            import time as _time

            Path(str(started)).write_text(str(_os.getpid()))
            _time.sleep(seconds)
            return "finished after all"

        @iworkflow.workflow(local=True, name="worker-loss")
        def driver():
            return hang(seconds=60)

        outcome: dict = {}

        def call() -> None:
            try:
                outcome["value"] = driver()
            except BaseException as exc:  # noqa: BLE001 - the test inspects whatever ends the call
                outcome["error"] = exc

        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not started.exists():
            assert time.monotonic() < deadline, f"job never started; worker log:\n{cluster.log('worker')}"
            time.sleep(0.05)
        time.sleep(1.0)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        t_kill = time.monotonic()

        thread.join(45)
        assert not thread.is_alive(), f"the driver's call is still waiting; server log:\n{cluster.log('server')}"
        error = outcome.get("error")
        assert isinstance(error, JobLostError), outcome
        assert worker_name in str(error), f"the error must name the lost worker {worker_name}: {error}"
        assert "2 of 2 attempts" in str(error)
        assert time.monotonic() - t_kill < 30

        jobs = httpx.get(f"{url}/api/jobs", params={"status": "failed"}, timeout=10).json()
        assert len(jobs) == 1 and jobs[0]["attempt"] == 2 and worker_name in (jobs[0]["lost_workers"] or "")
        assert "monitor" in cluster.log("server") and "lost" in cluster.log("server")
        unpacked = list((tmp_path / "worker-home" / "http-sources" / "unpacked").iterdir())
        assert len(unpacked) == 1 and (unpacked[0] / Path(__file__).name).is_file(), \
            "the worker got the workflow's source tree from the server's HTTP source cache"
    finally:
        iworkflow.shutdown()
        if started.exists():
            _kill_orphan(int(started.read_text() or 0))
        cluster.stop()
        _delete_queues(cluster.prefix)


def _kill_orphan(pid: int) -> None:
    """The killed worker's runner process (its own session) still sleeps in the job: end it by its pid."""
    if pid > 0:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _delete_queues(prefix: str) -> None:
    from iworkflow.bus import connect
    from iworkflow.config import load_settings

    bus = connect(AMQP_URL, load_settings(broker=AMQP_URL, destination_prefix=prefix))
    try:
        for queue in ("jobs.q", "jobs.q.drivers"):
            bus.delete_queue(queue)
    finally:
        bus.close()
