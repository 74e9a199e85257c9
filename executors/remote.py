"""Shared by executors whose workers hand results back to the driver (Dask, Ray).

The worker runs ``run_job`` and returns the signed result bytes plus the lifecycle events; the
driver publishes both on the bus with ``deliver`` and then completes the job's Future.
"""
from __future__ import annotations

import logging
import os
from dataclasses import replace
from concurrent.futures import Future, InvalidStateError
from typing import TYPE_CHECKING

from iworkflow import job_context, result_store, runtime
from iworkflow.errors import ConfigurationError, InvalidMessage, JobLostError
from iworkflow.failures import WORKER_NAME, failure_message, result_message
from iworkflow.messages import EVENTS_TOPIC, Event, Job, decode_payload, encode_event, results_destination
from iworkflow.runner import run_encoded

if TYPE_CHECKING:
    from .base import Executor

logger = logging.getLogger(__name__)

SECRET_ENV = "IWORKFLOW_SECRET"
MB = 1024 * 1024


def run_job(data: bytes, with_events: bool, capture: bool,
            source: tuple[str, bytes] | None = None) -> tuple[bytes, list[Event]]:
    """Worker side: run one signed job with this worker's ``IWORKFLOW_SECRET``; return result and events.

    ``source`` is the job's source tarball (digest, bytes) as the engine moved it here (a Dask future, a Ray
    object: sent to each worker once); it goes to this worker's store, where the runner looks first.  In a
    worker process of its own, a large result travels back through the engine too."""
    if runtime._runtime is None:  # a worker process of its own: no store here is one the driver reads
        os.environ[result_store.INLINE_ENV] = "1"
    if source is not None:
        from iworkflow.source_shipping import local_store

        store = local_store()
        if not store.has(source[0]):
            store.put(*source)  # checks the digest
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        raise ConfigurationError(
            f"{SECRET_ENV} is not set on worker {WORKER_NAME}: start the workers with the driver's "
            f"{SECRET_ENV} in their environment (see docs/executors.md)")
    events: list[Event] = []
    if runtime._runtime is None:  # no driver here (a worker process of its own, not an in-process cluster)
        job_context.mark_process("worker")
    try:
        result = run_encoded(data, secret.encode(), events.append if with_events else None, capture=capture)
    except InvalidMessage as err:
        raise InvalidMessage(f"worker {WORKER_NAME} refused the job message ({err}); the worker's "
                             f"{SECRET_ENV} must equal the driver's") from None
    return result, events


def lost(engine: str, job: Job, err: BaseException) -> JobLostError:
    """The error reported for a job whose engine raised instead of returning a result."""
    return JobLostError(f"{engine} could not run job {job.job_key}: {type(err).__name__}: {err}")


def deliver(executor: Executor, job: Job, future: Future,
            outcome: tuple[bytes, list[Event]] | BaseException, engine: str) -> None:
    """Driver side: publish the job's events and result (or a failure for ``outcome`` errors), complete the Future."""
    if future.cancelled():
        return  # the submitter publishes the cancellation failure
    secret = executor.settings.secret_bytes
    try:
        if isinstance(outcome, BaseException):
            data = failure_message(job.data, lost(engine, job, outcome), secret)
        else:
            data, events = outcome
            for event in events:
                executor.bus.broadcast(EVENTS_TOPIC, encode_event(event, secret))
            data = _spilled_here(data, executor.settings)
        executor.bus.publish(results_destination(job.work_id, job.reply_to), data)
    except BaseException as err:  # noqa: BLE001 - the Future carries it, the core publishes the failure
        logger.error("could not publish the result of job %s: %s", job.job_key, err)
        _complete(future, err)
        return
    _complete(future, None)


def _spilled_here(data: bytes, settings) -> bytes:
    """A result message whose value is too large for the bus, with the value moved to this driver's store."""
    if len(data) <= max(result_store.MIN_SPILL_BYTES, settings.result_inline_max_mb * MB):
        return data
    env, payload = decode_payload(data, settings.secret_bytes, "result")
    if not payload.ok or payload.value is None or result_store.is_reference(payload.value):
        return data
    spilled = result_store.spill(payload.value, settings)
    if spilled is payload.value:
        return data
    return result_message(env.header(), replace(payload, value=spilled), settings.secret_bytes)


def source_of(job: Job) -> tuple[str, bytes] | None:
    """Driver side: the job's source tarball (digest, bytes), for an engine to move to its workers."""
    if job.source is None:
        return None
    from iworkflow.source_shipping import read

    return job.source.digest, read(job.source)


def _complete(future: Future, err: BaseException | None) -> None:
    try:
        if err is None:
            future.set_result(None)
        else:
            future.set_exception(err)
    except InvalidStateError:
        pass  # cancelled meanwhile
