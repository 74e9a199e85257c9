"""A driver killed mid-workflow and resumed over a broker: finished jobs are not run again, the rest run.

Every run records the results it received under each call's identity (``iworkflow.result_cache``);
``IWORKFLOW_RESUME=last`` makes the next run reuse those of exactly the same calls.  The embedded-runtime
version of this test is
``tests/test_result_cache.py::test_a_driver_killed_mid_run_and_resumed_runs_only_the_unfinished_jobs``.
"""
from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import BOTH, Cluster, wait_for

logger = logging.getLogger(__name__)

DRIVER = textwrap.dedent("""
    import os, sys, time
    from iworkflow import work, workflow

    LOG, GATE = sys.argv[1], sys.argv[2]

    @work(map_results=True)
    def step(x):
        while x >= 3 and not os.path.exists(GATE):  # the last three jobs wait for the test to open the gate
            time.sleep(0.05)
        with open(LOG, "a") as fh:
            fh.write(f"{x}\\n")
        return x * x

    @workflow(local=True)
    def driver():
        res = step(group_kwargs=[{"x": x} for x in range(6)])
        return sorted(res.get_all_results().values())

    if __name__ == "__main__":
        print(driver())
""")


def _ran(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def _cached(home: Path) -> int:
    path = home / "results.db"
    if not path.exists():
        return 0
    with sqlite3.connect(path, timeout=5) as db:
        try:
            return db.execute("SELECT count(*) FROM call_results").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cluster", BOTH, indirect=True)
def test_driver_killed_mid_workflow_resumed_skips_finished_jobs(cluster: Cluster, tmp_path: Path) -> None:
    """SIGKILL the driver once 3 of 6 results are recorded; the resumed run runs only the other 3."""
    log, gate, home = tmp_path / "ran.log", tmp_path / "gate", tmp_path / "home"
    script = tmp_path / "project" / "drv.py"  # its folder is the shipped source tree: nothing else is written there
    script.parent.mkdir()
    script.write_text(DRIVER)
    cluster.start_worker("worker", slots=4)
    env = {**cluster.env, "IWORKFLOW_HOME": str(home), "IWORKFLOW_EXECUTOR": "broker"}
    first = subprocess.Popen([sys.executable, str(script), str(log), str(gate)], env=env, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: _cached(home) >= 3, 60, "the driver to record the three ungated results")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert sorted(_ran(log)) == ["0", "1", "2"]

    gate.touch()  # the killed driver's gated jobs now finish on the worker, their results unclaimed
    wait_for(lambda: len(_ran(log)) == 6, 60, "the killed driver's queued jobs to drain")
    second = subprocess.run([sys.executable, str(script), str(log), str(gate)], env={**env, "IWORKFLOW_RESUME": "last"},
                            capture_output=True, text=True, timeout=90)
    assert second.returncode == 0, second.stderr[-4000:]
    assert second.stdout.strip() == "[0, 1, 4, 9, 16, 25]"
    assert sorted(_ran(log)[6:]) == ["3", "4", "5"], "the resumed run ran only the jobs whose results it lacked"
    assert "3 of 6 job results reused" in second.stderr, "the reuse is announced at WARNING level"
