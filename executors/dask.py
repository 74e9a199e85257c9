"""Runs jobs on a Dask cluster: each job is a Dask task calling the job runner on a worker.

``dask`` starts a LocalCluster (one single-threaded worker process per slot, for testing);
``dask://host:8786`` connects to a running scheduler.  Workers need iworkflow installed and the
driver's ``IWORKFLOW_SECRET`` in their environment (or ``?send_secret=1``, see docs/executors.md).
The driver publishes each returned result message on the bus when its Dask future completes.  A job's
source tree is scattered to the cluster once per version and reaches workers as a task input, so Dask
workers on other machines need nothing shared with the driver (docs/executors.md).
"""
from __future__ import annotations

import logging
import queue
import threading
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any

from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin

from iworkflow.errors import ConfigurationError
from iworkflow.messages import Job

from .base import Executor
from .options import flag, number, parse_address
from .remote import MB, SECRET_ENV, deliver, run_job, source_of

logger = logging.getLogger(__name__)

OPTIONS = {
    "workers": "worker processes of the LocalCluster started when no scheduler address is given (default: slots)",
    "send_secret": "1 to install IWORKFLOW_SECRET on the cluster's workers with a worker plugin (use with TLS)",
    "cpu_resource": "Dask worker resource that job core_count maps to (default CPU)",
    "memory_resource": "Dask worker resource that job total_memory maps to, in bytes (default MEMORY)",
    "timeout": "seconds to wait for the scheduler (default 30)",
}


class SecretPlugin(WorkerPlugin):
    """Sets ``IWORKFLOW_SECRET`` in each worker's environment (workers that join later get it too)."""

    name = "iworkflow-secret"
    idempotent = True

    def __init__(self, secret: str):
        self.secret = secret

    def setup(self, worker: Any) -> None:
        import os

        os.environ[SECRET_ENV] = self.secret


