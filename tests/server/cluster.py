"""A real deployment for tests: `iworkflow server` and `iworkflow worker` subprocesses on RabbitMQ under a
destination prefix of their own, and this process as the driver; everything is stopped by pid at the end."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
from broker_cleanup import run_prefix

AMQP_URL = os.environ.get("IWORKFLOW_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
CLI = [sys.executable, "-c", "from iworkflow.cli import main; main()"]


class Cluster:
    """``start_server()`` then ``start_worker()``; ``configure_driver()`` points this process's runtime at them."""

    def __init__(self, tmp: Path, word: str = "t", **env: str):
        self.tmp = tmp
        self.prefix = run_prefix(word)
        self.token = "truth-" + uuid.uuid4().hex[:8]
        self.procs: list[subprocess.Popen] = []
        self.logs: list = []
        self.url = ""
        self.env = dict(os.environ, IWORKFLOW_BROKER=AMQP_URL, IWORKFLOW_DESTINATION_PREFIX=self.prefix,
                        IWORKFLOW_QUEUE="q", IWORKFLOW_TOKEN=self.token, IWORKFLOW_HEARTBEAT_INTERVAL="0.3",
                        IWORKFLOW_HEARTBEAT_TIMEOUT="5", **env)
        self.env.pop("IWORKFLOW_SERVER_URL", None)

    def start(self, name: str, *args: str) -> tuple[subprocess.Popen, str]:
        home = self.tmp / f"{name}-home"
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - the child writes to it until stop()
        self.logs.append(log)
        proc = subprocess.Popen([*CLI, "--log-level", "INFO", *args], stdout=subprocess.PIPE, stderr=log,
                                env={**self.env, "IWORKFLOW_HOME": str(home)})
        self.procs.append(proc)
        line = proc.stdout.readline().decode()
        assert line, f"{name} exited: {self.log(name)}"
        return proc, line

    def start_server(self, name: str = "server") -> str:
        _, line = self.start(name, "server", "--port", "0", "--db", f"sqlite:///{self.tmp / (name + '.db')}")
        self.url = re.search(r"listening on (http://\S+) ", line).group(1)
        return self.url

    def start_worker(self, name: str = "worker", *args: str) -> tuple[subprocess.Popen, str]:
        proc, line = self.start(name, "worker", "--grace", "5", *args)
        return proc, re.search(r"worker (\S+) ready", line).group(1)

    def configure_driver(self, **settings):
        import iworkflow

        return iworkflow.configure(broker=AMQP_URL, executor="broker", queue="q", destination_prefix=self.prefix,
                                   server_url=self.url, token=self.token, **settings)

    def get(self, path: str, **params):
        r = httpx.get(f"{self.url}/api{path}", params=params, timeout=10)
        r.raise_for_status()
        return r.json()

    def post(self, path: str):
        r = httpx.post(f"{self.url}/api{path}", headers={"Authorization": f"Bearer {self.token}"}, timeout=10)
        r.raise_for_status()
        return r.json()

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()
        self._delete_queues()

    def _delete_queues(self) -> None:
        from broker_cleanup import delete_queues, list_queues

        delete_queues(sorted(n for n in list_queues() or {} if n.startswith(self.prefix)))
