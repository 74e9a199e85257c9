"""The systems the benchmark suite compares, each behind the same four operations.

    python benchmarks/systems.py SYSTEM --sizes 1000 10000 --trips 200 --hpo --repeat 1

runs one system in this (fresh) process and prints one JSON document: fan-out seconds and driver RSS
growth per size, round-trip latencies, HPO iteration times.  ``run_all.py`` calls it once per system and
round so that every system is measured side by side on the same machine state.  Every iworkflow run
checks that each result came back at its own job's place.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

logger = logging.getLogger(__name__)

RABBITMQ = os.environ.get("BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
ACTIVEMQ = os.environ.get("BENCH_STOMP", "stomp://admin:admin@127.0.0.1:61613")
BIN = Path(sys.executable).parent
WORKERS = 2
#: run_all.py names a baseline checkout's rows with this suffix
LABEL = os.environ.get("BENCH_LABEL", "")
HPO_SLEEP = 0.010


def noop(i: int) -> int:
    return i


def sleep10(i: int) -> int:
    time.sleep(HPO_SLEEP)
    return i


class RssPeak:
    """Samples this process's RSS in a thread; ``growth`` is the peak minus the RSS at start (bytes)."""

    def __init__(self, interval: float = 0.01):
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.start_rss = self._proc.memory_info().rss
        self.peak = self.start_rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self) -> "RssPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.start_rss


def wait_ready(proc: subprocess.Popen, marker: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode(errors="replace")
        if marker in line:
            return
        if not line and proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode} before it was ready")
    raise RuntimeError(f"worker not ready after {timeout}s")


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class System:
    """One peer: ``fanout(n)`` and ``roundtrip(i)`` raise if a result is missing or misplaced."""

    name = ""

    def start(self) -> None: ...

    def close(self) -> None: ...

    def fanout(self, n: int, func: Callable[[int], int] = noop, timeout: float = 900.0) -> None:
        raise NotImplementedError

    def roundtrip(self, i: int) -> None:
        raise NotImplementedError


class IworkflowSystem(System):
    """iworkflow with the local executor (``broker=None``) or 2 ``iworkflow worker`` processes x 1 slot."""

    def __init__(self, name: str, broker: str | None, bundles: str = "auto"):
        self.name = name
        self.broker = broker
        self.bundles = bundles
        self.procs: list[subprocess.Popen] = []
        self.tasks: dict[Any, Any] = {}

    def start(self) -> None:
        import iworkflow

        os.environ.setdefault("IWORKFLOW_SECRET", uuid.uuid4().hex)
        os.environ.setdefault("IWORKFLOW_HOME", tempfile.mkdtemp(prefix="bench-iworkflow-"))
        if self.broker is None:
            iworkflow.configure(executor="local", slots=WORKERS)
        else:
            prefix = f"bench{uuid.uuid4().hex[:8]}."
            env = dict(os.environ, IWORKFLOW_DESTINATION_PREFIX=prefix, IWORKFLOW_BROKER=self.broker)
            self.procs = [subprocess.Popen([str(BIN / "iworkflow"), "worker", "--queue", "bench", "--slots", "1"],
                                           stdout=subprocess.PIPE, env=env)
                          for _ in range(WORKERS)]
            for p in self.procs:
                wait_ready(p, "ready")
            extra = {"bundles": self.bundles} if self.bundles != "auto" else {}  # older checkouts lack the setting
            iworkflow.configure(broker=self.broker, executor="broker", queue="bench", destination_prefix=prefix,
                                **extra)
        self.fanout(20)

    def _task(self, func):
        from iworkflow import work

        if func not in self.tasks:
            self.tasks[func] = work(func, return_work=True)
        return self.tasks[func]

    def fanout(self, n: int, func=noop, timeout: float = 900.0) -> None:
        work = self._task(func)(multi_jobs_kwargs_list=[{"i": i} for i in range(n)])
        work.submit()
        out = work.wait_results(timeout=timeout)
        if out != list(range(n)):
            raise AssertionError(f"{self.name}: results not keyed to their jobs")

    def roundtrip(self, i: int) -> None:
        call = self._task(noop)(i)
        call.submit()
        if call.wait_results(timeout=60) != i:
            raise AssertionError(f"{self.name}: wrong result")

    def close(self) -> None:
        import iworkflow

        stop(self.procs)
        if self.broker is not None:
            bus = iworkflow.get_runtime().bus
            for queue in ("jobs.bench", "jobs.bench.drivers", "dlq"):
                bus.delete_queue(queue)  # durable queues of this run's prefix would pile up on the broker
        iworkflow.shutdown()


