"""The result cache: a re-run driver reuses finished jobs' results instead of running them again."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import iworkflow
from iworkflow import work, workflow
from iworkflow.result_cache import code_hash


@pytest.fixture
def cached_runtime(tmp_path):
    runtime = iworkflow.configure(broker="memory://", executor="local", slots=2, cache="on", home=str(tmp_path))
    yield runtime
    iworkflow.shutdown()


def _logged(path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _driver(log, cache=None):
    @work(map_results=True, cache=cache)
    def record(x, log=str(log)):
        with open(log, "a") as fh:
            fh.write(f"{x}\n")
        if x == 99:
            raise ValueError("never cached")
        return x * 2

    @workflow(local=True)
    def driver(xs):
        return record(group_kwargs=[{"x": x} for x in xs])

    return driver


def test_a_rerun_driver_reuses_finished_results_without_running_them(cached_runtime, tmp_path):
    log = tmp_path / "ran.log"
    driver = _driver(log)
    first = driver([1, 2, 3])
    second = driver([1, 2, 3, 4])
    assert sorted(_logged(log)) == ["1", "2", "3", "4"]
    assert [second.get_result(args={"x": x}) for x in (1, 2, 3, 4)] == [2, 4, 6, 8]
    assert second.get_result(args={"x": 1}, with_details=True)[1]["cached"] is True
    assert second.get_result(args={"x": 4}, with_details=True)[1]["cached"] is False
    assert not first.get_result(args={"x": 1}, with_details=True)[1]["cached"]


def test_cache_false_runs_every_job_again(cached_runtime, tmp_path):
    log = tmp_path / "ran.log"
    driver = _driver(log, cache=False)
    driver([1, 2])
    driver([1, 2])
    assert sorted(_logged(log)) == ["1", "1", "2", "2"]


def test_failed_jobs_are_never_cached(cached_runtime, tmp_path):
    log = tmp_path / "ran.log"
    driver = _driver(log)
    driver([99])
    driver([99])
    assert _logged(log) == ["99", "99"]


def test_changed_function_code_has_a_different_hash():
    def f(x):
        return x + 1

    def g(x):
        return x + 2

    assert code_hash(f) != code_hash(g) and code_hash(f) == code_hash(f)


def test_work_called_outside_a_workflow_is_not_cached(cached_runtime, tmp_path):
    log = tmp_path / "ran.log"

    @work
    def once(x, log=str(log)):
        with open(log, "a") as fh:
            fh.write(f"{x}\n")
        return x

    once(5)
    once(5)
    assert _logged(log) == ["5", "5"]


SCRIPT = textwrap.dedent("""
    import os, sys, time
    from iworkflow import work, workflow

    LOG = sys.argv[1]

    @work(map_results=True)
    def step(x):
        if x >= 3:
            time.sleep(float(os.environ.get("SLOW", "0")))
        with open(LOG, "a") as fh:
            fh.write(f"{x}\\n")
        return x * x

    @workflow(local=True)
    def driver():
        res = step(group_kwargs=[{"x": x} for x in range(6)])
        return sorted(res.get_dict_results().values())

    if __name__ == "__main__":
        print(driver())
""")


def test_a_driver_killed_mid_workflow_and_rerun_runs_only_the_unfinished_jobs(tmp_path):
    script, log = tmp_path / "drv.py", tmp_path / "ran.log"
    script.write_text(SCRIPT)
    env = {**os.environ, "IWORKFLOW_HOME": str(tmp_path / "home"), "IWORKFLOW_CACHE": "on",
           "IWORKFLOW_SLOTS": "4"}
    first = subprocess.Popen([sys.executable, str(script), str(log)], env={**env, "SLOW": "4"},
                             start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(_logged(log)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # give the cache its flush interval
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert sorted(_logged(log)) == ["0", "1", "2"]
    time.sleep(4.5)  # the killed driver's runner processes finish their sleeping jobs and exit
    done_before = _logged(log)
    second = subprocess.run([sys.executable, str(script), str(log)], env={**env, "SLOW": "0"},
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "[0, 1, 4, 9, 16, 25]"
    assert sorted(_logged(log)[len(done_before):]) == ["3", "4", "5"]
