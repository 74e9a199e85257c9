"""Workflow: the driver function whose work calls become jobs, run here or detached as a job itself."""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import inspect
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from . import context
from .callable_module import make_callable
from .errors import ConfigurationError
from .idds_compat import WorkflowCanvas, WorkflowCompat, note_unused  # noqa: F401 - WorkflowCanvas: iDDS's name
from .ids import new_id
from .messages import Event, SourceRef
from .runtime import get_runtime
from .work import Work, _check_callable, _ignored

logger = logging.getLogger(__name__)


def _default_source_dir(func: Callable | None) -> str | None:
    if func is None:
        return None
    try:
        path = inspect.getsourcefile(func)
    except TypeError:
        return None
    if not path or not os.path.isfile(path):
        return None
    return os.path.dirname(os.path.abspath(path))


class Workflow(WorkflowCompat):
    """A run of a driver function: its id, its source tree and the works it submits.

    The signature is iDDS's plus iworkflow's ``queue``, ``site``, ``cloud``, ``core_count``, ``total_memory``,
    ``max_attempt``, ``executor`` and ``include_source_files`` (secret-looking files to ship on purpose)."""

    def __init__(self, func: Callable | None = None, service=None, source_dir=None, local: bool = False,
                 distributed: bool = True, pre_kwargs=None, args=None, kwargs=None, multi_jobs_kwargs_list=None,
                 current_job_kwargs=None, name: str | None = None, init_env: str | None = None,
                 is_unique_func_name: bool = False, max_walltime: float = 24 * 3600, core_count: int = 1,
                 total_memory: int = 4000, container_options=None, exclude_source_files=None, clean_env=None,
                 queue: str | None = None, site: str | None = None, cloud: str | None = None,
                 max_attempt: int = 5, executor: str | None = None, source_dir_parent_level=None,
                 post_script=None, context=None, enable_separate_log: bool = False, include_source_files=None):
        if func is not None:
            _check_callable(func, "workflow")
        self._func = func
        self.service = service
        self.local = local
        self.distributed = distributed
        self.pre_kwargs = dict(pre_kwargs or {})
        self.args = tuple(args or ())
        self.kwargs = dict(kwargs or {})
        self.multi_jobs_kwargs_list = list(multi_jobs_kwargs_list or [])
        self.current_job_kwargs = current_job_kwargs
        self.init_env = init_env
        self.container_options = container_options
        self.exclude_source_files = _as_list(exclude_source_files)
        self.include_source_files = _as_list(include_source_files)
        self.clean_env = clean_env
        self.post_script = post_script
        for option, value in (("clean_env", clean_env), ("post_script", post_script)):
            if value:
                logger.warning("workflow option %s=%r is accepted but not applied by iworkflow", option, value)
        self._source_dir = source_dir or _default_source_dir(func)
        if source_dir_parent_level and self._source_dir:
            for _ in range(int(source_dir_parent_level)):
                self._source_dir = os.path.dirname(self._source_dir)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y_%m_%d_%H_%M_%S")
        base = getattr(func, "__name__", "workflow")
        self._name = name or (base if is_unique_func_name else f"{base}_{stamp}")
        self._explicit_name = bool(name)
        self.internal_id = new_id()
        self._request_id: Any = None
        self.parent_id: str | None = None
        self.queue = queue
        self.site = site
        self.cloud = cloud
        self.core_count = core_count
        self.total_memory = total_memory
        self.max_walltime = max_walltime
        self.max_attempt = max_attempt
        self.executor = executor
        self.prepared = False
        self.enable_separate_log = enable_separate_log
        note_unused(f"workflow {self._name}", {"service": service, "context": context, "site": site,
                                                  "cloud": cloud, "enable_separate_log": enable_separate_log})
        self.works: list[Work] = []
        self._source: SourceRef | None = None
        self._source_lock = threading.Lock()
        self._token = None
        self._registered = False
        self._ended = False
        self._detached_work: Work | None = None
        self._produced: dict[int, tuple[Any, str]] = {}

    # --- iDDS-compatible properties --------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = value

    @property
    def source_dir(self) -> str | None:
        return self._source_dir

    @functools.cached_property
    def driver_key(self) -> str:
        """Which driver this is, to find its earlier runs for a resume: a given name, else its function."""
        if self._explicit_name or self._func is None:
            return f"name:{self._name}"
        func = inspect.unwrap(self._func)
        try:
            path = inspect.getsourcefile(func) or ""
        except TypeError:
            path = ""
        name = f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', type(func).__name__)}"
        return f"{os.path.abspath(path) if path else ''}:{name}"

    # --- source cache ----------------------------------------------------------------------
    def source_ref(self) -> SourceRef | None:
        """Pack the source tree into the source cache once per run (identical trees are stored once)."""
        if self._source is None and self._source_dir:
            with self._source_lock:
                if self._source is None:
                    settings = get_runtime().settings
                    store = _source_store(settings)
                    digest = store.add_tree(self._source_dir, self.exclude_source_files, settings.max_source_mb,
                                            self.include_source_files)
                    self._source = SourceRef(digest=digest, store=store.location)
        return self._source

    def prepare(self) -> "Workflow":
        """Put the source tree in the source cache now (else the first work does it)."""
        self.source_ref()
        self.prepared = True
        return self

    # --- running ---------------------------------------------------------------------------
    def add_work(self, work: Work) -> None:
        self.works.append(work)

    def note_result(self, value: Any, work_id: str) -> None:
        """Remember which work produced a value, to draw work -> work edges when it is passed on."""
        if _traceable(value):
            self._produced[id(value)] = (value, work_id)

    def parents_of(self, values: Any, declared: bool = True) -> list[str]:
        """Ids of earlier works whose results (or MapResult/Work) appear among these arguments, or (``declared``)
        are named by an enclosing ``depends_on`` block."""
        found: list[str] = []
        stack, seen = [values, list(context.declared_sources()) if declared else []], 0
        while stack and seen < 10_000:
            value = stack.pop()
            seen += 1
            work_id = None
            if isinstance(value, Work):
                work_id = value.internal_id
            elif getattr(value, "_work_id", None):
                work_id = value._work_id
            elif _traceable(value) and id(value) in self._produced and self._produced[id(value)][0] is value:
                work_id = self._produced[id(value)][1]
            if work_id is not None:
                if work_id not in found:
                    found.append(work_id)
                continue
            if isinstance(value, dict):
                stack.extend(value.values())
            elif isinstance(value, (list, tuple)):
                stack.extend(value)
        return found

    def _register(self) -> None:
        if not self._registered:
            self._registered = True
            get_runtime().emit(Event("workflow_started", self.internal_id, data={
                "name": self.name, "parent_id": self.parent_id, "local": self.local}))

    def _end(self, exc: BaseException | None) -> None:
        if self._registered and not self._ended:
            self._ended = True
            data: dict[str, Any] = {"status": "finished" if exc is None else "failed"}
            if exc is not None:
                data["error"] = f"{type(exc).__name__}: {exc}"
            get_runtime().emit(Event("workflow_finished", self.internal_id, data=data))

    def __enter__(self) -> "Workflow":
        parent = context.current_workflow()
        if parent is not None and parent is not self:
            self.parent_id = parent.internal_id
        self._token = context.push(self)
        self._register()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._token is not None:
            context.pop(self, self._token)
            self._token = None
        self._end(exc)

    def run(self) -> Any:
        """Run the driver function here, with this workflow current; returns the function's value."""
        if self._func is None:
            raise ConfigurationError("this Workflow has no function to run; pass func=")
        with self:
            return self._func(*self.args, **{**self.pre_kwargs, **self.kwargs})

    def submit(self) -> str:
        """Register the workflow and return its id at once.

        As in iDDS, a ``local=True`` workflow is only registered: its driver then runs here (``run()`` or
        ``with wf:``), and works join it with ``workflow=wf``.  Otherwise the driver itself runs as a job."""
        if self.local:
            self._register()
            return self.request_id
        if self._func is None:
            raise ConfigurationError("this Workflow has no function to submit; pass func=")
        if self._detached_work is not None:
            raise RuntimeError(f"workflow {self.name} was already submitted")
        self.source_ref()  # packed here: the driver job carries the ref, its worker may not see source_dir
        w = Work(_run_detached, args=(self,), name=f"{self.name}.driver", workflow=self, init_env=self.init_env,
                 container_options=self.container_options, max_walltime=self.max_walltime,
                 core_count=self.core_count, total_memory=self.total_memory, cache=False)
        w.detached_driver = True
        self._detached_work = w
        w.submit()
        return self.internal_id

    def wait(self, timeout: float | None = None) -> Any:
        """For a detached workflow: wait for the driver job and return its value (or raise its error)."""
        if self._detached_work is None:
            raise RuntimeError(f"workflow {self.name} was not submitted; use submit() or call it with local=False")
        return self._detached_work.wait_results(timeout=timeout)

    result = wait

    def close(self) -> None:
        """Stop receiving results for this workflow's works; a registered workflow is recorded as ended."""
        for w in self.works:
            w.stop_async_result()
        self._end(None)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["works"] = []
        state["_source_lock"] = None
        state["_token"] = None
        state["_detached_work"] = None
        state["_registered"] = state["_ended"] = False
        state["_produced"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._source_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Workflow {self.name} {self.internal_id}>"


@contextlib.contextmanager
def depends_on(*sources: Any) -> Iterator[None]:
    """Works called inside this block depend on ``sources`` (a Work, its MapResult or a value it returned), and
    the DAG draws those edges: for arguments derived from results (a ``max``, a sum, a parameter picked from
    them), which keep no trace of where they came from.  ``None`` entries are skipped."""
    wf = context.current_workflow()
    sources = tuple(s for s in sources if s is not None)
    if wf is None:
        raise ConfigurationError("depends_on() is used inside a workflow: call it from the @workflow function")
    for source in sources:
        if not wf.parents_of([source], declared=False):
            raise ConfigurationError(
                f"depends_on() got {type(source).__name__} {str(source)[:60]!r}, which no work of this workflow "
                "returned: pass the Work, its MapResult, or a result value exactly as a work returned it")
    with context.declaring(sources):
        yield


def _traceable(value: Any) -> bool:
    """Values whose identity can say where they came from: not None, bools, short strings, or the small ints
    CPython shares (-5..256: every 7 is the same object); a larger int a work returned is an object of its own."""
    if value is None or isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not -5 <= value <= 256
    return not (isinstance(value, str) and len(value) < 64)


def _source_store(settings):
    from .source_http import source_store

    return source_store(settings)


def _run_detached(wf: Workflow) -> Any:
    """The job body of a detached workflow: the driver runs on a worker with its workflow current."""
    wf.local = True
    return wf.run()


def workflow(func=None, *, local=False, service=None, source_dir=None, primary=False, queue=None, site=None,
             cloud=None, max_walltime=24 * 3600, distributed=True, init_env=None, pre_kwargs=None,
             return_workflow=False, no_wraps=False, source_dir_parent_level=None, exclude_source_files=None,
             enable_separate_log=False, clean_env=None, core_count=1, total_memory=4000, container_options=None,
             max_attempt=5, name=None, post_script=None, executor=None, include_source_files=None):
    """Mark a driver function.  ``local=True`` runs it here and returns its value; ``local=False``
    submits it as a job and returns the Workflow at once; ``return_workflow=True`` returns it unrun.

    ``primary`` is accepted as iDDS accepts it (unused there too); ``no_wraps=True`` skips ``functools.wraps``."""
    options = dict(local=local, service=service, source_dir=source_dir, queue=queue, site=site, cloud=cloud,
                   max_walltime=max_walltime, distributed=distributed, init_env=init_env, pre_kwargs=pre_kwargs,
                   source_dir_parent_level=source_dir_parent_level, exclude_source_files=exclude_source_files,
                   clean_env=clean_env, core_count=core_count, total_memory=total_memory,
                   container_options=container_options, max_attempt=max_attempt, name=name,
                   post_script=post_script, executor=executor, enable_separate_log=enable_separate_log,
                   include_source_files=include_source_files)
    if func is None:
        return functools.partial(workflow, return_workflow=return_workflow, primary=primary, no_wraps=no_wraps,
                                 **options)
    _check_callable(func, "workflow")
    if _ignored("WORKFLOW"):
        return func
    if primary:
        logger.debug("workflow %s: primary=True is accepted as iDDS accepts it; it changes nothing", name or func)

    def wrapper(*args, **kwargs):
        wf = Workflow(func, args=args, kwargs=kwargs, **options)
        if return_workflow:
            return wf
        if local:
            return wf.run()
        wf.submit()
        return wf

    if not no_wraps:
        wrapper = functools.wraps(func)(wrapper)
    wrapper.__wrapped__ = func  # type: ignore[attr-defined] - even with no_wraps: workers unwrap by it
    wrapper.__iworkflow_workflow__ = options  # type: ignore[attr-defined]
    return wrapper


def _as_list(value) -> list:
    """iDDS accepts one pattern or a list of them."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


make_callable(__name__, workflow)
