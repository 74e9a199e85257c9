"""The broker goes away mid-run and comes back: drivers and workers reconnect, every job ends once, none lost.

RabbitMQ is stopped with ``rabbitmqctl stop_app`` (the node stays, the broker does not); ActiveMQ's service is
restarted.  :func:`~tests.faults.conftest.broker_down` always brings the broker back, even when the test fails.
"""
from __future__ import annotations

import logging
import time

import pytest

from iworkflow import work

from .conftest import BOTH, Cluster, broker_down, wait_for

logger = logging.getLogger(__name__)

N_JOBS = 40
OUTAGE_SECONDS = 3.0


@work(map_results=True, return_work=True)
def nap(x: int) -> int:
    """A job long enough that several are running when the broker stops."""
    import time as _time

    _time.sleep(0.3)
    return x * 10


@pytest.mark.timeout(240)
@pytest.mark.parametrize("cluster", BOTH, indirect=True)
def test_broker_restart_mid_run_every_job_ends_exactly_once(cluster: Cluster) -> None:
    """Stop the broker with jobs queued, running and finished; after it is back every job has one outcome."""
    cluster.start_worker("worker0", slots=2)
    cluster.start_worker("worker1", slots=2)
    cluster.driver()
    w = nap(multi_jobs_kwargs_list=[{"x": i} for i in range(N_JOBS)])
    w.submit()
    result = w.init_async_result()
    wait_for(lambda: len(result.outcomes) >= 4, 60, "the first results")
    with broker_down(cluster.kind):
        before = len(result.outcomes)
        time.sleep(OUTAGE_SECONDS)
    results = w.wait_results(timeout=150)

    assert 0 < before < N_JOBS, "the broker went down mid-run"
    assert sorted(result.outcomes) == sorted(w.job_keys), "every job ended exactly once for the caller"
    assert all(o.ok for o in result.outcomes.values()), [o.error for o in result.outcomes.values() if not o.ok]
    assert [results.get_result(args={"x": i}) for i in range(N_JOBS)] == [10 * i for i in range(N_JOBS)]
    logger.warning("%s: %d of %d results in before the outage; %d duplicate result(s) dropped", cluster.kind,
                   before, N_JOBS, result.duplicates)
