"""The local process pool: slots, thread mode, and no job lost when a process dies."""
from __future__ import annotations

import os
import time

import pytest

import iworkflow
from iworkflow import JobLostError, Work, work
from fresh_code import check, two_runs


@work(map_results=True)
def maybe_die(x):
    if x == 3:
        os._exit(7)
    return x


@work
def pid_after(seconds):
    time.sleep(seconds)
    return os.getpid()


def test_a_job_that_kills_its_process_fails_with_the_exit_code_and_the_others_finish(embedded):
    res = maybe_die(group_kwargs=[{"x": i} for i in range(8)])
    assert list(res.get_all_results().values()) == [0, 1, 2, 4, 5, 6, 7]
    _, details = res.get_result(args={"x": 3}, with_details=True)
    assert "exited with code 7" in details["error"] and "JobLostError" in details["error"]
    assert res.get_result(args={"x": 3}) is None
    with pytest.raises(JobLostError):
        res.result(args={"x": 3})


def test_the_pool_replaces_a_dead_process_and_keeps_serving(embedded):
    maybe_die(group_kwargs=[{"x": 3}])
    assert maybe_die(group_kwargs=[{"x": 1}]).get_result(args={"x": 1}) == 1


@work(map_results=True)
def interval(seconds):
    start = time.time()
    time.sleep(seconds)
    return os.getpid(), start, time.time()


def test_slots_run_jobs_in_parallel_processes(embedded):
    res = interval(group_kwargs=[{"seconds": 0.6}, {"seconds": 0.61}])
    (pid_a, start_a, end_a), (pid_b, start_b, end_b) = res.get_all_results().values()
    assert pid_a != pid_b and os.getpid() not in (pid_a, pid_b)
    assert max(start_a, start_b) < min(end_a, end_b), "the two jobs ran one after the other, not side by side"


def test_thread_mode_runs_jobs_inside_the_driver_process(threaded):
    assert pid_after(0.0) == os.getpid()


def test_shutdown_ends_every_pending_job_with_a_failure(embedded):
    iworkflow.configure(executor="local", slots=1)
    w = Work(time.sleep, multi_jobs_kwargs_list=[[0.3]] + [[0.001 * i] for i in range(1, 20)], map_results=True)
    w.submit()
    executor = w.runtime.executor()
    executor.shutdown(wait=True)
    res = w.wait_results(timeout=30)
    assert len(res) == 20
    assert len(res.get_failures()) + len(res.get_all_results()) == 20
    assert len(res.get_failures()) >= 10


def test_a_long_lived_runner_process_serves_each_run_with_its_own_helper_module(tmp_path):
    """One runner process serves run 1, the helper module is edited, run 2 gets the new helper's values."""
    iworkflow.configure(broker="memory://", executor="local", slots=1)
    try:
        check(*two_runs(tmp_path / "project"))
    finally:
        iworkflow.shutdown()
