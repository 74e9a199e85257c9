"""Jobs/s of the iworkflow Dask and Ray executors against raw Dask and raw Ray, same cluster, same run.

    .venv/bin/python benchmarks/bench_engines.py [--jobs 400] [--sleep-jobs 200] [--repeat 3] [--workers 2]

Both sides use one cluster per engine (Dask: a LocalCluster of single-threaded worker processes;
Ray: one local instance) and the same two functions: a no-op and a 10 ms sleep.  Raw Dask is
``client.gather(client.map(f, ...))``; raw Ray is ``ray.get([f.remote(...) ...])``; iworkflow is a
``@work`` fan-out with ``multi_jobs_kwargs_list`` (signing, result messages on the memory bus,
MapResult).  Each cell is the best of ``--repeat`` timed runs after one warm-up run.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("IWORKFLOW_SECRET", "bench-" + os.urandom(8).hex())

import iworkflow
from iworkflow import work


def noop(i: int) -> int:
    return i


def sleep10(i: int) -> int:
    time.sleep(0.01)
    return i


FUNCTIONS: dict[str, Callable[[int], int]] = {"no-op": noop, "10 ms": sleep10}


def best_rate(run: Callable[[int], object], jobs: int, repeat: int) -> float:
    """Jobs per second: the best of ``repeat`` timed runs after a warm-up."""
    run(min(jobs, 20))
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run(jobs)
        times.append(time.perf_counter() - start)
    return jobs / min(times)


def iworkflow_runner(func: Callable[[int], int]) -> Callable[[int], object]:
    w = work(func, map_results=True, total_memory=100)

    def run(n: int) -> object:
        results = w(multi_jobs_kwargs_list=[{"i": i} for i in range(n)])
        assert len(results.get_all_results()) == n, results
        return results

    return run


def bench_dask(args) -> list[tuple[str, str, int, float, float]]:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR)
    client = Client(cluster)
    iworkflow.configure(broker="memory://", executor=f"dask://{cluster.scheduler_address}?send_secret=1")
    rows = []
    try:
        for label, func in FUNCTIONS.items():
            n = args.jobs if func is noop else args.sleep_jobs

            def raw(k: int, func=func) -> object:
                return client.gather(client.map(func, range(k), pure=False))

            rows.append(("dask", label, n, best_rate(raw, n, args.repeat),
                         best_rate(iworkflow_runner(func), n, args.repeat)))
    finally:
        iworkflow.shutdown()
        client.close()
        cluster.close()
    return rows


def bench_ray(args) -> list[tuple[str, str, int, float, float]]:
    import ray

    ray.init(num_cpus=args.workers, include_dashboard=False, configure_logging=False, log_to_driver=False)
    iworkflow.configure(broker="memory://", executor="ray")
    rows = []
    try:
        for label, func in FUNCTIONS.items():
            n = args.jobs if func is noop else args.sleep_jobs
            remote = ray.remote(func)

            def raw(k: int, remote=remote) -> object:
                return ray.get([remote.remote(i) for i in range(k)])

            rows.append(("ray", label, n, best_rate(raw, n, args.repeat),
                         best_rate(iworkflow_runner(func), n, args.repeat)))
    finally:
        iworkflow.shutdown()
        ray.shutdown()
    return rows


def table(rows: list[tuple[str, str, int, float, float]]) -> str:
    lines = ["| engine | function | jobs | raw jobs/s | iworkflow jobs/s | iworkflow / raw |",
             "|---|---|---:|---:|---:|---:|"]
    for engine, label, n, raw, iw in rows:
        lines.append(f"| {engine} | {label} | {n} | {raw:,.0f} | {iw:,.0f} | {iw / raw:.2f} |")
    ratios = [iw / raw for *_, raw, iw in rows]
    lines.append(f"\ngeometric mean of iworkflow/raw: {statistics.geometric_mean(ratios):.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=400, help="jobs per no-op run")
    parser.add_argument("--sleep-jobs", type=int, default=200, help="jobs per 10 ms run")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per cell (best is kept)")
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes / Ray CPUs")
    parser.add_argument("--engines", default="dask,ray", help="comma-separated: dask, ray")
    args = parser.parse_args()
    rows = []
    engines = args.engines.split(",")
    if "dask" in engines:
        rows += bench_dask(args)
    if "ray" in engines:
        rows += bench_ray(args)
    print(f"{os.cpu_count()} cores; {args.workers} workers; best of {args.repeat}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
