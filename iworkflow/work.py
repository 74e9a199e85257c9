"""Work: one call of a ``@work`` function, fanned out into one job per kwargs entry."""
from __future__ import annotations

import functools
import hashlib
import inspect
import itertools
import logging
import os
import pickle
import threading
from concurrent.futures import Future
from typing import Any, Callable, Iterator, NamedTuple

from . import serialization
from .asyncresult import FAILED, FINISHED, SUBFINISHED, AsyncResult, Outcome
from .callable_module import make_callable
from .config import redact_url
from .context import current_workflow
from .errors import ConfigurationError, WorkCancelled
from .failures import failure_result
from .futures import JobFutures
from .identity import call_identity, work_identity
from .idds_compat import WorkCompat, WorkflowSetting, status_name
from .ids import get_unique_id_for_dict, new_id
from .messages import RETRY, Control, Event, Job, JobPayload, SourceRef, encode_payload
from .result_cache import MEMO
from .runtime import get_runtime

logger = logging.getLogger(__name__)

NEW, RUNNING, CANCELLED = "new", "running", "cancelled"
RESERVED = ("multi_jobs_kwargs_list", "group_kwargs", "workflow")
_UNSET = object()
#: a fan-out is encoded and dispatched in chunks growing from FIRST_CHUNK to MAX_CHUNK jobs
FIRST_CHUNK = 64
MAX_CHUNK = 2048


class _Calls(NamedTuple):
    """A work's jobs ready to encode: the pickled function, its digest, the source shipped, the arguments."""

    func: bytes
    digest: str
    source: SourceRef | None
    args: list[tuple[str, bytes]]


class _Route(NamedTuple):
    """What every job message of a work shares besides its arguments: where it goes and how long it may run."""

    queue: str
    walltime: float | None
    reply_to: str
    expected: float | None
    fanout: int
    #: the executor dispatched through, credentials removed (an artifact saved by a job records it)
    executor: str
    #: header fields telling a worker where to fetch the source tree over the bus (empty: it need not)
    shipping: dict[str, str]


def _ignored(kind: str) -> bool:
    names = (f"IDDS_IGNORE_{kind}_DECORATOR", f"IWORKFLOW_IGNORE_{kind}_DECORATOR")
    return any(os.environ.get(n, "").lower() not in ("", "0", "false", "no") for n in names)


def _check_callable(func: Any, what: str) -> None:
    if not callable(func):
        raise ConfigurationError(f"@{what} needs a function, got {type(func).__name__} {func!r}")


