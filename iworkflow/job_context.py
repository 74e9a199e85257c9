"""Which job is running here: what the job runner knows of the call it executes, for code inside the job.

``iworkflow.artifacts`` reads it to record how a saved artifact was made (workflow, work, job key, call
identity, executor, worker).  Set by ``iworkflow.runner.execute`` around the job's function only.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .identity import call_identity, work_identity

if TYPE_CHECKING:
    from .envelope import Envelope
    from .messages import JobPayload


@dataclass(frozen=True)
class JobContext:
    """The call a runner is executing: its routing fields and the parts of its call identity (the digests are
    computed when first asked for: most jobs never need them)."""

    workflow_id: str | None
    work_id: str | None
    work_name: str
    job_key: str | None
    attempt: int
    func_digest: str
    source_digest: str | None
    executor: str
    worker: str
    args: bytes = field(repr=False, default=b"")
    init_env: str | None = field(repr=False, default=None)
    container_options: Any = field(repr=False, default=None)

    @classmethod
    def of(cls, env: Envelope, payload: JobPayload, worker: str) -> JobContext:
        """The context of one job message."""
        return cls(workflow_id=env.workflow_id, work_id=env.work_id, work_name=payload.name, job_key=env.job_key,
                   attempt=env.attempt, func_digest=payload.func_digest,
                   source_digest=payload.source.digest if payload.source else None, executor=payload.executor,
                   worker=worker, args=payload.args, init_env=payload.init_env,
                   container_options=payload.container_options)

    @functools.cached_property
    def args_digest(self) -> str:
        return hashlib.sha256(self.args).hexdigest()

    @functools.cached_property
    def call_identity(self) -> str:
        """As ``iworkflow.identity`` computes it in the driver (function, source, environment, arguments)."""
        work = work_identity(self.func_digest, self.source_digest, self.init_env, self.container_options)
        return call_identity(work, self.args)


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar("iworkflow_job", default=None)
_running: list[JobContext] = []
_lock = threading.Lock()
#: what this process is: "driver" (jobs may run in its threads beside the user's code), "runner" (runs one job
#: at a time and nothing else: a local pool process, a job subprocess) or "worker" (a Dask or Ray worker
#: running jobs in several threads)
_process_role = "driver"


def mark_process(role: str) -> None:
    """Say what this process is (see ``_process_role``); set by the runner and the remote-executor entry points."""
    global _process_role
    if role not in ("driver", "runner", "worker"):
        raise ValueError(f"unknown process role {role!r}")
    _process_role = role


def process_role() -> str:
    return _process_role


def current_job() -> JobContext | None:
    """The job running in this context; in a thread a job started, the job of a runner process (it runs one)."""
    job = _current.get()
    if job is None and _process_role == "runner":
        with _lock:
            if len(_running) == 1:
                return _running[0]
    return job


@contextlib.contextmanager
def running(job: JobContext) -> Iterator[JobContext]:
    """Make ``job`` current while its function runs."""
    token = _current.set(job)
    with _lock:
        _running.append(job)
    try:
        yield job
    finally:
        with _lock:
            _running.remove(job)
        _current.reset(token)
