"""What iDDS's iWorkflow API carries that iworkflow's own model does not need, kept so its code runs.

* PanDA/Rucio settings (datasets, workload ids, log datasets...): accepted, readable, not used (DEBUG log);
* status names: iDDS passes ``TransformStatus`` values around, iworkflow plain strings; both are understood;
* stored contexts: ``store()`` writes a JSON record of a Workflow or Work, ``load()`` reads it back;
* the iDDS-only methods and attributes of ``Work`` and ``Workflow``, as the mixins ``WorkCompat`` and
  ``WorkflowCompat`` (so ``work.py`` and ``workflow.py`` hold iworkflow's own model).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from . import context
from .serialization import jsonable

logger = logging.getLogger(__name__)


def note_unused(owner: str, given: dict[str, Any]) -> None:
    """Log at DEBUG the PanDA/Rucio-only settings a call passed: accepted, kept, not acted on."""
    used = {k: v for k, v in given.items()
            if v is not None and v is not False and not (isinstance(v, (list, tuple, dict)) and not v)}
    if used:
        logger.debug("%s: PanDA/Rucio settings kept but not used by iworkflow: %s", owner,
                     ", ".join(f"{k}={v!r}" for k, v in sorted(used.items())))


class OtherAttribute:
    """A Work attribute kept in its ``other_attributes`` dict, as iDDS keeps it."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else obj.other_attributes.get(self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        obj.other_attributes[self.name] = value


class WorkflowSetting:
    """A Work setting read from its workflow unless the work sets its own (``work.site = ...``), as iDDS's
    ``WorkContext`` reads it; the default when neither has one."""

    def __init__(self, default: Any = None):
        self.default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        if self.name in obj.__dict__:
            return obj.__dict__[self.name]
        value = getattr(obj.workflow, self.name, None)
        return self.default if value is None else value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.name] = value


def status_name(status: Any) -> str:
    """``'finished'`` for ``'finished'``, ``'Finished'`` or an iDDS ``TransformStatus.Finished``."""
    if status is None:
        return "none"
    return str(getattr(status, "name", status)).lower()


def context_path(name: str, source_dir: str | os.PathLike | None = None) -> Path:
    """Where ``store()`` keeps a record: ``<source_dir>/<name>.json`` if given, else under the iworkflow home.

    Not in the shipped source tree by default: a new file there would change the tree's content hash."""
    if not name or "/" in name or name.startswith("."):
        from .errors import ConfigurationError

        raise ConfigurationError(f"cannot store a context named {name!r}: give the workflow or work a plain name")
    if source_dir is not None:
        return Path(source_dir) / f"{name}.json"
    from .runtime import get_runtime

    return Path(get_runtime().settings.home) / "contexts" / f"{name}.json"


