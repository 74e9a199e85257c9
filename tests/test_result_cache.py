"""Reuse of results: nothing by default, an explicit resume of a crashed run, opt-in memoization (cache=True).

Each ``iworkflow.configure`` starts a new runtime, which is what a new driver process is: a new run.
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

import iworkflow
from iworkflow import Workflow, work, workflow
from iworkflow.errors import ConfigurationError


def _runtime(tmp_path, **settings):
    return iworkflow.configure(broker="memory://", executor="local", slots=2, home=str(tmp_path / "home"), **settings)


@pytest.fixture
def fresh(tmp_path):
    """Start a new run (a new driver process, as far as reuse goes) with these settings."""
    yield lambda **settings: _runtime(tmp_path, **settings)
    iworkflow.shutdown()


def _logged(path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _driver(log, cache=None):
    @work(map_results=True, cache=cache)
    def record(x, log=str(log)):
        with open(log, "a") as fh:
            fh.write(f"{x}\n")
        if x == 99:
            raise ValueError("never recorded")
        return x * 2

    @workflow(local=True)
    def driver(xs):
        return record(group_kwargs=[{"x": x} for x in xs])

    return driver


def test_a_plain_rerun_runs_every_job_again(fresh, tmp_path):
    log = tmp_path / "ran.log"
    driver = _driver(log)
    fresh()
    driver([1, 2])
    fresh()
    second = driver([1, 2])
    assert sorted(_logged(log)) == ["1", "1", "2", "2"]
    assert second.get_result(args={"x": 1}, with_details=True)[1]["cached"] is False


def test_cache_true_memoizes_across_runs_and_says_so(fresh, tmp_path, caplog):
    log = tmp_path / "ran.log"
    driver = _driver(log, cache=True)
    fresh()
    first = driver([1, 2, 3])
    fresh()
    with caplog.at_level(logging.WARNING, logger="iworkflow.work"):
        second = driver([1, 2, 3, 4])
    assert sorted(_logged(log)) == ["1", "2", "3", "4"]
    assert [second.get_result(args={"x": x}) for x in (1, 2, 3, 4)] == [2, 4, 6, 8]
    assert second.get_result(args={"x": 1}, with_details=True)[1]["cached"] is True
    assert second.get_result(args={"x": 4}, with_details=True)[1]["cached"] is False
    assert not first.get_result(args={"x": 1}, with_details=True)[1]["cached"]
    assert any("3 of 4 job results reused" in r.getMessage() and "cache=True" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)


def test_the_cache_setting_on_memoizes_every_work(fresh, tmp_path):
    log = tmp_path / "ran.log"
    driver = _driver(log)
    fresh(cache="on")
    driver([1])
    fresh(cache="on")
    assert driver([1]).get_result(args={"x": 1}, with_details=True)[1]["cached"] is True
    assert _logged(log) == ["1"]


def test_a_cache_setting_that_is_neither_on_nor_off_is_refused(fresh, tmp_path):
    fresh(cache="sometimes")
    with pytest.raises(ConfigurationError, match="must be 'on' or 'off'"):
        _driver(tmp_path / "ran.log")([1])


def test_failed_jobs_are_never_reused(fresh, tmp_path):
    log = tmp_path / "ran.log"
    driver = _driver(log, cache=True)
    fresh()
    driver([99])
    fresh(resume="last")
    driver([99])
    assert _logged(log) == ["99", "99"]


def _toys():
    @work
    def toy(n_obs):
        return random.random() + n_obs

    @workflow(local=True)
    def scan():
        return [toy(5) for _ in range(4)]

    return scan


def test_identical_calls_in_one_run_each_run(fresh):
    """A loop of identical calls to a random function (Monte-Carlo toys) gets a fresh value per call."""
    fresh()
    values = _toys()()
    assert len(set(values)) == 4


def test_a_resume_matches_identical_calls_one_to_one(fresh):
    """Resumed, each of the identical calls gets back its own earlier value: none is handed out twice."""
    scan = _toys()
    fresh()
    first = scan()
    fresh(resume="last")
    assert scan() == first and len(set(first)) == 4


def test_a_resume_reuses_only_calls_with_exactly_the_same_arguments(fresh, tmp_path):
    log = tmp_path / "ran.log"

    @work(map_results=True)
    def scaled(x, scale, log=str(log)):
        with open(log, "a") as fh:
            fh.write(f"{x}\n")
        return x * scale

    @workflow(local=True)
    def driver(scale):
        r = scaled(scale=scale, group_kwargs=[{"x": x} for x in (1, 2)])
        return [r.get_result(args={"x": x}) for x in (1, 2)]

    fresh()
    assert driver(10) == [10, 20]
    fresh(resume="last")
    assert driver(100) == [100, 200], "another common argument is another call: nothing reused"
    assert sorted(_logged(log)) == ["1", "1", "2", "2"]


def test_a_resume_that_matches_nothing_because_a_source_file_changed_says_why(fresh, tmp_path, caplog):
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("first")

    @work
    def inc(x):
        return x + 1

    def run():
        return Workflow(lambda: inc(1), source_dir=str(project)).run()

    fresh()
    run()
    (project / "notes.txt").write_text("second")  # e.g. a log the driver writes next to itself
    fresh(resume="last")
    with caplog.at_level(logging.WARNING, logger="iworkflow.work"):
        assert run() == 2
    assert any("none of its 1 calls matches" in r.getMessage() and "source folder" in r.getMessage()
               for r in caplog.records)


def test_resume_of_an_unknown_run_is_a_clear_error(fresh, tmp_path):
    fresh(resume="no-such-run")
    with pytest.raises(ConfigurationError, match="no such run"):
        _driver(tmp_path / "ran.log")([1])


def test_resume_last_without_an_earlier_run_runs_everything_and_says_so(fresh, tmp_path, caplog):
    log = tmp_path / "ran.log"
    fresh(resume="last")
    with caplog.at_level(logging.WARNING, logger="iworkflow.result_cache"):
        _driver(log)([1])
    assert _logged(log) == ["1"]
    assert any("no earlier run" in r.getMessage() for r in caplog.records)


def test_only_the_newest_runs_of_a_driver_keep_their_results(fresh, tmp_path):
    log = tmp_path / "ran.log"
    driver = _driver(log)
    for _ in range(3):
        fresh(resume_runs=2)
        driver([1])
    runtime = fresh(resume_runs=2)
    cache = runtime.result_cache
    rows = cache._db.execute("SELECT count(*), count(DISTINCT scope) FROM call_results").fetchone()
    assert rows == (2, 2)


def test_resume_runs_zero_records_nothing(fresh, tmp_path):
    log = tmp_path / "ran.log"
    fresh(resume_runs=0)
    _driver(log)([1])
    runtime = fresh(resume="last")
    assert runtime.result_cache._db.execute("SELECT count(*) FROM call_results").fetchone() == (0,)
    _driver(log)([1])
    assert _logged(log) == ["1", "1"]


# --- separate driver processes --------------------------------------------------------------------
SCRIPT = textwrap.dedent("""
    import os, sys, time
    from iworkflow import work, workflow

    LOG = sys.argv[1]

    @work(map_results=True)
    def step(x, offset):
        import helper
        while x >= 3 and os.environ.get("GATE") and not os.path.exists(os.environ["GATE"]):
            time.sleep(0.05)  # the first run's last three jobs wait for a gate that never opens
        with open(LOG, "a") as fh:
            fh.write(f"{x}\\n")
        return helper.scale() * x + offset

    @work
    def single(x, k):
        return x * k

    @workflow(local=True)
    def driver(offset):
        res = step(offset=offset, group_kwargs=[{"x": x} for x in range(6)])
        values = [res.get_result(args={"x": x}) for x in range(6)]
        return values, [single(i, 10) for i in range(4)]

    if __name__ == "__main__":
        print(driver(int(sys.argv[2])))
