"""Ray executor specifics: num_cpus/memory mapping, infeasible requests, crashed workers, bad specs."""
from __future__ import annotations

import os
import time

import pytest
from iworkflow.executors import create_executor

import iworkflow
from iworkflow import work
from iworkflow.errors import ConfigurationError


@pytest.fixture
def on_ray(ray_session):
    iworkflow.configure(broker="memory://", executor="ray")
    yield
    iworkflow.shutdown()


def nap_for(core_count: int):
    @work(map_results=True, core_count=core_count, total_memory=100, name=f"nap{core_count}")
    def nap(i: int) -> tuple[float, float]:
        start = time.time()
        time.sleep(0.8)
        return start, time.time()

    return nap


def overlapping(results) -> bool:
    (a0, a1), (b0, b1) = results.get_all_results().values()
    return a0 < b1 and b0 < a1


def test_num_cpus_follows_core_count(on_ray):
    assert overlapping(nap_for(1)(multi_jobs_kwargs_list=[{"i": 0}, {"i": 1}])), "1-CPU jobs did not share 2 CPUs"
    assert not overlapping(nap_for(2)(multi_jobs_kwargs_list=[{"i": 0}, {"i": 1}])), "2-CPU jobs ran at once on 2 CPUs"


@work(map_results=True, total_memory=10**9)
def huge(i: int) -> int:
    return i


def test_an_infeasible_request_fails_clearly(on_ray):
    _value, details = huge(multi_jobs_kwargs_list=[{"i": 0}]).get_result(args={"i": 0}, with_details=True)
    assert details["status"] == "failed"
    assert "asks Ray for memory=" in details["error"] and "largest node offers memory=" in details["error"]


@work(map_results=True, total_memory=100)
def crash(i: int) -> int:
    os._exit(3)


def test_a_crashed_worker_becomes_a_failure_result(on_ray):
    _value, details = crash(multi_jobs_kwargs_list=[{"i": 0}]).get_result(args={"i": 0}, with_details=True)
    assert details["status"] == "failed"
    assert "ray could not run job" in details["error"] and "WorkerCrashedError" in details["error"]


def test_unknown_option_is_named(ray_session):
    runtime = iworkflow.configure(broker="memory://")
    with pytest.raises(ConfigurationError, match=r"unknown option 'gpus'.*known options: num_cpus"):
        create_executor("ray://?gpus=1", runtime.settings, runtime.bus)
    iworkflow.shutdown()


def test_a_ray_worker_on_another_machine_runs_each_run_with_its_own_helper_module(on_ray, tmp_path):
    """The tree (hidden from the Ray node) reaches it through Ray's object store, once per version."""
    from fresh_code import check, two_runs

    check(*two_runs(tmp_path / "project"))


@work
def blob_of(n):
    return os.urandom(n)


def test_a_large_result_from_a_ray_worker_on_another_machine_reaches_the_driver(on_ray):
    assert len(blob_of(3 * 2**20)) == 3 * 2**20
