"""Shared fixtures: every test session gets its own iworkflow home (source store, database)."""
from __future__ import annotations

import os
import tempfile

import pytest

_HOME = tempfile.mkdtemp(prefix="iworkflow-test-home-")
os.environ["IWORKFLOW_HOME"] = _HOME
os.environ.setdefault("IWORKFLOW_SECRET", "test-secret-" + os.urandom(8).hex())


@pytest.fixture
def embedded():
    """A fresh embedded runtime (memory bus + local processes), closed after the test."""
    import iworkflow

    runtime = iworkflow.configure(broker="memory://", executor="local", slots=2)
    yield runtime
    iworkflow.shutdown()


@pytest.fixture
def threaded():
    """The embedded runtime with the thread executor, for tests of driver-side behaviour."""
    import iworkflow

    runtime = iworkflow.configure(broker="memory://", executor="thread", slots=4)
    yield runtime
    iworkflow.shutdown()


@pytest.fixture(scope="session", autouse=True)
def _delete_rabbitmq_queues_this_session_created():
    """Leave the shared RabbitMQ as we found it: delete the queues and exchanges under this session's run
    prefixes (``broker_cleanup.run_prefix``), never anything another process made."""
    yield
    from broker_cleanup import delete_session_leftovers

    try:
        delete_session_leftovers()
    except Exception as err:  # the broker may be down after a fault test; the CI setup cleans up then
        print(f"could not delete this session's RabbitMQ queues: {err}")
