"""Real brokers for the bus tests: RabbitMQ at 127.0.0.1:5672 and ActiveMQ (STOMP) at 127.0.0.1:61613.

Every test gets its own destination prefix, so runs (and engineers sharing a broker) never collide.
Start the brokers with ``.ci/rabbitmq.sh`` and ``.ci/activemq.sh``; deselect with ``-m "not activemq"``.
"""
from __future__ import annotations

import os
import subprocess

import pytest
from broker_cleanup import run_prefix

RABBITMQ_URL = os.environ.get("IWORKFLOW_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
ACTIVEMQ_URL = os.environ.get("IWORKFLOW_TEST_STOMP", "stomp://admin:admin@127.0.0.1:61613")
BROKERS = {
    "memory": "memory://",
    "rabbitmq": RABBITMQ_URL,
    "rabbitmq-quorum": RABBITMQ_URL,
    "activemq": ACTIVEMQ_URL,
}
#: settings per kind: RabbitMQ runs the contract with classic job queues (the default) and quorum ones
SETTINGS = {"rabbitmq-quorum": {"job_queue_type": "quorum"}}
ALL_BUSES = [
    pytest.param("memory", id="memory"),
    pytest.param("rabbitmq", id="rabbitmq", marks=pytest.mark.rabbitmq),
    pytest.param("rabbitmq-quorum", id="rabbitmq-quorum", marks=pytest.mark.rabbitmq),
    pytest.param("activemq", id="activemq", marks=pytest.mark.activemq),
]
REAL_BROKERS = ALL_BUSES[1:]


def unique_prefix() -> str:
    return run_prefix("t")


def open_bus(kind: str, prefix: str):
    from iworkflow.bus import connect
    from iworkflow.config import load_settings

    return connect(BROKERS[kind], load_settings(broker=BROKERS[kind], destination_prefix=prefix,
                                                **SETTINGS.get(kind, {})))


@pytest.fixture
def bus_factory(request):
    """Open buses of one kind sharing one fresh prefix (several buses = several processes' view)."""
    kind = request.param
    prefix = unique_prefix()
    opened = []

    def make():
        """A new connection; the memory bus lives inside one process, so there it is always the same bus."""
        if kind == "memory" and opened:
            return opened[0]
        bus = open_bus(kind, prefix)
        opened.append(bus)
        return bus

    make.kind = kind  # type: ignore[attr-defined]
    make.prefix = prefix  # type: ignore[attr-defined]
    yield make
    for bus in reversed(opened):
        bus.close()


def drop_connection(bus) -> None:
    """Make the broker side of a bus's connection go away, as a broker restart or a network cut would."""
    from iworkflow.bus.amqp import AmqpBus

    if isinstance(bus, AmqpBus):
        listing = subprocess.run(["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
                                 capture_output=True, text=True, timeout=60, check=True).stdout
        names = [line.split("\t")[0] for line in listing.splitlines() if bus.connection_name in line]
        assert names, f"connection {bus.connection_name!r} not found in rabbitmqctl list_connections"
        for name in names:
            subprocess.run(["rabbitmqctl", "-q", "close_connection", name, "contract test closes it"],
                           timeout=60, check=True)
        return
    port = bus._conn.transport.socket.getsockname()[1]
    subprocess.run(["ss", "-K", "dst", "127.0.0.1", "dport", "=", "61613", "sport", "=", str(port)],
                   capture_output=True, timeout=10, check=True)
