"""Failure results: the one place that turns an exception into what a job reports when it did not succeed.

The runner (a job that raised), the driver (a job its executor refused), the executors and the worker (a
job whose process died, was cancelled or timed out) and the server (a job lost for good, a cancelled
workflow) all build their failure results here, so a failure reads the same wherever it happened.
"""
from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Mapping
from typing import Any, Callable

from . import serialization
from .envelope import peek_header
from .errors import ErrorInfo
from .messages import JobMetrics, ResultPayload, encode_payload

#: the worker a runner process serves (set by its pool, so results and events name the worker, not the runner)
WORKER_NAME_ENV = "IWORKFLOW_WORKER_NAME"
#: who ran a job, as a result's metrics name it: the worker's name, else ``host:pid``
WORKER_NAME = os.environ.get(WORKER_NAME_ENV) or f"{socket.gethostname()}:{os.getpid()}"


def _text(what: str, render: Callable[[], str], exc: BaseException) -> str:
    """``render()``, or a note saying it failed: a job's exception may raise from ``__str__`` itself."""
    try:
        return render()
    except BaseException as err:  # noqa: BLE001 - whatever a user's __str__ raises, the report goes out
        return f"<{what} of {type(exc).__qualname__} failed: {type(err).__qualname__}>"


def error_info(exc: BaseException, output_tail: str = "") -> ErrorInfo:
    """What an exception becomes on the wire: always its own type, even when ``str()`` or pickling fail.

    An exception never raised (a lost job's, a cancellation's) has no traceback to show."""
    try:
        pickled = serialization.dumps(exc)
    except BaseException:  # noqa: BLE001 - rebuilt from type_name and message instead
        pickled = None
    tb = ""
    if exc.__traceback__ is not None:
        tb = _text("traceback", lambda: "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)), exc)
    return ErrorInfo(
        type_name=f"{type(exc).__module__}.{type(exc).__qualname__}",
        message=_text("str()", lambda: str(exc), exc),
        traceback=tb,
        exception=pickled,
        output_tail=output_tail,
    )


def failure_result(exc: BaseException, *, attempt: int = 1, start: float | None = None,
                   worker: str = WORKER_NAME, output_tail: str = "") -> ResultPayload:
    """The failure result of a job that ended with ``exc`` (raised by it, or why it could not run)."""
    now = time.time()
    return ResultPayload(ok=False, error=error_info(exc, output_tail),
                         metrics=JobMetrics(now if start is None else start, now, worker, attempt))


def result_message(header: Mapping[str, Any], result: ResultPayload, secret: bytes) -> bytes:
    """A signed result message for the job ``header`` names (its workflow, work, key and attempt)."""
    return encode_payload(
        "result", result, secret,
        workflow_id=header.get("workflow_id"), work_id=header.get("work_id"),
        job_key=header.get("job_key"), attempt=int(header.get("attempt", 1) or 1),
    )


def failure_message(job: bytes | Mapping[str, Any], exc: BaseException, secret: bytes, *,
                    start: float | None = None, worker: str = WORKER_NAME) -> bytes:
    """A signed failure result for a job (its message, or its header) that did not run to completion."""
    header = peek_header(job) if isinstance(job, (bytes, bytearray, memoryview)) else job
    attempt = int(header.get("attempt", 1) or 1)
    return result_message(header, failure_result(exc, attempt=attempt, start=start, worker=worker), secret)
