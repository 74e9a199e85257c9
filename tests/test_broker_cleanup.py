"""The broker clean-up deletes only what test and benchmark runs made on the shared RabbitMQ."""
import uuid

import pytest
from broker_cleanup import is_test_exchange


@pytest.mark.parametrize("prefix", ["t", "e2e", "flt", "loss", "bench"])
def test_exchanges_under_a_run_prefix_are_recognised(prefix):
    width = 10 if prefix == "t" else 8
    assert is_test_exchange(f"{prefix}{uuid.uuid4().hex[:width]}.events")


@pytest.mark.parametrize("name", ["tasks", "telemetry.events", "iworkflow.events", "amq.fanout", "celeryev",
                                  "bench.results", "t-0123456789.events", ""])
def test_user_and_broker_exchanges_are_never_taken_for_test_ones(name):
    assert not is_test_exchange(name)
