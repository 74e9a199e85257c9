"""Dask executor specifics: the secret on workers, resource mapping, lost workers, bad specs."""
from __future__ import annotations

import logging
import os
import time

import pytest

distributed = pytest.importorskip("distributed")

import dask
from fresh_code import check, two_runs
from iworkflow.executors import create_executor

import iworkflow
from iworkflow import work
from iworkflow.errors import ConfigurationError


@pytest.fixture
def cluster():
    """A Dask cluster of our own: one worker, two threads, CPU=2 and 1 GiB MEMORY, no IWORKFLOW_SECRET."""
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None,
            resources={"CPU": 2, "MEMORY": 2**30}, env={"IWORKFLOW_SECRET": ""}, silence_logs=logging.ERROR)
    yield cluster
    iworkflow.shutdown()
    cluster.close()


def use(spec: str) -> None:
    iworkflow.configure(broker="memory://", executor=spec)


@work(map_results=True, core_count=2, total_memory=100)
def nap(i: int) -> tuple[float, float]:
    start = time.time()
    time.sleep(0.6)
    return start, time.time()


def overlapping(results) -> bool:
    (a0, a1), (b0, b1) = results.get_all_results().values()
    return a0 < b1 and b0 < a1


def test_workers_without_the_secret_fail_with_a_clear_error(cluster):
    use(f"dask://{cluster.scheduler_address}")
    results = nap(multi_jobs_kwargs_list=[{"i": 0}])
    _value, details = results.get_result(args={"i": 0}, with_details=True)
    assert details["status"] == "failed"
    assert "IWORKFLOW_SECRET is not set on worker" in details["error"]


def test_resources_are_requested_where_the_workers_declare_them(cluster):
    use(f"dask://{cluster.scheduler_address}?send_secret=1")
    results = nap(multi_jobs_kwargs_list=[{"i": 0}, {"i": 1}])
    assert len(results.get_all_results()) == 2
    assert not overlapping(results), "two CPU=2 jobs ran at once on a CPU=2 worker"



def test_without_declared_resources_each_job_takes_one_slot(cluster):
    use(f"dask://{cluster.scheduler_address}?send_secret=1&cpu_resource=cores&memory_resource=ram")
    results = nap(multi_jobs_kwargs_list=[{"i": 0}, {"i": 1}])
    assert overlapping(results), "jobs waited for a resource the workers do not declare"


@work(map_results=True, core_count=4, total_memory=100)
def wide(i: int) -> int:
    return i


def test_a_job_larger_than_any_worker_fails_clearly(cluster):
    use(f"dask://{cluster.scheduler_address}?send_secret=1")
    _value, details = wide(multi_jobs_kwargs_list=[{"i": 0}]).get_result(args={"i": 0}, with_details=True)
    assert details["status"] == "failed"
    assert "needs Dask resource CPU=4 but the largest worker declares CPU=2" in details["error"]


@work(map_results=True, total_memory=100)
def crash(i: int) -> int:
    os._exit(3)


def test_a_lost_worker_becomes_a_failure_result(cluster):
    use(f"dask://{cluster.scheduler_address}?send_secret=1")
    _value, details = crash(multi_jobs_kwargs_list=[{"i": 0}]).get_result(args={"i": 0}, with_details=True)
    assert details["status"] == "failed"
    assert "JobLostError" in details["error"] and "dask could not run job" in details["error"]
    assert "KilledWorker" in details["error"]


def test_bad_specs_are_named():
    settings = iworkflow.configure(broker="memory://").settings
    runtime = iworkflow.runtime.get_runtime()
    with pytest.raises(ConfigurationError, match=r"unknown option 'colour'.*known options: workers"):
        create_executor("dask://?colour=red", settings, runtime.bus)
    with pytest.raises(ConfigurationError, match=r"cannot reach the Dask scheduler at '127.0.0.1:9'"):
        create_executor("dask://127.0.0.1:9?timeout=1", settings, runtime.bus)
    iworkflow.shutdown()


def test_a_long_lived_dask_worker_serves_each_run_with_its_own_helper_module(tmp_path):
    """The same Dask worker serves run 1, the helper module is edited, run 2 gets the new helper's values."""
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                       env={"IWORKFLOW_SECRET": os.environ["IWORKFLOW_SECRET"]},
                                       silence_logs=logging.ERROR)
    try:
        use(f"dask://{cluster.scheduler_address}")
        check(*two_runs(tmp_path / "project"))
    finally:
        iworkflow.shutdown()
        cluster.close()


@pytest.fixture
def other_machine_cluster(tmp_path):
    """A Dask scheduler here and one `dask worker` as another machine (its own mount namespace, home and temp
    dir; the driver's files hidden): it shares nothing with the driver but the scheduler."""
    import socket
    import subprocess
    import sys

    from other_machine import OtherMachine

    machine = OtherMachine(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dask_cli = os.path.join(os.path.dirname(sys.executable), "dask")
    address = f"tcp://127.0.0.1:{port}"
    log = open(tmp_path.parent / f"{tmp_path.name}-dask.log", "wb")
    scheduler = subprocess.Popen([dask_cli, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--no-dashboard"], stdout=log, stderr=log)
    worker = machine.popen([dask_cli, "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                            "--name", "other-machine"], dict(os.environ), stdout=log, stderr=log)
    try:
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=120)
        yield address
    finally:
        iworkflow.shutdown()
        for proc in (worker, scheduler):
            proc.terminate()
        for proc in (worker, scheduler):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        machine.cleanup()


def test_a_dask_worker_on_another_machine_runs_each_run_with_its_own_helper_module(other_machine_cluster, tmp_path):
    """The tree (hidden from the worker) reaches it as a scattered task input, once per version."""
    use(f"dask://{other_machine_cluster}")
    check(*two_runs(tmp_path / "project"))


@work
def blob_of(n):
    return os.urandom(n)


def test_a_large_result_from_a_dask_worker_on_another_machine_reaches_the_driver(other_machine_cluster):
    use(f"dask://{other_machine_cluster}")
    assert len(blob_of(3 * 2**20)) == 3 * 2**20
