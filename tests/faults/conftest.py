"""Real parts for the fault-injection suite: brokers, ``iworkflow worker``/``server`` processes, real signals.

Every test gets its own destination prefix and queue, so tests (and engineers sharing the brokers) never
see each other's messages.  Every process a test starts is stopped by its pid at the end, including the
runner processes a SIGKILLed worker leaves behind, and the broker queues under the test's prefix are
deleted.  The shared brokers are never stopped: a test that restarts a broker uses one this session owns
(:func:`restartable`, ``tests/private_brokers.py``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from broker_cleanup import run_prefix
from other_machine import OtherMachine
from private_brokers import PrivateActiveMQ, PrivateRabbitMQ

import iworkflow

logger = logging.getLogger(__name__)

RABBITMQ_URL = os.environ.get("IWORKFLOW_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
ACTIVEMQ_URL = os.environ.get("IWORKFLOW_TEST_STOMP", "stomp://admin:admin@127.0.0.1:61613")
URLS = {"rabbitmq": RABBITMQ_URL, "activemq": ACTIVEMQ_URL}
BOTH = [pytest.param("rabbitmq", marks=pytest.mark.rabbitmq, id="rabbitmq"),
        pytest.param("activemq", marks=pytest.mark.activemq, id="activemq")]
RABBIT = [pytest.param("rabbitmq", marks=pytest.mark.rabbitmq, id="rabbitmq")]
CLI = [os.path.join(os.path.dirname(sys.executable), "iworkflow")]
READY_TIMEOUT = 60.0


class Cluster:
    """One broker, one fresh prefix and queue, the worker/server processes started on it, and the driver."""

    def __init__(self, kind: str, tmp: Path, url: str | None = None):
        self.kind = kind
        self.url = url or URLS[kind]
        self.private = url is not None
        self.broker = None
        self.tmp = tmp
        self.prefix = run_prefix("flt")
        self.queue = "q"
        self.procs: dict[str, subprocess.Popen] = {}
        self._logs: list = []
        self._orphans: set[int] = set()
        self._machines: list[OtherMachine] = []
        self.env = dict(os.environ, IWORKFLOW_BROKER=self.url, IWORKFLOW_DESTINATION_PREFIX=self.prefix,
                        IWORKFLOW_QUEUE=self.queue, IWORKFLOW_HEARTBEAT_INTERVAL="0.5")
        self.env.pop("IWORKFLOW_SERVER_URL", None)

    # --- processes -----------------------------------------------------------------------------
    def spawn(self, name: str, args: list[str], elsewhere: bool = False, **env: str) -> tuple[subprocess.Popen, str]:
        """Start ``iworkflow <args>`` logging to ``<tmp>/<name>.log``; returns it and its first stdout line.
        ``elsewhere``: as another machine (``other_machine``), seeing none of the driver's home and code."""
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - the child writes to it until stop()
        self._logs.append(log)
        argv = [*CLI, "--log-level", env.pop("LOG_LEVEL", "INFO"), *args]
        if elsewhere:
            machine = OtherMachine()
            self._machines.append(machine)
            proc = machine.popen(argv, {**self.env, **env}, stdout=subprocess.PIPE, stderr=log)
        else:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, env={**self.env, **env})
        self.procs[name] = proc
        line = proc.stdout.readline().decode()
        assert line, f"{name} exited before it was ready: {self.log(name)}"
        return proc, line

    def start_worker(self, name: str, slots: int = 1, **env: str) -> subprocess.Popen:
        """A worker as another machine: the test's own directory stays visible (the faults' markers live there),
        the driver's home and code do not."""
        proc, line = self.spawn(name, ["worker", "--queue", self.queue, "--slots", str(slots), "--grace", "5"],
                                elsewhere=True, **env)
        assert "ready" in line, f"worker {name} did not start: {line!r}; log: {self.log(name)}"
        return proc

    def start_server(self, name: str, db: str, **env: str) -> str:
        """Start ``iworkflow server`` on a free port; returns its URL."""
        _, line = self.spawn(name, ["server", "--port", str(free_port()), "--db", db], **env)
        found = re.search(r"listening on (http://\S+) ", line)
        assert found, f"server {name} did not start: {line!r}; log: {self.log(name)}"
        return found.group(1)

    def sigkill(self, name: str) -> None:
        """SIGKILL a process; its runner processes (own sessions) are remembered and ended at teardown."""
        proc = self.procs[name]
        with contextlib.suppress(psutil.NoSuchProcess):
            self._orphans.update(p.pid for p in psutil.Process(proc.pid).children(recursive=True))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def driver(self, **settings) -> iworkflow.runtime.Runtime:
        return iworkflow.configure(broker=self.url, executor="broker", queue=self.queue,
                                   destination_prefix=self.prefix, **settings)

    # --- teardown ------------------------------------------------------------------------------
    def close(self) -> None:
        iworkflow.shutdown()
        running = [p for p in self.procs.values() if p.poll() is None]
        for proc in running:
            with contextlib.suppress(psutil.NoSuchProcess):
                self._orphans.update(p.pid for p in psutil.Process(proc.pid).children(recursive=True))
            proc.send_signal(signal.SIGTERM)
        for proc in running:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in self._orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for log in self._logs:
            log.close()
        for machine in self._machines:
            machine.cleanup()
        if not self.private:  # a private broker is removed whole at the end of the session
            delete_queues(self.kind, self.prefix)


