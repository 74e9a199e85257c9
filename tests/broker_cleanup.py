"""Delete the RabbitMQ queues and exchanges that test and benchmark runs leave behind, and nothing else.

The broker may be shared with other processes (a user's jobs, another engineer's test session), so only
names under a run prefix (:func:`run_prefix`: a short word, random hex, a dot) are ever deleted; a test
session deletes only its own (:data:`SESSION`), the command line only idle ones of any run.

    python tests/broker_cleanup.py             # idle queues and exchanges left by earlier test/benchmark runs
"""
from __future__ import annotations

import os
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


#: the words run prefixes start with (tests, end-to-end, faults, worker loss, benchmarks)
WORDS = ("bench", "e2e", "flt", "loss", "t")
#: run prefixes of the test and benchmark fixtures: a short word, then random hex, then a dot
TEST_NAME = re.compile(r"(bench|e2e|flt|loss|t)[0-9a-f]{8,10}\.")
#: this test session's own hex, shared by every prefix it makes (six of the ten hex digits)
SESSION = os.urandom(3).hex()


def run_prefix(word: str = "t") -> str:
    """A fresh destination prefix of this session: ``<word><session hex><4 random hex>.``."""
    if word not in WORDS:
        raise ValueError(f"run prefix word {word!r} is not one of {WORDS}")
    return f"{word}{SESSION}{os.urandom(2).hex()}."


def is_test_name(name: str) -> bool:
    """Whether a test or benchmark run made this queue or exchange (never a user's or the broker's own)."""
    return TEST_NAME.match(name) is not None


is_test_exchange = is_test_name


def is_session_name(name: str, session: str = SESSION) -> bool:
    """Whether this queue or exchange is under a prefix that this test session made."""
    m = TEST_NAME.match(name)
    return m is not None and len(m.group(0)) == len(m.group(1)) + 11 and name[len(m.group(1)):].startswith(session)


def delete_session_leftovers(session: str = SESSION) -> tuple[int, int]:
    """Delete this session's queues and exchanges (consumers or not: the session is over)."""
    queues = delete_queues(sorted(n for n in list_queues() or {} if is_session_name(n, session)))
    exchanges = delete_exchanges(sorted(n for n in list_exchanges() or () if is_session_name(n, session)))
    return queues, exchanges


def delete_idle_queues() -> int:
    """Queues of earlier test and benchmark runs that nobody consumes any more."""
    queues = list_queues() or {}
    return delete_queues(sorted(n for n, consumers in queues.items() if consumers == 0 and is_test_name(n)))


def delete_test_exchanges() -> int:
    """The fanout exchanges of test and benchmark runs."""
    return delete_exchanges(sorted(n for n in list_exchanges() or () if is_test_name(n)))


if __name__ == "__main__":
    count = delete_idle_queues()
    exchanges = delete_test_exchanges()
    print(f"rabbitmq: deleted {count} idle queue(s) and {exchanges} test exchange(s)")
    sys.exit(0)