class DaskExecutor(Executor):
    """Submits each job as a Dask task; resources are requested only where workers declare them."""

    ships_source = True

    def __init__(self, settings, bus, address: str | None = None, client: Client | None = None):
        super().__init__(settings, bus, address)
        location, options = parse_address("dask", address, OPTIONS)
        self.cpu_resource = options.get("cpu_resource", "CPU")
        self.memory_resource = options.get("memory_resource", "MEMORY")
        self._cluster: LocalCluster | None = None
        self._owns_client = client is None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._inflight: dict[str, tuple[Job, Future, Any]] = {}
        self._finished: queue.SimpleQueue = queue.SimpleQueue()
        #: source trees scattered to the cluster, by digest (see ``_source``)
        self._sources: dict[str, Any] = {}
        self._collector = threading.Thread(target=self._collect, daemon=True, name="iworkflow-dask-collect")
        self._closed = False
        if client is not None:
            self.client = client
        elif location:
            timeout = number(options, "timeout", 30.0)
            try:
                self.client = Client(location, timeout=timeout)
            except (OSError, TimeoutError) as err:
                raise ConfigurationError(f"cannot reach the Dask scheduler at {location!r} "
                                         f"(executor spec 'dask://{address}'): {err}") from None
        else:
            workers = int(number(options, "workers", settings.effective_slots))
            self._cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                silence_logs=logging.ERROR, env={SECRET_ENV: settings.secret},
            )
            self.client = Client(self._cluster)
        if flag(options, "send_secret"):
            self.client.register_plugin(SecretPlugin(settings.secret))
        self._collector.start()
        logger.info("dask executor using %s", self.client)

    def declared_resources(self) -> dict[str, float]:
        """The largest amount of each resource that any worker declares."""
        largest: dict[str, float] = {}
        for info in self.client.scheduler_info(n_workers=-1).get("workers", {}).values():
            for name, amount in (info.get("resources") or {}).items():
                largest[name] = max(largest.get(name, 0), amount)
        return largest

    def resources_for(self, job: Job, declared: dict[str, float]) -> dict[str, float]:
        """Map core_count/total_memory (MB) onto the resources the cluster declares; {} = one slot."""
        wanted: dict[str, float] = {}
        if self.cpu_resource in declared:
            wanted[self.cpu_resource] = job.core_count
        if self.memory_resource in declared:
            wanted[self.memory_resource] = job.total_memory * MB
        for name, amount in wanted.items():
            if amount > declared[name]:
                raise ConfigurationError(
                    f"job {job.job_key} needs Dask resource {name}={amount:.12g} but the largest worker declares "
                    f"{name}={declared[name]:.12g} (total_memory is in MB, {self.memory_resource} in bytes); "
                    "lower core_count/total_memory or add bigger workers")
        return wanted

    def submit(self, job: Job) -> Future:
        return self.submit_many([job])[0]

    def submit_many(self, jobs: Iterable[Job]) -> list[Future]:
        jobs = list(jobs)
        if self._closed:
            raise RuntimeError("cannot submit: the dask executor has been shut down")
        declared = self.declared_resources()
        futures = [Future() for _ in jobs]
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, job in enumerate(jobs):
            try:
                groups[tuple(sorted(self.resources_for(job, declared).items()))].append(i)
            except ConfigurationError as err:
                futures[i].set_exception(err)
        with_events = self.settings.emits_events
        by_source: dict[tuple, list[int]] = defaultdict(list)
        for resources, indexes in groups.items():
            for i in indexes:
                by_source[(resources, jobs[i].source.digest if jobs[i].source else None)].append(i)
        for (resources, _digest), indexes in by_source.items():
            keys = [f"iworkflow-{jobs[i].job_key[:16]}-{jobs[i].id}" for i in indexes]
            try:
                source = self._source(jobs[indexes[0]])
            except Exception as err:  # noqa: BLE001 - e.g. the tree left the store: these jobs fail saying so
                for i in indexes:
                    futures[i].set_exception(err)
                continue
            dask_futures = self.client.map(
                run_job, [jobs[i].data for i in indexes], key=keys, pure=False,
                resources=dict(resources) or None, with_events=with_events, capture=False, source=source,
            )
            for i, key, dfut in zip(indexes, keys, dask_futures):
                with self._lock:
                    self._inflight[key] = (jobs[i], futures[i], dfut)
                futures[i].add_done_callback(lambda f, d=dfut: f.cancelled() and d.cancel())
                dfut.add_done_callback(self._finished.put)
        return futures

    def _source(self, job: Job) -> Any:
        """The job's source tarball as a Dask future: scattered once per tree, then moved by Dask to each worker
        that runs one of its jobs (and kept there), as any task input."""
        if job.source is None:
            return None
        with self._lock:
            scattered = self._sources.get(job.source.digest)
        if scattered is None:
            scattered = self.client.scatter([source_of(job)], hash=False)[0]
            with self._lock:
                scattered = self._sources.setdefault(job.source.digest, scattered)
        return scattered

    def _collect(self) -> None:
        """Gather finished tasks in batches (one round trip to the cluster each) and deliver them."""
        while True:
            batch = [self._finished.get()]
            while True:
                try:
                    batch.append(self._finished.get_nowait())
                except queue.Empty:
                    break
            if None in batch:
                return
            ok = [d for d in batch if d.status == "finished"]
            try:
                values = self.client.gather(ok) if ok else []
            except Exception:  # noqa: BLE001 - a result lost between finishing and gathering
                ok, values = [], []
            outcomes: dict[str, Any] = dict(zip((d.key for d in ok), values))
            for dfut in batch:
                if dfut.key not in outcomes:
                    try:
                        outcomes[dfut.key] = dfut.result()
                    except BaseException as err:  # noqa: BLE001 - task error, lost worker (KilledWorker), cancelled
                        outcomes[dfut.key] = err
            for key, outcome in outcomes.items():
                with self._lock:
                    job, future, _dfut = self._inflight[key]
                deliver(self, job, future, outcome, "dask")
                with self._idle:
                    self._inflight.pop(key, None)
                    self._idle.notify_all()

    def cancel_work(self, work_id: str, reason: str) -> None:
        """Cancel the work's Dask tasks: queued ones never run; one already running finishes on its worker,
        its result dropped (each job ends with a failure)."""
        with self._lock:
            tasks = [dfut for job, _future, dfut in self._inflight.values() if job.work_id == work_id]
        if tasks:
            self.client.cancel(tasks, reason=reason)

    def shutdown(self, wait: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        with self._idle:
            pending = [dfut for _job, _future, dfut in self._inflight.values()]
        if pending and not wait:
            self.client.cancel(pending)
        with self._idle:
            self._idle.wait_for(lambda: not self._inflight, timeout=None if wait else 10)
        self._finished.put(None)
        self._collector.join(timeout=10)
        if self._owns_client:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()