@pytest.fixture
def cluster(request, tmp_path) -> Iterator[Cluster]:
    """A :class:`Cluster` on the broker named by the test's parameter."""
    c = Cluster(request.param, tmp_path)
    try:
        yield c
    finally:
        c.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def delete_queues(kind: str, prefix: str) -> None:
    """Drop the RabbitMQ queues under a test's prefix (ActiveMQ garbage-collects its empty destinations)."""
    if kind != "rabbitmq":
        return
    listing = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name", "--no-table-headers"],
                             capture_output=True, text=True, timeout=60)
    for name in listing.stdout.split():
        if name.startswith(prefix):
            subprocess.run(["rabbitmqctl", "-q", "delete_queue", name], capture_output=True, timeout=60)


# --- broker restarts: on brokers this session owns, never the shared ones -----------------------------
def _owned(broker):
    try:
        yield broker.start()
    finally:
        broker.close()


@pytest.fixture(scope="session")
def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    """A RabbitMQ node of this session (started once; tests restart it; stopped and removed at the end)."""
    yield from _owned(PrivateRabbitMQ())


@pytest.fixture(scope="session")
def private_activemq() -> Iterator[PrivateActiveMQ]:
    """An ActiveMQ broker of this session (started once; tests restart it; stopped and removed at the end)."""
    yield from _owned(PrivateActiveMQ())


@pytest.fixture
def restartable(request, tmp_path) -> Iterator[Cluster]:
    """A :class:`Cluster` on a private broker of the kind the test's parameter names; ``cluster.broker`` is it
    (``broker_restarted(cluster.broker)`` takes it down and brings it back)."""
    broker = request.getfixturevalue(f"private_{request.param}")
    c = Cluster(request.param, tmp_path, url=broker.url)
    c.broker = broker
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def rabbit_user() -> Iterator[tuple[str, str]]:
    """A RabbitMQ user on the shared broker with a password that occurs nowhere else, deleted afterwards."""
    user, password = f"iwf-{uuid.uuid4().hex[:6]}", f"pw{uuid.uuid4().hex}"
    subprocess.run(["rabbitmqctl", "-q", "add_user", user, password], check=True, capture_output=True, timeout=60)
    try:
        subprocess.run(["rabbitmqctl", "-q", "set_permissions", user, ".*", ".*", ".*"], check=True,
                       capture_output=True, timeout=60)
        yield user, password
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_user", user], capture_output=True, timeout=60)


def wait_for(check, timeout: float, what: str, interval: float = 0.1):
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(interval)


def capture_dispatched(executor) -> list:
    """Keep every job the executor is handed (the driver keeps no job message once it is sent)."""
    sent: list = []
    dispatch = executor.submit_many

    def submit_many(jobs):
        jobs = list(jobs)
        sent.extend(jobs)
        return dispatch(jobs)

    executor.submit_many = submit_many
    return sent