def save_context(name: str, content: dict[str, Any], source_dir: str | os.PathLike | None = None) -> Path:
    path = context_path(name, source_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.part")
    tmp.write_text(json.dumps({k: jsonable(v) for k, v in content.items()}, indent=1, sort_keys=True))
    os.replace(tmp, path)
    logger.info("stored the context of %s in %s", name, path)
    return path


def load_context(name: str, source_dir: str | os.PathLike | None = None) -> dict[str, Any] | None:
    path = context_path(name, source_dir)
    if not path.is_file():
        logger.info("no stored context %s", path)
        return None
    return json.loads(path.read_text())


class WorkCompat:
    """The iDDS-only part of ``Work``'s API: PanDA/Rucio settings, stored contexts, ``pre_run()``, names."""

    input_datasets = OtherAttribute()
    output_file_name = OtherAttribute()
    output_dataset_name = OtherAttribute()
    log_dataset_name = OtherAttribute()
    num_events = OtherAttribute()
    num_events_per_job = OtherAttribute()
    parent_transform_id = OtherAttribute()
    #: the internal id of the work this one depends on (iDDS); recorded as a DAG edge by ``Work.submit()``
    parent_internal_id = OtherAttribute()
    # PanDA settings iDDS reads from the workflow unless the work sets its own
    site = WorkflowSetting()
    cloud = WorkflowSetting()
    vo = WorkflowSetting()
    working_group = WorkflowSetting()
    priority = WorkflowSetting(500)
    max_attempt = WorkflowSetting(5)
    username = WorkflowSetting()
    userdn = WorkflowSetting()
    lifetime = WorkflowSetting(7 * 24 * 3600)
    token = WorkflowSetting()
    workflow_type = "iWork"

    def _keep_idds_settings(self, parent_internal_id, job_key, inputs, input_map, inputs_group,
                            **panda: Any) -> None:
        note_unused(f"work {self.name}", panda)
        self.other_attributes: dict[str, Any] = {**panda, "parent_internal_id": parent_internal_id,
                                                 "job_key": job_key}
        self.parent_workload_id = panda["parent_workload_id"]
        self.no_wait_parent = panda["no_wait_parent"]
        self.enable_separate_log = panda["enable_separate_log"]
        self.inputs, self.input_map, self.inputs_group = inputs, input_map, inputs_group
        # ids a PanDA server hands out in iDDS; readable and settable, never set by iworkflow
        self.transform_id = self.processing_id = self.workload_id = None

    def _input_kwargs(self) -> dict[str, Any]:
        """iDDS's ``inputs``/``input_map`` (one comma-joined argument) and ``inputs_group`` (extra kwargs)."""
        extra = dict(self.inputs_group or {})
        if self.inputs and self.input_map:
            extra[self.input_map] = ",".join(str(i) for i in self.inputs)
        return extra

    @property
    def _context(self):
        """iDDS code reaches a work's settings through ``work._context``: here the work holds them itself."""
        return self

    @property
    def request_id(self):
        return getattr(self.workflow, "request_id", None)

    @property
    def service(self):
        return getattr(self.workflow, "service", None)

    @property
    def job_key(self):
        """The ``job_key`` given (a string or a callable of the kwargs entry), or None."""
        return self._job_key

    def get_parent_internal_id(self):
        return self.parent_internal_id

    def get_parent_transform_id(self):
        return self.parent_transform_id

    def get_parent_workload_id(self):
        return self.parent_workload_id

    def get_other_attribute(self, name: str):
        return self.other_attributes.get(name)

    def set_other_attribute(self, name: str, value: Any) -> None:
        self.other_attributes[name] = value

    def add_other_attributes(self, other_attributes: dict) -> None:
        self.other_attributes.update(other_attributes)

    def get_func_name(self) -> str:
        """``module:qualname`` of the function."""
        return f"{getattr(self._func, '__module__', '')}:{getattr(self._func, '__qualname__', self.name)}"

    def get_work_name(self) -> str:
        return self.name

    def get_work_tag(self) -> str:
        return self.workflow_type

    get_work_type = get_work_tag

    def get_site(self):
        return self.site

    def get_workload_id(self):
        return self.workload_id

    def get_multi_jobs_kwargs_list(self) -> list:
        return list(self.multi_jobs_kwargs_list)

    def setup(self) -> str | None:
        """The command prefix this work's jobs run behind (``init_env``, its own or the workflow's)."""
        return self.init_env.strip() if self.init_env else None

    def get_clean_env(self):
        return getattr(self.workflow, "clean_env", None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (what ``store()`` writes)."""
        return {"type": "work", "name": self.name, "internal_id": self.internal_id,
                "workflow_id": self.workflow_id, "function": self.get_func_name(), "job_key": repr(self._job_key),
                "multi_jobs_kwargs_list": [jsonable(e) for e in self.multi_jobs_kwargs_list],
                "init_env": self.init_env, "container_options": jsonable(self.container_options),
                "other_attributes": {k: jsonable(v) for k, v in self.other_attributes.items()}}

    def store(self, source_dir=None) -> None:
        """Write this work's description as JSON (``load()`` reads it back), as iDDS's ``store()``."""
        save_context(self.name, self.to_dict(), source_dir)

    def load(self, source_dir=None) -> None:
        """Read back what ``store()`` wrote: the kwargs entries of a work not submitted yet (as iDDS)."""
        content = load_context(self.name, source_dir)
        if content and "multi_jobs_kwargs_list" in content:
            if self._async is not None:
                raise RuntimeError(f"work {self.name} was already submitted; load() before submit()")
            self.multi_jobs_kwargs_list = list(content["multi_jobs_kwargs_list"])
            self.is_multi = bool(self.multi_jobs_kwargs_list)
            self._jobs_spec = self._expand()
            self.job_keys = [k for k, _, _, _ in self._jobs_spec]
            self.job_args = {k: entry for k, entry, _, _ in self._jobs_spec}

    def pre_run(self) -> bool:
        """iDDS's check that results reach this driver (a probe value published and read back)."""
        from .asyncresult import AsyncResult

        return AsyncResult(self, wait_num=1, timeout=30).is_ok() if self.distributed else True


class WorkflowCompat:
    """The iDDS-only part of ``Workflow``'s API: PanDA settings, stored contexts, ``pre_run()``, names."""

    vo = working_group = username = userdn = workload_id = token = None
    priority = 500
    lifetime = 7 * 24 * 3600

    @property
    def _context(self):
        """iDDS code reaches a workflow's settings through ``wf._context`` (e.g. to build an AsyncResult)."""
        return self

    @property
    def request_id(self):
        """The workflow's id (a server's request id in iDDS); ``set_request_id`` may give another."""
        return self._request_id if self._request_id is not None else self.internal_id

    @request_id.setter
    def request_id(self, value) -> None:
        self._request_id = value

    def set_request_id(self, request_id) -> None:
        self.request_id = request_id

    @property
    def workflow_type(self) -> str:
        return "iWorkflowLocal" if self.local else "iWorkflow"

    def get_work_tag(self) -> str:
        return self.workflow_type

    get_work_type = get_work_tag

    def get_work_name(self) -> str:
        return self.name

    def get_func_name(self) -> str | None:
        """``module:qualname`` of the driver function."""
        if self._func is None:
            return None
        return f"{getattr(self._func, '__module__', '')}:{getattr(self._func, '__qualname__', self.name)}"

    def get_site(self):
        return self.site

    def get_workload_id(self):
        return self.workload_id

    def get_source_dir(self, func=None, source_dir=None, source_dir_parent_level=None) -> str | None:
        """This workflow's source folder; with arguments, the folder iDDS would pick for them."""
        if func is None and source_dir is None:
            return self.source_dir
        from .workflow import _default_source_dir

        folder = source_dir or _default_source_dir(func)
        for _ in range(int(source_dir_parent_level or 0)):
            folder = os.path.dirname(folder) if folder else folder
        return folder

    def setup(self) -> str | None:
        """The command prefix jobs run behind (``init_env``), as iDDS's ``setup()`` returns it."""
        return self.init_env.strip() if self.init_env else None

    def get_clean_env(self):
        return self.clean_env

    def setup_source_files(self) -> None:
        """iDDS downloads the sources from PanDA here; jobs fetch them from the source cache: nothing to do."""
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (what ``store()`` writes)."""
        return {"type": "workflow", "name": self.name, "internal_id": self.internal_id,
                "request_id": jsonable(self.request_id), "function": self.get_func_name(),
                "source_dir": self.source_dir, "local": self.local, "init_env": self.init_env,
                "container_options": jsonable(self.container_options), "queue": self.queue, "site": self.site,
                "cloud": self.cloud, "exclude_source_files": self.exclude_source_files,
                "multi_jobs_kwargs_list": [jsonable(e) for e in self.multi_jobs_kwargs_list]}

    def store(self, source_dir=None) -> None:
        """Write this workflow's description as JSON (``load()`` reads it back), as iDDS's ``store()``.

        Kept under the iworkflow home unless ``source_dir`` is given: a new file in the shipped source tree
        would change its content hash on every run."""
        save_context(self.name, self.to_dict(), source_dir)

    def load(self, source_dir=None) -> None:
        """Read back what ``store()`` wrote (its ``multi_jobs_kwargs_list``, as iDDS)."""
        content = load_context(self.name, source_dir)
        if content and "multi_jobs_kwargs_list" in content:
            self.multi_jobs_kwargs_list = list(content["multi_jobs_kwargs_list"])

    def pre_run(self) -> bool:
        """iDDS's check before running: True when results reach this driver (a probe published, read back)."""
        if not self.distributed:
            return True
        from .asyncresult import AsyncResult

        return AsyncResult(self, wait_num=1, timeout=30).is_ok()


class WorkflowCanvas:
    """iDDS's stack of managed workflows, kept over iworkflow's current-workflow context."""

    _pushed: list[tuple[Any, Any]] = []

    @classmethod
    def push_managed_workflow(cls, workflow) -> None:
        cls._pushed.append((workflow, context.push(workflow)))

    @classmethod
    def pop_managed_workflow(cls):
        if not cls._pushed:
            return None
        wf, token = cls._pushed.pop()
        context.pop(wf, token)
        return wf

    @classmethod
    def get_current_workflow(cls):
        return context.current_workflow()
