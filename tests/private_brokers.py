"""Broker processes a test session owns, for tests that restart a broker.

The brokers at 127.0.0.1:5672 and :61613 are shared (other sessions, other engineers' runs) and are never
stopped by a test.  A test that needs a broker to go away and come back gets its own:

- :class:`PrivateRabbitMQ`: a RabbitMQ node with its own node name, ports, Erlang cookie, mnesia and log
  directories and no plugins (Debian's ``rabbitmq-server``); restarted with ``stop_app``/``start_app``
  (every connection dropped, durable queues and persistent messages recovered from disk).
- :class:`PrivateActiveMQ`: an ActiveMQ broker (Debian's ``activemq`` package) with its own configuration,
  KahaDB data directory and STOMP port; restarted by stopping and starting its JVM.

Each starts in a few seconds, lives in its own temporary directory and is stopped (by the pid this module
started) and removed at the end.  Nothing here talks to the shared brokers.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

RABBITMQ_BIN = Path(os.environ.get("IWORKFLOW_TEST_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
ACTIVEMQ_HOME = Path(os.environ.get("IWORKFLOW_TEST_ACTIVEMQ_HOME", "/usr/share/activemq"))
START_TIMEOUT = 90.0
#: what Debian's /usr/bin/activemq passes to Java 17 for ActiveMQ 5.17
JAVA_OPENS = ["--add-reads=java.xml=java.logging"] + [
    f"--add-opens={module}=ALL-UNNAMED" for module in (
        "java.base/java.security", "java.base/java.net", "java.base/java.lang", "java.base/java.util",
        "java.naming/javax.naming.spi", "java.rmi/sun.rmi.transport.tcp", "java.base/java.util.concurrent",
        "java.base/java.util.concurrent.atomic")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _wait(check, what: str, proc: subprocess.Popen, log: Path, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}; log:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout:.0f}s; log:\n{_tail(log)}")
        time.sleep(0.2)


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def _end(proc: subprocess.Popen | None, grace: float = 20.0) -> None:
    """Stop a broker this module started: SIGTERM its process group, then SIGKILL what is left."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class PrivateRabbitMQ:
    """A RabbitMQ node of this test session (see the module docstring)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="iwf-private-rabbitmq-"))
        self.node = f"iwftest{os.getpid()}x{os.urandom(2).hex()}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.proc: subprocess.Popen | None = None
        home = self.dir / "home"
        home.mkdir()
        cookie = home / ".erlang.cookie"
        cookie.write_text(os.urandom(16).hex())
        cookie.chmod(0o400)
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq-env.conf").write_text("")
        (self.dir / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 127.0.0.1:{self.port}\n")
        self.env = dict(
            os.environ, HOME=str(home), RABBITMQ_NODENAME=self.node, RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.dir / "mnesia"), RABBITMQ_LOG_BASE=str(self.dir / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.dir / "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE=str(self.dir / "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=str(self.dir / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.dir / "advanced.config"),
            RABBITMQ_PLUGINS_EXPAND_DIR=str(self.dir / "plugins-expand"),
            RABBITMQ_PID_FILE=str(self.dir / "pid"), ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}")

    def start(self) -> PrivateRabbitMQ:
        server = RABBITMQ_BIN / "rabbitmq-server"
        if not server.exists():
            raise RuntimeError(f"{server} is missing: install Debian's rabbitmq-server (.ci/rabbitmq.sh)")
        log = self.dir / "server.out"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([str(server)], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        _wait(lambda: _port_open(self.port), f"private RabbitMQ node {self.node}", self.proc, log)
        return self

    def ctl(self, *args: str, timeout: float = 120.0) -> str:
        done = subprocess.run([str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, "-q", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.node}: {done.stderr or done.stdout}")
        return done.stdout

    def stop_app(self) -> None:
        """The broker goes away: every client connection is dropped (the node stays, its data too)."""
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        _wait(lambda: _port_open(self.port), f"private RabbitMQ node {self.node}", self.proc, self.dir / "server.out")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.proc is not None and self.proc.poll() is None:
                self.ctl("stop", timeout=60)
        _end(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


ACTIVEMQ_XML = """<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans
    http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
    http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="{name}" useJmx="false"
          dataDirectory="{data}" schedulePeriodForDestinationPurge="30000">
    <destinationPolicy><policyMap><policyEntries>
      <policyEntry queue="&gt;" gcInactiveDestinations="true" inactiveTimoutBeforeGC="60000">
        <deadLetterStrategy><sharedDeadLetterStrategy processExpired="false"/></deadLetterStrategy>
      </policyEntry>
    </policyEntries></policyMap></destinationPolicy>
    <persistenceAdapter><kahaDB directory="{data}/kahadb"/></persistenceAdapter>
    <transportConnectors>
      <transportConnector name="stomp"
        uri="stomp://127.0.0.1:{port}?transport.closeAsync=false&amp;transport.tcpNoDelay=true"/>
    </transportConnectors>
  </broker>
</beans>
"""


class PrivateActiveMQ:
    """An ActiveMQ broker of this test session (see the module docstring)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="iwf-private-activemq-"))
        self.port = free_port()
        self.url = f"stomp://admin:admin@127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        conf, data = self.dir / "conf", self.dir / "data"
        conf.mkdir()
        data.mkdir()
        (conf / "activemq.xml").write_text(ACTIVEMQ_XML.format(name=f"iwftest{os.getpid()}", data=data, port=self.port))
        self.command = [
            shutil.which("java") or "java", "-Xms64M", "-Xmx256M", "-Djava.awt.headless=true",
            f"-Djava.io.tmpdir={data}", *JAVA_OPENS, f"-Dactivemq.classpath={conf}:{ACTIVEMQ_HOME}/lib/",
            f"-Dactivemq.home={ACTIVEMQ_HOME}", f"-Dactivemq.base={self.dir}", f"-Dactivemq.conf={conf}",
            f"-Dactivemq.data={data}", "-jar", str(ACTIVEMQ_HOME / "bin" / "activemq.jar"), "start",
            f"xbean:file:{conf / 'activemq.xml'}"]

    def start(self) -> PrivateActiveMQ:
        if not (ACTIVEMQ_HOME / "bin" / "activemq.jar").exists():
            raise RuntimeError(f"{ACTIVEMQ_HOME}/bin/activemq.jar is missing: install Debian's activemq "
                               "(.ci/activemq.sh)")
        log = self.dir / "broker.out"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        _wait(self._stomp_ready, "private ActiveMQ", self.proc, log)
        return self

    def _stomp_ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"CONNECT\naccept-version:1.1\nhost:localhost\nlogin:admin\npasscode:admin\n\n\x00")
                s.settimeout(5)
                return s.recv(64).startswith(b"CONNECTED")
        except OSError:
            return False

    def stop(self) -> None:
        """The broker goes away (its JVM stopped); its data directory stays for the restart."""
        _end(self.proc)

    def close(self) -> None:
        _end(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def broker_restarted(broker: PrivateRabbitMQ | PrivateActiveMQ, down_seconds: float = 0.0):
    """The body runs while the broker is down; it always comes back."""
    if isinstance(broker, PrivateRabbitMQ):
        broker.stop_app()
    else:
        broker.stop()
    try:
        if down_seconds:
            time.sleep(down_seconds)
        yield
    finally:
        if isinstance(broker, PrivateRabbitMQ):
            broker.start_app()
        else:
            broker.start()
