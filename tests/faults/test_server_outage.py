"""The server goes down for a while: jobs still run and return, and the server catches up when it is back.

The server reads the durable ``events.server`` queue bound to the events topic (RabbitMQ: a bounded durable
queue on the fanout exchange; ActiveMQ: a virtual-topic consumer queue), so events sent while it is down
wait for it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from iworkflow import work

from .conftest import BOTH, Cluster, wait_for

logger = logging.getLogger(__name__)


@work(return_work=True)
def triple(x: int) -> int:
    return 3 * x


def _finished_jobs(url: str, work_id: str) -> int:
    try:
        jobs = httpx.get(f"{url}/api/jobs", params={"work_id": work_id, "status": "finished"}, timeout=5).json()
    except httpx.HTTPError:
        return 0
    return len(jobs)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cluster", BOTH, indirect=True)
def test_server_down_jobs_still_return_and_the_server_catches_up(cluster: Cluster, tmp_path: Path) -> None:
    """Kill the server, run a work, restart the server on the same database: it records the work it missed."""
    db = f"sqlite:///{tmp_path / 'server.db'}"
    url = cluster.start_server("server", db)
    cluster.start_worker("worker", slots=2)
    cluster.driver()

    before = triple(multi_jobs_kwargs_list=[{"x": i} for i in range(5)])
    before.submit()
    assert before.wait_results(timeout=60) == [3 * i for i in range(5)]
    wait_for(lambda: _finished_jobs(url, before.internal_id) == 5, 30, "the live server to record the first work")

    cluster.sigkill("server")
    during = triple(multi_jobs_kwargs_list=[{"x": i} for i in range(20)])
    during.submit()
    assert during.wait_results(timeout=60) == [3 * i for i in range(20)], "jobs run and return without a server"

    url = cluster.start_server("server-again", db)
    wait_for(lambda: _finished_jobs(url, during.internal_id) == 20, 30,
             "the restarted server to record the 20 jobs that ran while it was down")
    work_record = httpx.get(f"{url}/api/works/{during.internal_id}", timeout=5).json()
    assert work_record["status"] == "finished", work_record