class PoolSystem(System):
    """``concurrent.futures.ProcessPoolExecutor``: ``map`` (chunksize 1) and ``submit().result()``."""

    name = "ProcessPoolExecutor"

    def start(self) -> None:
        from concurrent.futures import ProcessPoolExecutor

        self.pool = ProcessPoolExecutor(WORKERS)
        list(self.pool.map(noop, range(WORKERS * 4)))

    def fanout(self, n: int, func=noop, timeout: float = 900.0) -> None:
        if list(self.pool.map(func, range(n), timeout=timeout)) != list(range(n)):
            raise AssertionError("PPE results out of place")

    def roundtrip(self, i: int) -> None:
        assert self.pool.submit(noop, i).result() == i

    def close(self) -> None:
        self.pool.shutdown()


CELERY_APP = '''
import os, time
from celery import Celery

app = Celery("bench", broker=os.environ["BENCH_CELERY_BROKER"], backend="rpc://")
app.conf.task_default_queue = os.environ["BENCH_CELERY_QUEUE"]
app.conf.worker_hijack_root_logger = False


@app.task
def noop(i):
    return i


@app.task
def sleep10(i):
    time.sleep(0.010)
    return i
'''


class CelerySystem(System):
    """Celery on the same RabbitMQ, rpc:// results, 2 prefork workers of concurrency 1."""

    name = "Celery (RabbitMQ)"

    def start(self) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="bench-celery-"))
        (workdir / "bench_celery_app.py").write_text(textwrap.dedent(CELERY_APP))
        queue = f"bench-celery-{uuid.uuid4().hex[:8]}"
        os.environ.update(BENCH_CELERY_BROKER=RABBITMQ, BENCH_CELERY_QUEUE=queue)
        self.queue = queue
        env = dict(os.environ, PYTHONPATH=f"{workdir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        sys.path.insert(0, str(workdir))
        logs = [workdir / f"worker{i}.log" for i in range(WORKERS)]
        self.procs = [subprocess.Popen([str(BIN / "celery"), "-A", "bench_celery_app", "worker", "--concurrency", "1",
                                        "--pool", "prefork", "-n", f"bench{i}@%h", "--loglevel", "INFO",
                                        "--without-gossip", "--without-mingle", "--without-heartbeat", "--logfile",
                                        str(logs[i])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                       cwd=workdir) for i in range(WORKERS)]
        deadline = time.monotonic() + 60
        while not all(log.exists() and "ready." in log.read_text() for log in logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"celery workers did not start; see {workdir}")
            time.sleep(0.2)
        import bench_celery_app

        self.app = bench_celery_app
        self.fanout(20)

    def fanout(self, n: int, func=noop, timeout: float = 900.0) -> None:
        from celery import group

        task = self.app.noop if func is noop else self.app.sleep10
        if group(task.s(i) for i in range(n))().get(timeout=timeout) != list(range(n)):
            raise AssertionError("celery results out of place")

    def roundtrip(self, i: int) -> None:
        assert self.app.noop.delay(i).get(timeout=60) == i

    def close(self) -> None:
        try:
            self.app.app.control.purge()
        finally:
            stop(self.procs)
            with self.app.app.connection_for_write() as conn:
                conn.default_channel.queue_delete(self.queue)  # durable: it would outlive the run


class DaskSystem(System):
    """Dask distributed LocalCluster: 2 single-threaded worker processes."""

    name = "Dask LocalCluster"

    def start(self) -> None:
        from distributed import Client, LocalCluster

        self.cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                                    dashboard_address=None, silence_logs=logging.ERROR)
        self.client = Client(self.cluster)
        self.fanout(20)

    def fanout(self, n: int, func=noop, timeout: float = 900.0) -> None:
        from distributed import wait

        futures = self.client.map(func, range(n), pure=False)
        wait(futures, timeout=timeout)
        if self.client.gather(futures) != list(range(n)):
            raise AssertionError("dask results out of place")

    def roundtrip(self, i: int) -> None:
        assert self.client.submit(noop, i, pure=False).result() == i

    def close(self) -> None:
        self.client.close()
        self.cluster.close()


class RaySystem(System):
    """Ray local instance with 2 CPUs."""

    name = "Ray local"

    def start(self) -> None:
        import ray

        ray.init(num_cpus=WORKERS, include_dashboard=False, configure_logging=False, log_to_driver=False)
        self.ray = ray
        self.remote = {noop: ray.remote(noop), sleep10: ray.remote(sleep10)}
        self.fanout(20)

    def fanout(self, n: int, func=noop, timeout: float = 900.0) -> None:
        f = self.remote[func]
        if self.ray.get([f.remote(i) for i in range(n)], timeout=timeout) != list(range(n)):
            raise AssertionError("ray results out of place")

    def roundtrip(self, i: int) -> None:
        assert self.ray.get(self.remote[noop].remote(i)) == i

    def close(self) -> None:
        self.ray.shutdown()


SYSTEMS: dict[str, Callable[[], System]] = {
    "iworkflow-local": lambda: IworkflowSystem("iworkflow local" + LABEL, None),
    "iworkflow-rabbitmq": lambda: IworkflowSystem("iworkflow RabbitMQ" + LABEL, RABBITMQ),
    "iworkflow-rabbitmq-single": lambda: IworkflowSystem("iworkflow RabbitMQ, bundles off" + LABEL, RABBITMQ,
                                                         bundles="off"),
    "iworkflow-activemq": lambda: IworkflowSystem("iworkflow ActiveMQ" + LABEL, ACTIVEMQ),
    "ppe": PoolSystem,
    "celery": CelerySystem,
    "dask": DaskSystem,
    "ray": RaySystem,
}


def measure(system: System, sizes: list[int], trips: int, hpo: bool, budget: float) -> dict[str, Any]:
    """Fan-out per size (skipping sizes projected past ``budget`` seconds), round trips, HPO loop."""
    out: dict[str, Any] = {"name": system.name, "fanout": {}, "skipped": [], "failed": [], "latency_ms": [],
                           "hpo_s": []}
    rate = None
    for n in sizes:
        if rate is not None and n / rate > budget:
            out["skipped"].append(n)
            continue
        with RssPeak() as rss:
            start = time.perf_counter()
            try:
                system.fanout(n, timeout=max(60.0, 3 * budget))
            except Exception as err:  # noqa: BLE001 - a peer failing at one size keeps the rest of its row
                logger.error("%s: %d-job fan-out failed: %s: %s", system.name, n, type(err).__name__, err)
                out["failed"].append(n)
                break
            elapsed = time.perf_counter() - start
        out["fanout"][str(n)] = {"seconds": elapsed, "rss_growth": rss.growth}
        rate = n / elapsed
    if out["failed"]:
        return out  # a peer that just failed may be wedged: its later numbers would not mean much
    for i in range(trips):
        start = time.perf_counter()
        system.roundtrip(i)
        out["latency_ms"].append((time.perf_counter() - start) * 1000)
    if hpo:
        for _ in range(10):
            start = time.perf_counter()
            system.fanout(20, sleep10)
            out["hpo_s"].append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=sorted(SYSTEMS))
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000])
    parser.add_argument("--trips", type=int, default=100)
    parser.add_argument("--hpo", action="store_true")
    parser.add_argument("--budget", type=float, default=60.0, help="skip a size projected to take longer (s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    system = SYSTEMS[args.system]()
    system.start()
    try:
        result = measure(system, args.sizes, args.trips, args.hpo, args.budget)
    finally:
        system.close()
    print("BENCH-JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
