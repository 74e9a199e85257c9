"""Delete RabbitMQ queues and exchanges that tests leave behind: quorum queues are Raft groups, and
hundreds of leftovers slow the broker's start and handshakes to a crawl.

    python tests/broker_cleanup.py             # every queue without consumers (a dedicated test broker)
"""
from __future__ import annotations

import re
import subprocess
import sys

BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"


def list_queues() -> dict[str, int] | None:
    """``{queue name: consumer count}`` on the local node, or None when rabbitmqctl cannot say."""
    try:
        out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name", "consumers", "--no-table-headers"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    queues = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            queues[parts[0]] = int(parts[1])
    return queues


def list_exchanges() -> set[str] | None:
    """Names of the exchanges on the local node (built-in ones included), or None when rabbitmqctl cannot say."""
    try:
        out = subprocess.run(["rabbitmqctl", "-q", "list_exchanges", "name", "--no-table-headers"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}


def _delete(names: list[str], kind: str) -> int:
    if not names:
        return 0
    import pika

    deleted = 0
    connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    try:
        channel = connection.channel()
        for name in names:
            try:
                if kind == "queue":
                    channel.queue_delete(queue=name)
                else:
                    channel.exchange_delete(exchange=name)
                deleted += 1
            except pika.exceptions.ChannelClosed:
                channel = connection.channel()
    finally:
        connection.close()
    return deleted


def delete_queues(names: list[str]) -> int:
    """Delete these queues over one AMQP connection; returns how many were deleted."""
    return _delete(names, "queue")


def delete_exchanges(names: list[str]) -> int:
    """Delete these exchanges (never the built-in ``amq.*`` ones); returns how many were deleted."""
    return _delete([n for n in names if n and not n.startswith("amq.")], "exchange")


def delete_idle_queues() -> int:
    queues = list_queues() or {}
    return delete_queues(sorted(name for name, consumers in queues.items() if consumers == 0))


#: run prefixes of the test and benchmark fixtures: a short word, then random hex, then a dot
TEST_EXCHANGE = re.compile(r"(bench|e2e|flt|loss|t)[0-9a-f]{8,10}\.")


def is_test_exchange(name: str) -> bool:
    """Whether a test or benchmark run made this exchange (never a user's or the broker's own)."""
    return TEST_EXCHANGE.match(name) is not None


def delete_test_exchanges() -> int:
    """The fanout exchanges of test and benchmark runs."""
    return delete_exchanges(sorted(n for n in list_exchanges() or () if is_test_exchange(n)))


if __name__ == "__main__":
    count = delete_idle_queues()
    exchanges = delete_test_exchanges()
    print(f"rabbitmq: deleted {count} idle queue(s) and {exchanges} test exchange(s)")
    sys.exit(0)
