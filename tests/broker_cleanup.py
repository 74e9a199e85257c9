"""Delete RabbitMQ queues that tests leave behind: quorum queues are Raft groups, and hundreds of
leftovers slow the broker's start and handshakes to a crawl.

    python tests/broker_cleanup.py             # every queue without consumers (a dedicated test broker)
"""
from __future__ import annotations

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


def delete_queues(names: list[str]) -> int:
    """Delete these queues over one AMQP connection; returns how many were deleted."""
    if not names:
        return 0
    import pika

    deleted = 0
    connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    try:
        channel = connection.channel()
        for name in names:
            try:
                channel.queue_delete(queue=name)
                deleted += 1
            except pika.exceptions.ChannelClosed:
                channel = connection.channel()
    finally:
        connection.close()
    return deleted


def delete_idle_queues() -> int:
    queues = list_queues() or {}
    return delete_queues(sorted(name for name, consumers in queues.items() if consumers == 0))


if __name__ == "__main__":
    count = delete_idle_queues()
    print(f"rabbitmq: deleted {count} idle queue(s)")
    sys.exit(0)
