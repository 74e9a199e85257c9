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
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
BIN = Path(sys.executable).parent
WORKERS = 2
#: run_all.py names a baseline checkout's rows with this suffix
LABEL = os.environ.get("BENCH_LABEL", "")


def noop(i: int) -> int:
    return i


def sleep10(i: int) -> int:
    import time as clock  # Parsl ships this function by value: its module globals do not travel with it

    clock.sleep(0.010)
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


def delete_exchanges(prefix: str) -> None:
    """Delete the RabbitMQ exchanges under this run's own prefix: iworkflow's three fanouts by name (no listing
    needed, so a slow ``rabbitmqctl`` on a loaded machine cannot leave them behind), plus any other it lists."""
    import pika

    names = {prefix + name for name in ("events", "holders", "control")}
    try:
        out = subprocess.run(["rabbitmqctl", "-q", "list_exchanges", "name", "--no-table-headers"],
                             capture_output=True, text=True, timeout=60).stdout
        names.update(n.strip() for n in out.splitlines() if n.strip().startswith(prefix))
    except (OSError, subprocess.TimeoutExpired):
        pass
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ))
    try:
        channel = connection.channel()
        for name in sorted(names):
            try:
                channel.exchange_delete(exchange=name)
            except pika.exceptions.ChannelClosed:  # a broker that refuses deleting an absent exchange
                channel = connection.channel()
    finally:
        connection.close()


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
            prefix = self.prefix = f"bench{uuid.uuid4().hex[:8]}."
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
        if self.broker is not None and self.broker.startswith("amqp"):
            delete_exchanges(self.prefix)




