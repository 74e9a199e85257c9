"""Runs jobs as Ray tasks, each calling the job runner on a Ray worker.

``ray`` starts a local Ray instance (or reuses the one this process already joined);
``ray://host:6379`` or ``ray://auto`` joins a running cluster as a driver.  The driver's
``IWORKFLOW_SECRET`` reaches the workers through the Ray runtime environment (``env_vars``).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any

import ray

from iworkflow.errors import ConfigurationError
from iworkflow.messages import Job

from .base import Executor
from .options import flag, number, parse_address
from .remote import MB, SECRET_ENV, deliver, run_job, source_of

logger = logging.getLogger(__name__)

OPTIONS = {
    "num_cpus": "CPUs of the local Ray instance started when no address is given (default: slots)",
    "map_memory": "1 (default) to request total_memory as Ray 'memory', 0 to request CPUs only",
}


class RayExecutor(Executor):
    """Submits each job as a Ray task with ``num_cpus=core_count`` and ``memory=total_memory``."""

    ships_source = True

    def __init__(self, settings, bus, address: str | None = None):
        super().__init__(settings, bus, address)
        location, options = parse_address("ray", address, OPTIONS)
        self.map_memory = flag(options, "map_memory", True)
        runtime_env = {"env_vars": {SECRET_ENV: settings.secret}}
        self._owns_ray = not ray.is_initialized()
        self._task_env: dict | None = None
        if self._owns_ray:
            kwargs: dict[str, Any] = {"runtime_env": runtime_env, "include_dashboard": False,
                                      "logging_level": logging.WARNING, "configure_logging": False}
            try:
                if location:
                    ray.init(address=location, **kwargs)
                else:
                    ray.init(num_cpus=int(number(options, "num_cpus", settings.effective_slots)), **kwargs)
            except ConnectionError as err:
                raise ConfigurationError(f"cannot join the Ray cluster at {location!r} "
                                         f"(executor spec 'ray://{address}'): {err}") from None
        else:
            self._task_env = runtime_env
            logger.info("ray executor reuses the Ray instance this process already joined")
        self._remote = ray.remote(run_job)
        self._lock = threading.Lock()
        self._inflight: dict[str, tuple[Job, Future, Any]] = {}
        #: source trees put in Ray's object store, by digest (see ``_source``)
        self._sources: dict[str, Any] = {}
        self._idle = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._collector = threading.Thread(target=self._collect, daemon=True, name="iworkflow-ray-collect")
        self._collector.start()

    def largest_node(self) -> dict[str, float]:
        """The largest CPU and memory amounts that any alive node offers."""
        largest: dict[str, float] = {}
        for node in ray.nodes():
            if node.get("Alive"):
                for name in ("CPU", "memory"):
                    largest[name] = max(largest.get(name, 0), node.get("Resources", {}).get(name, 0))
        return largest

    def options_for(self, job: Job, largest: dict[str, float]) -> dict[str, Any]:
        """Ray task options for a job: num_cpus, memory (bytes), no engine retries."""
        opts: dict[str, Any] = {"num_cpus": job.core_count, "max_retries": 0}
        if self.map_memory:
            opts["memory"] = job.total_memory * MB
        for name, key in (("CPU", "num_cpus"), ("memory", "memory")):
            if key in opts and opts[key] > largest.get(name, 0):
                raise ConfigurationError(
                    f"job {job.job_key} asks Ray for {key}={opts[key]:g} but the largest node offers "
                    f"{name}={largest.get(name, 0):g}; lower core_count/total_memory, add bigger nodes, "
                    f"or use ?map_memory=0")
        if self._task_env is not None:
            opts["runtime_env"] = self._task_env
        return opts

    def submit(self, job: Job) -> Future:
        return self.submit_many([job])[0]

    def submit_many(self, jobs: Iterable[Job]) -> list[Future]:
        jobs = list(jobs)
        if self._closed:
            raise RuntimeError("cannot submit: the ray executor has been shut down")
        largest = self.largest_node()
        with_events = self.settings.emits_events
        futures: list[Future] = []
        cache: dict[tuple, Any] = {}
        for job in jobs:
            future: Future = Future()
            futures.append(future)
            try:
                opts = self.options_for(job, largest)
            except ConfigurationError as err:
                future.set_exception(err)
                continue
            shape = (job.core_count, job.total_memory)
            remote = cache.get(shape)
            if remote is None:
                remote = cache[shape] = self._remote.options(**opts)
            try:
                source = self._source(job)
            except Exception as err:  # noqa: BLE001 - e.g. the tree left the store: the job fails saying so
                future.set_exception(err)
                continue
            ref = remote.remote(job.data, with_events, True, source)
            with self._lock:
                self._inflight[ref.hex()] = (job, future, ref)
            # the Future stays pending while the task runs: cancelling it kills the task's worker process too
            future.add_done_callback(lambda f, r=ref: f.cancelled() and ray.cancel(r, force=True))
        self._wake.set()
        return futures

    def _source(self, job: Job) -> Any:
        """The job's source tarball in Ray's object store: put once per tree, then fetched by each node that
        runs one of its jobs (a task argument), so Ray workers on other machines need nothing shared."""
        if job.source is None:
            return None
        with self._lock:
            ref = self._sources.get(job.source.digest)
        if ref is None:
            ref = ray.put(source_of(job))
            with self._lock:
                ref = self._sources.setdefault(job.source.digest, ref)
        return ref

    def _collect(self) -> None:
        """Wait for finished tasks, fetch their results in batches and deliver them."""
        while not self._stop.is_set():
            with self._lock:
                refs = [ref for _job, _future, ref in self._inflight.values()]
            if not refs:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            ready, rest = ray.wait(refs, num_returns=1, timeout=0.05)
            if not ready:
                continue
            if rest:
                ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
            try:
                outcomes = dict(zip(ready, ray.get(ready)))
            except Exception:  # noqa: BLE001 - some failed: fetch one by one to tell which
                outcomes = {ref: self._get_one(ref) for ref in ready}
            for ref, outcome in outcomes.items():
                with self._lock:
                    job, future, _ref = self._inflight[ref.hex()]
                deliver(self, job, future, outcome, "ray")
                with self._idle:
                    self._inflight.pop(ref.hex(), None)
                    self._idle.notify_all()

    @staticmethod
    def _get_one(ref: Any) -> Any:
        try:
            return ray.get(ref)
        except BaseException as err:  # noqa: BLE001 - task error, worker crash or cancellation
            return getattr(err, "cause", None) or err

    def cancel_work(self, work_id: str, reason: str) -> None:
        """Cancel the work's Ray tasks, killing the worker processes running them (each job ends with a failure)."""
        with self._lock:
            refs = [ref for job, _future, ref in self._inflight.values() if job.work_id == work_id]
        for ref in refs:
            ray.cancel(ref, force=True)

    def shutdown(self, wait: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        with self._idle:
            refs = [ref for _job, _future, ref in self._inflight.values()]
        if not wait:
            for ref in refs:
                ray.cancel(ref, force=True)  # a running task's worker process is killed
        with self._idle:
            self._idle.wait_for(lambda: not self._inflight, timeout=None if wait else 10)
        self._stop.set()
        self._wake.set()
        self._collector.join(timeout=10)
        if self._owns_ray:
            ray.shutdown()
