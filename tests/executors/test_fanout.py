"""One workflow on every executor: a fan-out of 100 jobs, one failing, gathered with ``map_results``."""
from __future__ import annotations

import importlib.util
import os
import queue as queue_module
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
from broker_cleanup import run_prefix

import iworkflow
from iworkflow import get_unique_id_for_dict, work, workflow
from iworkflow.asyncresult import MapResult

N_JOBS = 100
FAILING = 37
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
DRIVER = f"{socket.gethostname()}:{os.getpid()}"


@work(map_results=True, total_memory=200)
def square(x: int) -> int:
    if x == FAILING:
        raise ValueError(f"job {x} fails on purpose")
    return x * x


@workflow(local=True)
def fan_out(n: int) -> MapResult:
    return square(multi_jobs_kwargs_list=[{"x": i} for i in range(n)])


def _broker_workers(queue: str, prefix: str, timeout: float = 60.0) -> list[subprocess.Popen]:
    """Start two ``iworkflow worker`` processes and wait until each says it is ready."""
    cli = shutil.which("iworkflow", path=os.path.dirname(sys.executable)) or "iworkflow"
    env = dict(os.environ, IWORKFLOW_DESTINATION_PREFIX=prefix, IWORKFLOW_BROKER=RABBITMQ_URL)  # not in `ps`
    procs = [subprocess.Popen([cli, "worker", "--queue", queue, "--slots", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for _ in range(2)]
    for proc in procs:
        lines: queue_module.SimpleQueue = queue_module.SimpleQueue()
        threading.Thread(target=lambda p=proc, q=lines: [q.put(line) for line in p.stdout], daemon=True).start()
        seen, deadline = [], time.monotonic() + timeout
        while not any("ready" in line for line in seen):
            try:
                seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue_module.Empty:
                _stop(procs)
                pytest.fail(f"iworkflow worker not ready after {timeout}s; it printed:\n{''.join(seen)}")
    return procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


EXECUTORS = [
    pytest.param("local", id="local"),
    pytest.param("thread", id="thread"),
    pytest.param("dask", id="dask"),
    pytest.param("ray", id="ray"),
    pytest.param("slurm", id="slurm"),
    pytest.param("broker", id="broker", marks=pytest.mark.rabbitmq),
]


@pytest.fixture
def runtime_on(request):
    """Configure the runtime for one executor (and start what it needs); yields the executor name."""
    name = request.param
    procs: list[subprocess.Popen] = []
    overrides = {"broker": "memory://", "executor": name, "slots": 2}
    if name == "dask":
        pytest.importorskip("distributed")
    elif name == "ray":
        request.getfixturevalue("ray_session")
    elif name == "slurm":
        request.getfixturevalue("slurm_cluster")
    elif name == "broker":
        if importlib.util.find_spec("iworkflow.executors.broker") is None:
            pytest.skip("iworkflow.executors.broker is not written yet")
        queue, prefix = "fanout", run_prefix("t")
        procs = _broker_workers(queue, prefix)
        overrides.update(broker=RABBITMQ_URL, queue=queue, destination_prefix=prefix)
    iworkflow.configure(**overrides)
    yield name
    iworkflow.shutdown()
    _stop(procs)


@pytest.mark.slow
@pytest.mark.parametrize("runtime_on", EXECUTORS, indirect=True)
def test_fan_out_with_one_failure(runtime_on):
    start = time.monotonic()
    results = fan_out(N_JOBS)
    elapsed = time.monotonic() - start

    assert isinstance(results, MapResult)
    assert len(results) == N_JOBS
    for i in range(N_JOBS):
        key = get_unique_id_for_dict({"x": i})
        if i == FAILING:
            continue
        assert results.get_result(args={"x": i}) == i * i
        assert results.get_result(key=key) == i * i
        value, details = results.get_result(args={"x": i}, with_details=True)
        assert details["status"] == "finished" and details["error"] is None
        if runtime_on != "thread":
            assert details["metrics"]["worker"] != DRIVER, "the job ran in the driver process"

    value, details = results.get_result(args={"x": FAILING}, with_details=True)
    assert value is None
    assert details["status"] == "failed"
    assert details["error"] == f"builtins.ValueError: job {FAILING} fails on purpose"
    assert "in square" in details["traceback"] and "fails on purpose" in details["traceback"]
    assert results.get_result(args={"x": FAILING}) is None
    with pytest.raises(ValueError, match="fails on purpose"):
        results.result(args={"x": FAILING})
    assert not results.has_result(args={"x": FAILING})
    assert list(results.get_failures()) == [get_unique_id_for_dict({"x": FAILING})]
    assert sorted(results.get_all_results().values()) == sorted(i * i for i in range(N_JOBS) if i != FAILING)
    print(f"{runtime_on}: {N_JOBS} jobs in {elapsed:.1f}s")