class PoolSystem(System):
    """``concurrent.futures.ProcessPoolExecutor``: ``map`` and ``submit().result()``.

    ``chunksize=None`` is the tuned map an expert writes: ``n // (8 * workers)`` jobs per chunk (8 chunks per
    worker, so the tail stays balanced), at least 1."""

    def __init__(self, chunksize: int | None = 1):
        self.chunksize = chunksize
        self.name = "ProcessPoolExecutor" + (" (chunksize 1)" if chunksize == 1 else ", chunksize n/(8 workers)")

    def start(self) -> None:
        from concurrent.futures import ProcessPoolExecutor

        self.pool = ProcessPoolExecutor(WORKERS)
        list(self.pool.map(noop, range(WORKERS * 4)))

    def fanout(self, n: int, func=noop, timeout: float = 900.0) -> None:
        chunksize = self.chunksize or max(1, n // (8 * WORKERS))
        if list(self.pool.map(func, range(n), timeout=timeout, chunksize=chunksize)) != list(range(n)):
            raise AssertionError("PPE results out of place")

    def roundtrip(self, i: int) -> None:
        assert self.pool.submit(noop, i).result() == i

    def close(self) -> None:
        self.pool.shutdown()


CELERY_APP = '''
import os, time
from celery import Celery

app = Celery("bench", broker=os.environ["BENCH_CELERY_BROKER"], backend=os.environ["BENCH_CELERY_BACKEND"])
app.conf.task_default_queue = os.environ["BENCH_CELERY_QUEUE"]
app.conf.worker_hijack_root_logger = False
app.conf.result_expires = 3600
if os.environ.get("BENCH_CELERY_KEYPREFIX"):  # Redis: every key this run makes starts with it, so close() finds them
    app.conf.broker_transport_options = {"global_keyprefix": os.environ["BENCH_CELERY_KEYPREFIX"]}
    app.conf.result_backend_transport_options = {"global_keyprefix": os.environ["BENCH_CELERY_KEYPREFIX"]}


@app.task
def noop(i):
    return i


@app.task
def sleep10(i):
    time.sleep(0.010)
    return i
'''


class CelerySystem(System):
    """Celery, 2 prefork workers of concurrency 1: on RabbitMQ with rpc:// results, or on Redis with Redis results.

    ``group``: one task per job. ``chunks``: ``task.chunks(zip(range(n)), n // (8 * workers)).group()``, the way
    Celery's docs batch many small tasks (same chunk rule as the tuned ProcessPoolExecutor)."""

    def __init__(self, broker: str, mode: str = "group"):
        self.broker = broker
        self.mode = mode
        where = "Redis" if broker.startswith("redis") else "RabbitMQ"
        self.name = f"Celery {mode} ({where})"
        self.procs: list[subprocess.Popen] = []
        self.keyprefix = ""

    def start(self) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="bench-celery-"))
        (workdir / "bench_celery_app.py").write_text(textwrap.dedent(CELERY_APP))
        tag = uuid.uuid4().hex[:8]
        self.queue = f"bench-celery-{tag}"
        redis = self.broker.startswith("redis")
        self.keyprefix = f"bench-celery-{tag}:" if redis else ""
        os.environ.update(BENCH_CELERY_BROKER=self.broker, BENCH_CELERY_QUEUE=self.queue,
                          BENCH_CELERY_BACKEND=self.broker if redis else "rpc://",
                          BENCH_CELERY_KEYPREFIX=self.keyprefix)
        env = dict(os.environ, PYTHONPATH=f"{workdir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        sys.path.insert(0, str(workdir))
        logs = [workdir / f"worker{i}.log" for i in range(WORKERS)]
        self.procs = [subprocess.Popen([str(BIN / "celery"), "-A", "bench_celery_app", "worker", "--concurrency", "1",
                                        "--pool", "prefork", "-n", f"bench{tag}-{i}@%h", "--loglevel", "INFO",
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
        if self.mode == "chunks" and func is noop:
            size = max(1, n // (8 * WORKERS))
            out = [x for chunk in task.chunks(((i,) for i in range(n)), size).group()().get(timeout=timeout)
                   for x in chunk]
        else:  # the HPO loop's 20 x 10 ms jobs are one task each in both modes
            out = group(task.s(i) for i in range(n))().get(timeout=timeout)
        if out != list(range(n)):
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
                conn.default_channel.exchange_delete(self.queue)  # Celery's direct exchange named after the queue
            if self.keyprefix:
                import redis

                client = redis.Redis.from_url(self.broker)
                keys = list(client.scan_iter(match=self.keyprefix + "*", count=1000))
                if keys:
                    client.delete(*keys)  # only this run's keys: all of them carry its prefix


class ParslSystem(System):
    """Parsl HighThroughputExecutor on this host: one block of 2 workers x 1 core, ``python_app`` futures."""

    name = "Parsl HTEX"

    def start(self) -> None:
        import parsl
        from parsl.config import Config
        from parsl.executors import HighThroughputExecutor
        from parsl.providers import LocalProvider

        os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"  # interchange.py and the worker pool
        htex = HighThroughputExecutor(label="htex", max_workers_per_node=WORKERS, cores_per_worker=1,
                                      address="127.0.0.1",
                                      provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1))
        parsl.load(Config(executors=[htex], strategy="none", run_dir=tempfile.mkdtemp(prefix="bench-parsl-")))
        self.parsl = parsl
        self.apps = {noop: parsl.python_app(noop, executors=["htex"]),
                     sleep10: parsl.python_app(sleep10, executors=["htex"])}
        self.fanout(20)

    def fanout(self, n: int, func=noop, timeout: float = 900.0) -> None:
        app = self.apps[func]
        futures = [app(i) for i in range(n)]
        if [f.result(timeout=timeout) for f in futures] != list(range(n)):
            raise AssertionError("parsl results out of place")

    def roundtrip(self, i: int) -> None:
        assert self.apps[noop](i).result(timeout=60) == i

    def close(self) -> None:
        self.parsl.dfk().cleanup()


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
    "ppe-tuned": lambda: PoolSystem(chunksize=None),
    "celery": lambda: CelerySystem(RABBITMQ, "group"),
    "celery-chunks": lambda: CelerySystem(RABBITMQ, "chunks"),
    "celery-redis": lambda: CelerySystem(REDIS, "group"),
    "celery-redis-chunks": lambda: CelerySystem(REDIS, "chunks"),
    "parsl": ParslSystem,
    "dask": DaskSystem,
    "ray": RaySystem,
}


def measure(system: System, sizes: list[int], trips: int, hpo: bool, budget: float,
            big_budget: float | None = None) -> dict[str, Any]:
    """Fan-out per size (skipping sizes projected past ``budget`` seconds, ``big_budget`` from 1,000,000 jobs),
    round trips, HPO loop.  ``cpu_s`` is the driver process's own CPU time (all its threads, not its children)."""
    out: dict[str, Any] = {"name": system.name, "fanout": {}, "skipped": [], "failed": [], "latency_ms": [],
                           "hpo_s": []}
    rate = None
    for n in sizes:
        allowed = big_budget if big_budget and n >= 1_000_000 else budget
        if rate is not None and n / rate > allowed:
            out["skipped"].append(n)
            continue
        with RssPeak() as rss:
            start = time.perf_counter()
            cpu = time.process_time()
            try:
                system.fanout(n, timeout=max(60.0, 3 * allowed))
            except Exception as err:  # noqa: BLE001 - a peer failing at one size keeps the rest of its row
                logger.error("%s: %d-job fan-out failed: %s: %s", system.name, n, type(err).__name__, err)
                out["failed"].append(n)
                break
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - cpu
        out["fanout"][str(n)] = {"seconds": elapsed, "rss_growth": rss.growth, "cpu_s": cpu}
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
    parser.add_argument("--big-budget", type=float, default=None, help="the same from 1,000,000 jobs (s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    system = SYSTEMS[args.system]()
    system.start()
    try:
        result = measure(system, args.sizes, args.trips, args.hpo, args.budget, args.big_budget)
    finally:
        system.close()
    print("BENCH-JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
