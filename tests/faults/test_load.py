"""Load: many jobs through four ``iworkflow worker`` processes with nothing lost and nothing duplicated, and
the driver's memory for a large pending fan-out.

CI runs ``IWORKFLOW_LOAD_JOBS`` jobs per broker (default 4,000: the full 20,000 does not fit the suite's
time budget on two shared cores); set ``IWORKFLOW_LOAD_JOBS=20000`` for the full size.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from iworkflow import work

from .conftest import BOTH, RABBIT, Cluster

logger = logging.getLogger(__name__)

N_JOBS = int(os.environ.get("IWORKFLOW_LOAD_JOBS", "4000"))
PENDING_JOBS = int(os.environ.get("IWORKFLOW_PENDING_JOBS", "100000"))
PENDING_RSS_LIMIT_MIB = 1024


@work(map_results=True, return_work=True)
def echo(x: int) -> int:
    """The cheapest job: the load is the system's, not the function's."""
    return x


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("cluster", BOTH, indirect=True)
def test_load_four_workers_lose_and_duplicate_nothing(cluster: Cluster) -> None:
    """``N_JOBS`` jobs through 4 worker processes: every key ends exactly once with its own value."""
    for i in range(4):
        cluster.start_worker(f"worker{i}", slots=1)
    cluster.driver(result_timeout=0)
    w = echo(multi_jobs_kwargs_list=[{"x": i} for i in range(N_JOBS)])
    start = time.monotonic()
    w.submit()
    results = w.wait_results(timeout=280)
    elapsed = time.monotonic() - start
    result = w.init_async_result()
    outcomes = result.outcomes
    logger.warning("load %s: %d jobs through 4 workers in %.1fs (%.0f jobs/s), %d duplicate deliveries",
                   cluster.kind, N_JOBS, elapsed, N_JOBS / elapsed, result.duplicates)
    assert len(outcomes) == N_JOBS and set(outcomes) == set(w.job_keys), "every job ended"
    assert all(o.ok for o in outcomes.values())
    assert [results.get_result(args={"x": i}) for i in range(N_JOBS)] == list(range(N_JOBS)), "each key its value"
    assert result.duplicates == 0, "no result reached the driver twice"


PENDING_DRIVER = textwrap.dedent("""
    import json, sys, time
    import psutil
    import iworkflow
    from iworkflow import work

    @work(map_results=True, return_work=True)
    def echo(x):
        return x

    n = int(sys.argv[1])
    iworkflow.configure(executor="broker")
    before = psutil.Process().memory_info().rss
    w = echo(multi_jobs_kwargs_list=[{"x": i} for i in range(n)])
    start = time.monotonic()
    w.submit()
    submitted = time.monotonic() - start
    after = psutil.Process().memory_info().rss
    print(json.dumps({"rss_before_mib": before / 2**20, "rss_after_mib": after / 2**20,
                      "submit_seconds": submitted}))
""")


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("cluster", RABBIT, indirect=True)
def test_driver_memory_for_a_pending_hundred_thousand_job_fan_out_stays_bounded(cluster: Cluster,
                                                                               tmp_path: Path) -> None:
    """A driver that has published 100,000 jobs nobody runs yet holds them in a bounded, measured RSS."""
    script = tmp_path / "pending.py"
    script.write_text(PENDING_DRIVER)
    proc = subprocess.run([sys.executable, str(script), str(PENDING_JOBS)], env=cluster.env, capture_output=True,
                          text=True, timeout=220)
    assert proc.returncode == 0, proc.stderr[-4000:]
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    logger.warning("pending fan-out of %d jobs: %s", PENDING_JOBS, measured)
    assert measured["rss_after_mib"] < PENDING_RSS_LIMIT_MIB, measured
