"""Exceptions raised by iworkflow, and the rebuilding of exceptions raised by remote jobs."""
from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)


class IWorkflowError(Exception):
    """Base class of every error iworkflow raises itself."""


class ConfigurationError(IWorkflowError, ValueError):
    """A setting, argument or decorator option is wrong; the message says which and how to fix it."""


class InvalidMessage(IWorkflowError):
    """A wire message could not be decoded; it must be dead-lettered, never unpickled."""


class BadSignature(InvalidMessage):
    """A wire message whose HMAC does not match the shared secret."""


class JobTooOld(InvalidMessage):
    """A job message signed too long ago (``job_max_age``) or dated in the future (``clock_skew``): refused, as a
    captured message replayed later would be."""


class UnsafeArchiveError(IWorkflowError):
    """A source tarball holds a member that would escape the extraction directory."""


class SourceUnavailable(IWorkflowError, FileNotFoundError):
    """A worker could not obtain a job's source tree (nothing shared with its driver reached it)."""


class RemoteError(IWorkflowError):
    """A job failed remotely with an exception whose type cannot be rebuilt here."""

    def __init__(self, type_name: str, message: str, remote_traceback: str = ""):
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.remote_message = message
        self.remote_traceback = remote_traceback


class JobReportedFailure(IWorkflowError):
    """A job published a failure for itself (iDDS ``AsyncResult.publish(..., ret_status=False)``)."""


class BrokerError(IWorkflowError, ConnectionError):
    """The message broker cannot be reached or refused an operation; the message names the (redacted) URL."""


class JobLostError(IWorkflowError):
    """The process or worker running a job died before reporting a result."""


class WorkCancelled(IWorkflowError):
    """The job's work or workflow was cancelled before it ran."""


@dataclass(frozen=True)
class ErrorInfo:
    """What travels back when a job fails: enough to re-raise it or to show it on a dashboard."""

    type_name: str
    message: str
    traceback: str = ""
    exception: bytes | None = None
    output_tail: str = ""

    def summary(self) -> str:
        return f"{self.type_name}: {self.message}"

    def to_exception(self) -> BaseException:
        """Rebuild the remote exception with its own type when possible, with the remote traceback attached."""
        exc: BaseException | None = None
        if self.exception is not None:
            try:
                from .serialization import loads

                candidate = loads(self.exception)
                if isinstance(candidate, BaseException):
                    exc = candidate
            except Exception as err:  # the type may not be importable here
                logger.debug("cannot rebuild remote %s: %s", self.type_name, err)
        if exc is None:
            exc = RemoteError(self.type_name, self.message, self.traceback)
        exc.remote_traceback = self.traceback  # type: ignore[attr-defined]
        if self.traceback and hasattr(exc, "add_note"):
            notes = getattr(exc, "__notes__", [])
            note = "Remote traceback:\n" + self.traceback.rstrip()
            if note not in notes:
                exc.add_note(note)
        return exc