class Work(WorkCompat):
    """A function call turned into jobs: build it, ``submit()`` it, then wait for its results.

    A work without its own ``init_env``, ``container_options`` or ``total_memory`` uses its workflow's, as
    iDDS's ``WorkContext`` does.  iDDS's PanDA/Rucio arguments (datasets, workload ids...) are kept in
    ``other_attributes`` and readable, but not acted on (``idds_compat.WorkCompat``)."""

    #: the work's own if given, else its workflow's (iDDS ``WorkContext.setup()``), else the default
    init_env = WorkflowSetting()
    container_options = WorkflowSetting()
    total_memory = WorkflowSetting(4000)

    #: set by ``Workflow.submit`` on the work running a detached workflow's driver: its jobs say so in
    #: their signed header, so workers run them outside their job slots without unpickling anything
    detached_driver: bool = False

    def __init__(self, func: Callable | None = None, workflow_context=None, context=None, pre_kwargs=None,
                 args=None, kwargs=None, multi_jobs_kwargs_list=None, current_job_kwargs=None,
                 map_results: bool = False, source_dir=None, init_env: str | None = None,
                 is_unique_func_name: bool = False, name: str | None = None, container_options=None,
                 job_key=None, workflow=None, max_walltime: float | None = None, core_count: int = 1,
                 total_memory: int | None = None, executor: str | None = None, queue: str | None = None,
                 post_script=None, cache: bool | None = None, parent_workload_id=None, no_wait_parent=False,
                 input_datasets=None, output_file_name=None, output_dataset_name=None, num_events=None,
                 num_events_per_job=None, parent_transform_id=None, parent_internal_id=None,
                 log_dataset_name=None, inputs=None, input_map=None, inputs_group=None,
                 enable_separate_log=False, json_load=False):
        _check_callable(func, "work")
        self._func = func
        self._workflow = workflow or workflow_context or context
        self.pre_kwargs = dict(pre_kwargs or {})
        self.args = tuple(args or ())
        self.kwargs = dict(kwargs or {})
        self.map_results = map_results
        for setting, value in (("init_env", init_env), ("container_options", container_options),
                               ("total_memory", total_memory)):
            if value:
                setattr(self, setting, value)
        self.name = name or getattr(func, "__name__", "work")
        self.max_walltime = max_walltime
        self.core_count = core_count
        self._executor = executor
        self._queue = queue
        self.post_script = post_script
        self.cache = cache
        self.internal_id = new_id()
        self.status = NEW
        self._async: AsyncResult | None = None
        #: executor Futures not done yet (cancellable); a done one is dropped, so a fan-out costs nothing here
        self._dispatching: set[Future] = set()
        #: what job messages are rebuilt from for a retry (the function once, each job's arguments), and the
        #: attempt of each job retried so far; no job message is kept per job
        self._prepared: _Calls | None = None
        self._route: _Route | None = None
        self._args_of: dict[str, bytes] | None = None
        self._attempts: dict[str, int] = {}
        self.parents: list[str] = []
        #: job key -> (call identity, record key in this run), for jobs whose results are recorded or reused
        self._calls: dict[str, tuple[str, str]] = {}
        self._run = None
        self._digest: str | None = None
        self._lock = threading.Lock()
        self._runtime = None
        self._keep_idds_settings(
            parent_internal_id=parent_internal_id, job_key=job_key, inputs=inputs, input_map=input_map,
            inputs_group=inputs_group, parent_workload_id=parent_workload_id, no_wait_parent=no_wait_parent,
            input_datasets=input_datasets, output_file_name=output_file_name,
            output_dataset_name=output_dataset_name, log_dataset_name=log_dataset_name, num_events=num_events,
            num_events_per_job=num_events_per_job, parent_transform_id=parent_transform_id,
            enable_separate_log=enable_separate_log)
        if multi_jobs_kwargs_list is not None and not isinstance(multi_jobs_kwargs_list, (list, tuple)):
            raise ConfigurationError(
                f"multi_jobs_kwargs_list must be a list of kwargs dicts (or of positional-argument lists), "
                f"got {type(multi_jobs_kwargs_list).__name__}; wrap a single entry as [entry]"
            )
        self.is_multi = multi_jobs_kwargs_list is not None
        self.multi_jobs_kwargs_list = list(multi_jobs_kwargs_list or [])
        if self.is_multi and not self.multi_jobs_kwargs_list:
            raise ConfigurationError("multi_jobs_kwargs_list is empty: give at least one kwargs entry")
        self._job_key = job_key
        self._jobs_spec = self._expand()
        self.job_keys = [k for k, _, _, _ in self._jobs_spec]
        self.job_args = {k: entry for k, entry, _, _ in self._jobs_spec}

    # --- job expansion ---------------------------------------------------------------------
    def _key_for(self, entry: Any, index: int) -> str:
        jk = self._job_key
        if jk is None:
            return get_unique_id_for_dict(entry)
        if callable(jk):
            return str(jk(entry))
        if not self.is_multi:
            return str(jk)
        return f"{jk}:{get_unique_id_for_dict(entry)}"

    def _expand(self) -> list[tuple[str, Any, tuple, dict]]:
        base_kwargs = {**self.pre_kwargs, **self.kwargs}
        entries = self.multi_jobs_kwargs_list if self.is_multi else [None]
        try:
            signature = inspect.signature(self._func)
        except (TypeError, ValueError):
            signature = None
        specs: list[tuple[str, Any, tuple, dict]] = []
        seen: dict[str, int] = {}
        bound: set[tuple[int, frozenset]] = set()  # binding depends only on the argument count and names
        for i, entry in enumerate(entries):
            if entry is None:
                args, kwargs, lookup = self.args, base_kwargs, self.kwargs
            elif isinstance(entry, dict):
                args, kwargs, lookup = self.args, {**base_kwargs, **entry}, entry
            elif isinstance(entry, (list, tuple)):
                args, kwargs, lookup = tuple(entry), base_kwargs, list(entry)
            else:
                raise ConfigurationError(
                    f"multi_jobs_kwargs_list[{i}] is {type(entry).__name__}; each entry must be a dict of "
                    "keyword arguments or a list/tuple of positional arguments"
                )
            if self.inputs_group or (self.inputs and self.input_map):
                kwargs = {**kwargs, **self._input_kwargs()}
            shape = (len(args), frozenset(kwargs))
            if signature is not None and shape not in bound:
                try:
                    signature.bind(*args, **kwargs)
                except TypeError as err:
                    where = f"job {i} of " if self.is_multi else ""
                    raise ConfigurationError(
                        f"{where}{self.name}{signature}: {err} (arguments given: "
                        f"{len(args)} positional, keywords {sorted(kwargs)})"
                    ) from None
                bound.add(shape)
            key = self._key_for(lookup, i)
            if key in seen:
                raise ConfigurationError(
                    f"multi_jobs_kwargs_list entries {seen[key]} and {i} give the same job key {key[:12]} "
                    f"(identical kwargs {lookup!r}); remove the duplicate or pass job_key=callable"
                )
            seen[key] = i
            specs.append((key, lookup, args, kwargs))
        return specs

    # --- properties ------------------------------------------------------------------------
    @property
    def runtime(self):
        if self._runtime is None:
            self._runtime = get_runtime()
        return self._runtime

    @property
    def workflow(self):
        return self._workflow

    @property
    def workflow_id(self) -> str | None:
        return self._workflow.internal_id if self._workflow is not None else None

    @property
    def queue(self) -> str:
        return self._queue or getattr(self._workflow, "queue", None) or self.runtime.settings.queue

    @queue.setter
    def queue(self, value: str | None) -> None:
        self._queue = value

    @property
    def distributed(self) -> bool:
        return getattr(self._workflow, "distributed", True) is not False

    @property
    def executor_name(self) -> str:
        if self._executor or getattr(self._workflow, "executor", None):
            return self._executor or self._workflow.executor
        # iDDS runs the works of a workflow with distributed=False in the driver process
        return self.runtime.settings.executor if self.distributed else "thread"

    def run(self):
        """Submit (if not yet) and wait: the results, as a ``@work`` call returns them."""
        if self.status == NEW:
            self.submit()
        return self.wait_results(timeout=self.runtime.settings.result_timeout or None)

    # --- submission ------------------------------------------------------------------------
    def _serialize_args(self, args: tuple, kwargs: dict) -> bytes:
        try:
            return serialization.dumps((args, kwargs))
        except Exception as err:
            named = [(f"#{i}", a) for i, a in enumerate(args)] + list(kwargs.items())
            for arg_name, value in named:
                try:
                    serialization.dumps(value)
                except Exception as inner:
                    raise ConfigurationError(
                        f"{self.name}: " + serialization.describe_unpicklable(arg_name, value, inner)
                    ) from None
            raise ConfigurationError(f"{self.name}: arguments cannot be serialized: {err}") from None

    def init_async_result(self) -> AsyncResult:
        if self._async is None:
            self._async = AsyncResult(self, name=self.name, map_results=self.map_results,
                                      multi_jobs_kwargs_list=self.multi_jobs_kwargs_list,
                                      on_control=self._on_control)
            self._async.add_outcome_callback(self._on_outcome)
        return self._async

    @property
    def async_result(self) -> AsyncResult:
        """Where this work's results gather (iDDS's AsyncResult); ``RuntimeError`` before ``submit()``."""
        if self._async is None:
            raise RuntimeError(f"work {self.name} has not been submitted; call submit() first")
        return self._async

    @property
    def futures(self) -> JobFutures:
        """A ``concurrent.futures.Future`` per job, in submission order; ``futures.get(args=...)`` finds one."""
        return self.async_result.futures()

    def _memoized(self) -> bool:
        """``cache=True`` (or ``IWORKFLOW_CACHE=on``): results are reused across runs by call identity."""
        return self.cache if self.cache is not None else self.runtime.settings.cache_enabled

    def _ships_source(self, executor) -> bool:
        # a job in a container sees none of the driver's files: its source comes from the source cache
        return executor.ships_source or bool(self.container_options)

    def _source_ref(self, executor, identify: bool) -> SourceRef | None:
        """The source tree the jobs run with: the workflow's; for a memoized work outside a workflow, the
        folder of its function (so that an edited helper module changes the call identity)."""
        if not (self._ships_source(executor) or identify):
            return None
        if self._workflow is not None:
            return self._workflow.source_ref() if hasattr(self._workflow, "source_ref") else None
        if not self._memoized():
            return None
        from .workflow import _default_source_dir, _source_store

        folder = _default_source_dir(self._func)
        if folder is None:
            return None
        settings = self.runtime.settings
        store = _source_store(settings)
        return SourceRef(digest=store.add_tree(folder, (), settings.max_source_mb), store=store.location)

    def _prepare(self, executor) -> _Calls:
        """Pickle the function and every job's arguments (an unpicklable one fails the call here, before
        anything is sent) and, where results are recorded or reused, each job's call identity."""
        try:
            func_bytes = serialization.dumps_function(self._func)
        except Exception as err:
            raise ConfigurationError(f"function {self.name} cannot be serialized with cloudpickle: {err}") from None
        digest = self._digest = hashlib.sha256(func_bytes).hexdigest()
        todo = [(key, self._serialize_args(args, kwargs)) for key, _lookup, args, kwargs in self._jobs_spec]
        driver = getattr(self._workflow, "driver_key", None)
        self._run = self.runtime.run_for(driver) if driver else None
        run = self._run
        identify = self._memoized() or (run is not None and (run.recording or run.resumed_from is not None))
        source = self._source_ref(executor, identify)
        if identify:
            work = work_identity(digest, source.digest if source else None, self.init_env, self.container_options)
            identities = [call_identity(work, args_bytes) for _key, args_bytes in todo]
            records = run.occurrences(identities) if run is not None else identities
            self._calls = {key: (ident, rec) for (key, _), ident, rec in zip(todo, identities, records)}
        if source is not None and self.detached_driver:
            from .source_shipping import with_tarball

            source = with_tarball(source)  # the submitter may be gone before a worker takes the driver's job
        return _Calls(func_bytes, digest, source if self._ships_source(executor) else None, todo)

    def _reuse(self) -> dict[str, bytes]:
        """Results this work takes instead of running jobs: those of exactly the same calls in the run being
        resumed, then (``cache=True``) memoized ones.  Every reuse is logged at WARNING."""
        if not self._calls:
            return {}
        cache = self.runtime.result_cache
        found: dict[str, bytes] = {}
        sources: list[str] = []
        run = self._run
        if run is not None and run.resumed_from is not None:
            got = cache.get_many(run.resumed_from, [rec for _ident, rec in self._calls.values()])
            for key, (_ident, rec) in self._calls.items():
                raw = got.get(rec)
                if raw is not None:
                    found[key] = raw
                    if run.recording:
                        cache.put(run.id, rec, raw)  # this run's record stays complete for a later resume
            if found:
                sources.append(f"{len(found)} from run {run.resumed_from} (resume)")
            elif run.first_miss():
                logger.warning(
                    "work %s: none of its %d calls matches a call of run %s, so all run again; a call matches only "
                    "with the same function, source tree and arguments: files written into the source folder "
                    "(logs, outputs) change the tree, so keep them elsewhere or list them in exclude_source_files",
                    self.name, len(self._calls), run.resumed_from)
        if self._memoized():
            rest = {ident: key for key, (ident, _rec) in self._calls.items() if key not in found}
            got = cache.get_many(MEMO, rest)
            for ident, raw in got.items():
                found[rest[ident]] = raw
            if got:
                sources.append(f"{len(got)} memoized (cache=True)")
        if found:
            logger.warning("work %s: %d of %d job results reused, not run again: %s", self.name, len(found),
                           len(self.job_keys), ", ".join(sources))
        return found

    def _job_chunks(self, executor, calls: _Calls, skip: set[str] | frozenset = frozenset()) -> Iterator[list[Job]]:
        """The jobs to dispatch, in chunks that grow from ``FIRST_CHUNK`` to ``MAX_CHUNK``: signing and
        wrapping go chunk by chunk, so workers start on the first jobs while the driver encodes the rest."""
        todo = [(key, args_bytes) for key, args_bytes in calls.args if key not in skip]
        self._prepared = calls
        source = calls.source
        shipping = {}
        if (source is not None and source.data is None and getattr(executor, "source_over_bus", False)
                and not self.runtime.settings.is_embedded and not source.store.startswith(("http://", "https://"))):
            shipping = {"source": source.digest, "source_from": self.runtime.serve_source(source)}
        route = self._route = _Route(
            queue=self.queue, walltime=self.max_walltime or getattr(self._workflow, "max_walltime", None),
            reply_to=self.runtime.inbox.destination, expected=self.runtime.expected_job_seconds(calls.digest),
            fanout=len(todo), executor=redact_url(self.executor_name), shipping=shipping)
        start, size = 0, FIRST_CHUNK
        while start < len(todo):
            chunk = [self._new_job(calls, route, key, args_bytes, 1) for key, args_bytes in todo[start : start + size]]
            start += size
            size = min(MAX_CHUNK, size * 2)
            yield chunk

    def _new_job(self, calls: _Calls, route: _Route, key: str, args_bytes: bytes, attempt: int) -> Job:
        """One job's signed message and routing fields (a retry is the same job with a new id and attempt)."""
        payload = JobPayload(
            func=calls.func, func_digest=calls.digest, args=args_bytes, source=calls.source, init_env=self.init_env,
            container_options=self.container_options, max_walltime=route.walltime, name=self.name,
            executor=route.executor,
        )
        job_id = new_id()
        data = encode_payload("job", payload, self.runtime.secret, workflow_id=self.workflow_id,
                              work_id=self.internal_id, job_key=key, attempt=attempt, id=job_id,
                              reply_to=route.reply_to, driver=self.detached_driver, walltime=route.walltime,
                              **route.shipping)
        return Job(id=job_id, workflow_id=self.workflow_id or "", work_id=self.internal_id, job_key=key,
                   attempt=attempt, data=data, queue=route.queue, core_count=self.core_count,
                   total_memory=self.total_memory, max_walltime=route.walltime, reply_to=route.reply_to,
                   expected_seconds=route.expected, fanout=route.fanout, source=calls.source)

    def submit(self) -> str:
        """Dispatch every job; results gather in this work's AsyncResult.  Returns the work id."""
        if self.status != NEW:
            raise RuntimeError(f"work {self.name} was already submitted")
        executor = self.runtime.executor(self.executor_name)
        calls = self._prepare(executor)  # raises here, before anything is sent, if an argument cannot be pickled
        cached = self._reuse()
        chunks = self._job_chunks(executor, calls, skip=cached.keys()) if len(cached) < len(calls.args) else iter(())
        first = next(chunks, [])
        result = self.init_async_result()
        result.subscribe()
        if self._workflow is not None and hasattr(self._workflow, "parents_of"):
            self.parents = self._workflow.parents_of([self.args, self.kwargs, self.pre_kwargs,
                                                      self.multi_jobs_kwargs_list])
        parent = str(self.parent_internal_id or "")
        if parent and parent not in self.parents and len(parent) <= 64:  # iDDS's explicit DAG edge
            self.parents.append(parent)
        self.status = RUNNING
        if not self.detached_driver:  # a detached workflow's driver is meant to outlive this process
            self.runtime.track(self)
        if cached:
            for key, raw in cached.items():
                result.deliver(key, pickle.loads(raw), cached=True)
        walltime = first[0].max_walltime if first else None
        failed: Future | None = None  # set once a chunk is refused: every job from there on ends with its error
        for chunk in itertools.chain([first] if first else [], chunks):
            if failed is None:
                try:
                    self._dispatch(executor, chunk)
                except Exception as err:
                    if chunk is first:
                        raise  # nothing was sent: the caller gets the error
                    logger.error("work %s: dispatch failed part-way: %s", self.name, err)
                    failed = Future()
                    failed.set_exception(err)
            if failed is not None:
                for job in chunk:
                    self._on_dispatch_done(job, failed)
        if self.runtime.emit_events:  # after the dispatch, so the jobs are not queued behind it
            self.runtime.emit(Event("work_submitted", self.workflow_id, self.internal_id, data={
                "name": self.name, "executor": self.executor_name, "queue": self.queue,
                "jobs": [{"key": k, "args": serialization.jsonable(a)} for k, a, _, _ in self._jobs_spec],
                "parents": self.parents,
                "max_walltime": walltime,
                "reply_to": result.destination,
            }))
        return self.internal_id

    def _dispatch(self, executor, jobs: list[Job]) -> None:
        futures = executor.submit_many(jobs)
        with self._lock:
            self._dispatching.update(futures)
        for job, future in zip(jobs, futures):
            future.add_done_callback(functools.partial(self._on_dispatch_done, job))

    def _on_control(self, control: Control) -> None:
        """The server asks for a job to run again with the attempt number it gives: a lost job, or (``failed``)
        a failed one a user retries; a retry this driver cannot honour is reported as a ``retry_refused`` event."""
        if control.action != RETRY:
            logger.debug("work %s ignores control %s", self.name, control.action)
            return
        key = control.job_key or ""
        calls, route = self._prepared, self._route
        refused = None
        if calls is None or route is None or self.status == CANCELLED:
            refused = f"work {self.name} was cancelled" if self.status == CANCELLED else "the work was not dispatched"
        with self._lock:
            if self._args_of is None and calls is not None:
                self._args_of = dict(calls.args)
            args_bytes = (self._args_of or {}).get(key)
            if refused is None and args_bytes is None:
                refused = f"work {self.name} has no job {key}"
            if refused is None and control.attempt <= self._attempts.get(key, 1):
                refused = f"attempt {control.attempt} of job {key} was already sent"
            if refused is None:
                if control.failed:
                    refused = self.async_result.reopen(key, control.attempt)
                elif self.async_result.has_outcome(key):
                    return  # a lost job's result came after all: nothing to run again
            if refused is None:
                self._attempts[key] = control.attempt
        if refused is not None:
            if control.failed:
                logger.warning("retry of job %s of work %s refused: %s", key, self.name, refused)
                self.runtime.emit(Event("retry_refused", self.workflow_id, self.internal_id, key, control.attempt,
                                        data={"reason": refused}))
            return
        assert calls is not None and route is not None and args_bytes is not None
        retry = self._new_job(calls, route, key, args_bytes, control.attempt)
        logger.warning("retrying job %s of work %s (attempt %d): %s", key, self.name, control.attempt, control.reason)
        self._dispatch(self.runtime.executor(self.executor_name), [retry])

    def _on_dispatch_done(self, job: Job, future: Future) -> None:
        """A job the executor could not run still ends with a failure result: nothing is lost."""
        with self._lock:
            self._dispatching.discard(future)
        if future.cancelled():
            exc: BaseException = WorkCancelled(f"job {job.job_key} of work {self.name} was cancelled before it ran")
        else:
            exc = future.exception()
            if exc is None:
                return
        log = logger.debug if future.cancelled() else logger.warning  # whoever cancelled says so, once
        log("job %s of work %s did not run: %s", job.job_key, self.name, exc)
        self.async_result.deliver(job.job_key, failure_result(exc, attempt=job.attempt))

    def _on_outcome(self, outcome: Outcome, raw: bytes | None = None) -> None:
        if outcome.ok and self._workflow is not None and hasattr(self._workflow, "note_result"):
            self._workflow.note_result(outcome.value, self.internal_id)
        if outcome.cached:
            self.runtime.emit(Event("job_finished", self.workflow_id, self.internal_id, outcome.key,
                                    data={"worker": "result-cache", "cached": True}))
        elif outcome.ok and raw is not None and self._calls:
            self._keep(outcome.key, raw)
        if outcome.ok and not outcome.cached and outcome.metrics is not None and self._digest is not None:
            self.runtime.note_job_seconds(self._digest, outcome.metrics.duration)
        if self._async is not None and self._async.is_all_results_available and self.status != NEW:
            self.runtime.untrack(self)
            self._async.stop()  # every job ended: stop routing (a late duplicate is dropped by the inbox)
            if self._calls:
                self.runtime.result_cache.flush()
            status = self.get_status()
            self.runtime.emit(Event("work_finished", self.workflow_id, self.internal_id, data={"status": status}))

    def _keep(self, key: str, raw: bytes) -> None:
        """Record a job's result under its call identity: in this run (for a resume) and, memoized, for all."""
        identity, record = self._calls[key]
        cache = self.runtime.result_cache
        if self._run is not None and self._run.recording:
            cache.put(self._run.id, record, raw)
        if self._memoized():
            cache.put(MEMO, identity, raw)

    # --- status and results ----------------------------------------------------------------
    def get_status(self) -> str:
        """new, running, finished, subfinished, failed or cancelled (once every job of a cancelled work ended)."""
        if self.status == NEW or self._async is None:
            return self.status
        r = self._async
        if not r.is_all_results_available:
            return RUNNING
        if self.status == CANCELLED:
            return CANCELLED
        if r.is_finished:
            return FINISHED
        return FAILED if r.is_failed else SUBFINISHED

    def cancel(self, reason: str = "cancelled by its driver") -> int:
        """Drop the jobs that have not started, and have the executor stop the running ones where it can
        (a broker's workers do); each ends with a 'cancelled' failure.  Returns how many were dropped here."""
        running = self.status == RUNNING and self.unfinished_jobs() > 0  # a work whose jobs all ended stays as it ended
        if running:
            self.status = CANCELLED
        with self._lock:
            pending = list(self._dispatching)
        n = sum(1 for f in pending if f.cancel())
        if running:
            self.runtime.executor(self.executor_name).cancel_work(self.internal_id, reason)
            # the server records it now: after a driver's exit no result comes back to say so
            self.runtime.emit(Event("work_finished", self.workflow_id, self.internal_id,
                                    data={"status": CANCELLED, "reason": reason}))
        return n

    def unfinished_jobs(self) -> int:
        """How many of this work's jobs have no result yet."""
        if self._async is None:
            return 0
        return max(0, self._async.wait_num - self._async.done_count)

    @staticmethod
    def get_finished_status() -> list[str]:
        return [FINISHED]

    @staticmethod
    def get_subfinished_status() -> list[str]:
        return [SUBFINISHED]

    @staticmethod
    def get_failed_status() -> list[str]:
        return [FAILED, CANCELLED]

    @staticmethod
    def get_terminated_status() -> list[str]:
        return [FINISHED, SUBFINISHED, FAILED, CANCELLED]

    def _status_in(self, status, names: list[str]) -> bool:
        """iDDS style: test the status given (a string or an iDDS status), else the current one."""
        return status_name(self.get_status() if status is None else status) in names

    def is_terminated(self, status=None) -> bool:
        return self._status_in(status, self.get_terminated_status())

    def is_finished(self, status=None) -> bool:
        return self._status_in(status, self.get_finished_status())

    def is_subfinished(self, status=None) -> bool:
        return self._status_in(status, self.get_subfinished_status())

    def is_failed(self, status=None) -> bool:
        return self._status_in(status, self.get_failed_status())

    def stop_async_result(self) -> None:
        """Stop receiving results (iDDS); what arrived stays readable."""
        if self._async is not None:
            self._async.stop()

    def wait_results(self, timeout: float | None = None):
        """Block for the results (list, MapResult or value); raises TimeoutError if they are late."""
        if self._async is None:
            raise RuntimeError(f"work {self.name} has not been submitted; call submit() first")
        try:
            return self._async.wait_results(timeout=timeout)
        finally:
            if self._async.is_all_results_available:
                self._async.stop()

    def get_results(self):
        """The results so far, shaped as ``wait_results`` returns them (None before ``submit()``)."""
        return self._async.get_results() if self._async is not None else None

    def __repr__(self) -> str:
        return f"<Work {self.name} {self.internal_id[:8]} jobs={len(self.job_keys)} status={self.get_status()}>"