""")


def _project(tmp_path, scale=1):
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    (project / "drv.py").write_text(SCRIPT)
    (project / "helper.py").write_text(f"def scale():\n    return {scale}\n")
    return project


def _run(project, log, offset, **env):
    proc = subprocess.run([sys.executable, str(project / "drv.py"), str(log), str(offset)],
                          env={**os.environ, "IWORKFLOW_SLOTS": "2", **env}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _expected(scale, offset):
    return f"([{', '.join(str(scale * x + offset) for x in range(6))}], [0, 10, 20, 30])"


def test_a_rerun_after_editing_a_helper_module_gets_the_new_values(tmp_path):
    project, log = _project(tmp_path, scale=1), tmp_path / "ran.log"
    env = {"IWORKFLOW_HOME": str(tmp_path / "home")}
    assert _run(project, log, 0, **env).stdout.strip() == _expected(1, 0)
    (project / "helper.py").write_text("def scale():\n    return 7\n")
    assert _run(project, log, 0, **env).stdout.strip() == _expected(7, 0)


def test_reruns_with_other_arguments_each_get_their_own_values(tmp_path):
    project, log = _project(tmp_path), tmp_path / "ran.log"
    env = {"IWORKFLOW_HOME": str(tmp_path / "home")}
    assert _run(project, log, 100, **env).stdout.strip() == _expected(1, 100)
    assert _run(project, log, 200, **env).stdout.strip() == _expected(1, 200)


def _recorded(home) -> int:
    try:
        with sqlite3.connect(home / "results.db", timeout=5) as db:
            return db.execute("SELECT count(*) FROM call_results").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_a_driver_killed_mid_run_and_resumed_runs_only_the_unfinished_jobs(tmp_path):
    project, log, home = _project(tmp_path, scale=3), tmp_path / "ran.log", tmp_path / "home"
    env = {**os.environ, "IWORKFLOW_HOME": str(home), "IWORKFLOW_SLOTS": "4", "GATE": str(tmp_path / "gate")}
    first = subprocess.Popen([sys.executable, str(project / "drv.py"), str(log), "5"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while _recorded(home) < 3:
            assert time.monotonic() < deadline and first.poll() is None, "the first run did not record 3 results"
            time.sleep(0.05)
    finally:  # the driver and its runner processes (in their own sessions), mid-job in jobs 3-5
        victims = [first.pid, *(p.pid for p in psutil.Process(first.pid).children(recursive=True))]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        first.wait()
    assert sorted(_logged(log)) == ["0", "1", "2"]
    resumed = _run(project, log, 5, IWORKFLOW_HOME=str(home), IWORKFLOW_RESUME="last")
    assert resumed.stdout.strip() == _expected(3, 5)
    assert sorted(_logged(log)[3:]) == ["3", "4", "5"], "only the unfinished jobs ran again"
    assert "3 of 6 job results reused" in resumed.stderr
    plain = _run(project, log, 5, IWORKFLOW_HOME=str(home))
    assert plain.stdout.strip() == _expected(3, 5)
    assert sorted(_logged(log)[6:]) == ["0", "1", "2", "3", "4", "5"], "a plain re-run runs everything"
