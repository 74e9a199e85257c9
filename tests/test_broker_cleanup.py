"""The broker clean-up deletes only what test and benchmark runs made on the shared RabbitMQ."""
import uuid

import pytest
from broker_cleanup import SESSION, is_session_name, is_test_exchange, is_test_name, run_prefix


@pytest.mark.parametrize("prefix", ["t", "e2e", "flt", "loss", "bench"])
def test_exchanges_under_a_run_prefix_are_recognised(prefix):
    width = 10 if prefix == "t" else 8
    assert is_test_exchange(f"{prefix}{uuid.uuid4().hex[:width]}.events")


@pytest.mark.parametrize("name", ["tasks", "telemetry.events", "iworkflow.events", "amq.fanout", "celeryev",
                                  "bench.results", "t-0123456789.events", ""])
def test_user_and_broker_exchanges_are_never_taken_for_test_ones(name):
    assert not is_test_exchange(name)


def test_a_run_prefix_is_recognised_as_this_sessions_and_as_a_test_run():
    prefix = run_prefix("flt")
    assert is_session_name(prefix + "jobs.q") and is_test_name(prefix + "events")


def test_another_sessions_prefix_is_not_this_sessions():
    other = "0" * 6 if SESSION != "0" * 6 else "1" * 6
    assert not is_session_name(f"t{other}abcd.jobs.q")
    assert is_test_name(f"t{other}abcd.jobs.q")


@pytest.mark.parametrize("name", ["iworkflow.jobs.default", "tasks", "celery", "t0123.jobs", ""])
def test_user_queues_are_never_this_sessions(name):
    assert not is_session_name(name)