def work(func=None, *, workflow=None, pre_kwargs=None, name=None, return_work=False, map_results=False,
         lazy=False, init_env=None, no_wraps=False, container_options=None, job_key=None, post_script=None,
         max_walltime=None, core_count=1, total_memory=None, executor=None, queue=None, cache=None,
         parent_workload_id=None, no_wait_parent=False, input_datasets=None, output_file_name=None,
         enable_separate_log=False, output_dataset_name=None, log_dataset_name=None, num_events=None,
         num_events_per_job=None, parent_transform_id=None, parent_internal_id=None):
    """Make a function run as jobs: one per ``multi_jobs_kwargs_list`` (alias ``group_kwargs``) entry.

    The signature is iDDS's (PanDA/Rucio arguments kept on the Work, not acted on) plus iworkflow's
    ``max_walltime``, ``core_count``, ``total_memory``, ``executor``, ``queue`` and ``cache``.
    ``lazy`` is accepted as iDDS accepts it (unused there too); ``no_wraps=True`` skips ``functools.wraps``."""
    options = dict(pre_kwargs=pre_kwargs, name=name, map_results=map_results, init_env=init_env,
                   container_options=container_options, job_key=job_key, post_script=post_script,
                   max_walltime=max_walltime, core_count=core_count, total_memory=total_memory,
                   executor=executor, queue=queue, cache=cache, parent_workload_id=parent_workload_id,
                   no_wait_parent=no_wait_parent, input_datasets=input_datasets, output_file_name=output_file_name,
                   enable_separate_log=enable_separate_log, output_dataset_name=output_dataset_name,
                   log_dataset_name=log_dataset_name, num_events=num_events, num_events_per_job=num_events_per_job,
                   parent_transform_id=parent_transform_id, parent_internal_id=parent_internal_id)
    if func is None:
        return functools.partial(work, workflow=workflow, return_work=return_work, lazy=lazy, no_wraps=no_wraps,
                                 **options)
    _check_callable(func, "work")
    if _ignored("WORK"):
        return func
    if lazy:
        logger.debug("work %s: lazy=True is accepted as iDDS accepts it; it changes nothing", name or func)

    def wrapper(*args, **kwargs):
        multi = kwargs.pop("multi_jobs_kwargs_list", _UNSET)
        group = kwargs.pop("group_kwargs", _UNSET)
        if multi is not _UNSET and group is not _UNSET:
            raise ConfigurationError("pass multi_jobs_kwargs_list or its alias group_kwargs, not both")
        multi = group if multi is _UNSET else multi
        wf = kwargs.pop("workflow", None) or workflow or current_workflow()
        w = Work(func, args=args, kwargs=kwargs, multi_jobs_kwargs_list=None if multi is _UNSET else multi,
                 workflow=wf, **options)
        if return_work:
            return w
        if wf is not None and hasattr(wf, "add_work"):
            wf.add_work(w)
        w.submit()
        timeout = w.runtime.settings.result_timeout or None
        return w.wait_results(timeout=timeout)

    if not no_wraps:
        wrapper = functools.wraps(func)(wrapper)
    wrapper.__wrapped__ = func  # type: ignore[attr-defined] - even with no_wraps: workers unwrap by it
    wrapper.__iworkflow_work__ = options  # type: ignore[attr-defined]
    return wrapper


def run_work_distributed(w: Work):
    """iDDS's helper: submit a work and wait for its results (a failure raises instead of returning None)."""
    return w.run()


make_callable(__name__, work)
