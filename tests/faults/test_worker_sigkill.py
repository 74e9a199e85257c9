"""A worker SIGKILLed mid-job: its jobs complete on another worker, and the caller sees each job end once."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from iworkflow import work

from .conftest import BOTH, Cluster, wait_for

logger = logging.getLogger(__name__)

N_JOBS = 24


@work(map_results=True, return_work=True)
def logged_nap(x: int, log: str) -> tuple[int, int]:
    """Append ``start``/``end`` lines naming the worker (the runner's parent), nap, return ``(x, worker pid)``."""
    import time as _time

    with open(log, "a") as fh:
        fh.write(f"start {x} {os.getppid()} {_time.time()}\n")
    _time.sleep(0.8)
    with open(log, "a") as fh:
        fh.write(f"end {x} {os.getppid()} {_time.time()}\n")
    return x, os.getppid()


def _lines(log: Path, what: str, pid: int, before: float = float("inf")) -> set[int]:
    """Jobs with a ``what`` line written by worker ``pid`` before the time ``before``."""
    if not log.exists():
        return set()
    return {int(x) for kind, x, p, t in (line.split() for line in log.read_text().splitlines())
            if kind == what and int(p) == pid and float(t) < before}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cluster", BOTH, indirect=True)
def test_sigkilled_worker_jobs_complete_on_another_worker_each_once(cluster: Cluster, tmp_path: Path) -> None:
    """SIGKILL a worker holding running jobs: they run again on the survivor; one outcome per job key."""
    log = tmp_path / "jobs.log"
    victim = cluster.start_worker("victim", slots=2)
    survivor = cluster.start_worker("survivor", slots=2)
    cluster.driver()
    w = logged_nap(multi_jobs_kwargs_list=[{"x": i, "log": str(log)} for i in range(N_JOBS)])
    w.submit()
    wait_for(lambda: _lines(log, "start", victim.pid) - _lines(log, "end", victim.pid), 60,
                           "a job running on the victim worker")
    killed_at = time.time()
    cluster.sigkill("victim")
    interrupted = _lines(log, "start", victim.pid, killed_at) - _lines(log, "end", victim.pid, killed_at)
    assert interrupted, "the victim was killed while it ran a job"
    results = w.wait_results(timeout=90)
    outcome = w.init_async_result()

    assert sorted(outcome.outcomes) == sorted(w.job_keys), "every job ended exactly once for the caller"
    values = [results.get_result(args={"x": i, "log": str(log)}) for i in range(N_JOBS)]
    assert [v[0] for v in values] == list(range(N_JOBS))
    for x in interrupted:
        assert values[x][1] == survivor.pid, f"job {x} was interrupted on the victim and finished on the survivor"
    logger.warning("%s: jobs %s interrupted by SIGKILL reran on the survivor; %d duplicate result(s) dropped",
                   cluster.kind, sorted(interrupted), outcome.duplicates)
