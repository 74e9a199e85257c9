"""Artifacts saved by jobs on a Dask cluster's worker processes, loaded back in the driver with their lineage."""
from __future__ import annotations

import logging
import os

import pytest

distributed = pytest.importorskip("distributed")

import iworkflow
from iworkflow import artifacts, get_unique_id_for_dict, work


@pytest.fixture
def dask_spec():
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None,
                                       silence_logs=logging.ERROR)
    spec = f"dask://{cluster.scheduler_address}?send_secret=1"
    iworkflow.configure(broker="memory://", executor=spec)
    yield spec
    iworkflow.shutdown()
    cluster.close()


@work(map_results=True)
def fit(seed):
    return artifacts.save("dask-model", {"seed": seed}, metadata={"seed": seed}).version, os.getpid()


def test_a_job_on_a_dask_worker_saves_and_the_driver_loads_it_with_the_workers_lineage(dask_spec):
    results = fit(multi_jobs_kwargs_list=[{"seed": s} for s in range(2)])
    for seed in range(2):
        version, pid = results.get_result(args={"seed": seed})
        assert pid != os.getpid(), "the job ran in a Dask worker process"
        assert artifacts.load("dask-model", version) == {"seed": seed}
        lin = artifacts.lineage("dask-model", version)
        assert (lin.executor, lin.job_key, lin.work_id) == (dask_spec, get_unique_id_for_dict({"seed": seed}),
                                                            results._work_id)
        assert lin.worker.endswith(f":{pid}") and len(lin.call_identity) == 64
