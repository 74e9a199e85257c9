"""Slurm executor specifics, against a real single-node Slurm (.ci/slurm.sh): resources, init_env,
crashed jobs, cancellation with scancel, unreachable controller and unknown partition."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from iworkflow.executors import create_executor

import iworkflow
from iworkflow import work
from iworkflow.errors import ConfigurationError

pytestmark = pytest.mark.usefixtures("slurm_cluster")


@pytest.fixture
def on_slurm(request):
    iworkflow.configure(broker="memory://", executor=getattr(request, "param", "slurm"))
    yield
    iworkflow.shutdown()


@work(map_results=True, core_count=2, total_memory=300, init_env="IW_MARK=from-init-env")
def where(i: int) -> dict:
    return {name: os.environ.get(name) for name in
            ("SLURM_CPUS_PER_TASK", "SLURM_MEM_PER_NODE", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "IW_MARK")}


def test_jobs_run_as_array_tasks_with_their_resources_and_init_env(on_slurm):
    results = where(multi_jobs_kwargs_list=[{"i": 0}, {"i": 1}, {"i": 2}])
    seen = [results.get_result(args={"i": i}) for i in range(3)]
    assert {s["SLURM_CPUS_PER_TASK"] for s in seen} == {"2"}
    assert {s["SLURM_MEM_PER_NODE"] for s in seen} == {"300"}
    assert {s["IW_MARK"] for s in seen} == {"from-init-env"}
    assert len({s["SLURM_ARRAY_JOB_ID"] for s in seen}) == 1, "one array job for the fan-out"
    assert sorted(s["SLURM_ARRAY_TASK_ID"] for s in seen) == ["0", "1", "2"]


@work(map_results=True, total_memory=100)
def crash(i: int) -> int:
    print(f"job {i} is about to kill its interpreter", file=sys.stderr, flush=True)
    os._exit(3)


@pytest.mark.parametrize("on_slurm", ["slurm://?grace=1"], indirect=True)
def test_a_job_that_dies_fails_with_its_log(on_slurm):
    _value, details = crash(multi_jobs_kwargs_list=[{"i": 5}]).get_result(args={"i": 5}, with_details=True)
    assert details["status"] == "failed"
    assert "JobLostError" in details["error"] and "ended FAILED (NonZeroExitCode) without a result" in details["error"]
    assert "job 5 is about to kill its interpreter" in details["error"]


@work(map_results=True, total_memory=100, return_work=True)
def never(i: int) -> int:
    return i


@pytest.mark.parametrize("on_slurm", ["slurm://?sbatch_args=--hold"], indirect=True)
def test_cancel_scancels_the_pending_tasks(on_slurm):
    w = never(multi_jobs_kwargs_list=[{"i": i} for i in range(4)])
    w.submit()
    assert w.cancel() == 4
    results = w.wait_results(timeout=60)
    for i in range(4):
        _value, details = results.get_result(args={"i": i}, with_details=True)
        assert details["status"] == "failed" and "WorkCancelled" in details["error"]
    name = f"iw-{w.internal_id[:8]}"
    deadline = time.monotonic() + 30
    while True:
        states = subprocess.run(["squeue", "--noheader", "--array", "--states=all", f"--name={name}",
                                 "--format=%T"], capture_output=True, text=True, check=True).stdout.split()
        if (states and set(states) == {"CANCELLED"}) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # Slurm lists the cancelled tasks one by one, or as the array record once every task is cancelled
    assert states in (["CANCELLED"] * 4, ["CANCELLED"])


def test_unknown_partition_and_unreachable_controller_are_named(tmp_path, monkeypatch):
    runtime = iworkflow.configure(broker="memory://")
    with pytest.raises(ConfigurationError, match=r"Slurm partition 'nosuch' does not exist; sinfo lists \w+"):
        create_executor("slurm://nosuch", runtime.settings, runtime.bus)
    conf = tmp_path / "slurm.conf"
    conf.write_text(Path("/etc/slurm/slurm.conf").read_text().replace("SlurmctldPort=6817", "SlurmctldPort=9"))
    monkeypatch.setenv("SLURM_CONF", str(conf))
    with pytest.raises(ConfigurationError, match=r"`sinfo --noheader --format=%P` failed .*Unable to contact slurm"):
        create_executor("slurm", runtime.settings, runtime.bus)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigurationError, match=r"`sinfo` is not on PATH"):
        create_executor("slurm", runtime.settings, runtime.bus)
    iworkflow.shutdown()
