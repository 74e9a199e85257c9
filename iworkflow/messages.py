"""Typed payloads carried in envelope bodies: jobs, results and events."""
from __future__ import annotations

import json
import pickle
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .envelope import Envelope, decode, encode
from .errors import ErrorInfo, InvalidMessage


@dataclass(frozen=True)
class SourceRef:
    """Where a job finds the workflow's source tree: a content hash and the store that holds it."""

    digest: str
    store: str


@dataclass(frozen=True)
class JobPayload:
    """Everything a runner needs to execute one job.  ``func`` is pickled once per Work and shared."""

    func: bytes
    func_digest: str
    args: bytes
    source: SourceRef | None = None
    init_env: str | None = None
    container_options: dict | None = None
    max_walltime: float | None = None
    name: str = ""


@dataclass(frozen=True)
class JobMetrics:
    start: float = 0.0
    end: float = 0.0
    worker: str = ""
    attempt: int = 1

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass(frozen=True)
class ResultPayload:
    """A job's outcome: the pickled value, or the error that ended it."""

    ok: bool
    value: bytes | None = None
    error: ErrorInfo | None = None
    metrics: JobMetrics = field(default_factory=JobMetrics)


@dataclass(frozen=True)
class Job:
    """A job ready to dispatch: routing fields plus its signed wire bytes (what executors move around)."""

    id: str
    workflow_id: str
    work_id: str
    job_key: str
    attempt: int
    data: bytes
    queue: str = "default"
    core_count: int = 1
    total_memory: int = 4000
    max_walltime: float | None = None


@dataclass(frozen=True)
class Event:
    """A lifecycle event on the event stream (JSON body), consumed by the server's recorder."""

    type: str
    workflow_id: str | None = None
    work_id: str | None = None
    job_key: str | None = None
    attempt: int = 1
    ts: float = field(default_factory=time.time)
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), default=str, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, body: bytes) -> "Event":
        try:
            d = json.loads(body)
            return cls(**d)
        except (ValueError, TypeError) as err:
            raise InvalidMessage(f"malformed event body: {err}") from None


def results_destination(work_id: str) -> str:
    return f"results.{work_id}"


def jobs_destination(queue: str) -> str:
    return f"jobs.{queue}"


EVENTS_TOPIC = "events"
#: workers tell each other which of them holds which job (so a job that keeps losing its worker names it)
HOLDERS_TOPIC = "holders"
DEAD_LETTER_QUEUE = "dlq"


def encode_payload(kind: str, payload: Any, secret: bytes, **header: Any) -> bytes:
    body = pickle.dumps(payload, protocol=5)
    return encode(Envelope(kind=kind, body=body, **header), secret)


def decode_payload(data: bytes, secret: bytes, expect: str) -> tuple[Envelope, Any]:
    """Verify the signature first, then unpickle the body of a job or result message."""
    env = decode(data, secret)
    return env, load_payload(env, expect)


def load_payload(env: Envelope, expect: str) -> Any:
    """Unpickle the body of an envelope that ``decode`` has already verified."""
    if env.kind != expect:
        raise InvalidMessage(f"expected a {expect} message, got {env.kind!r}")
    try:
        payload = pickle.loads(env.body)
    except Exception as err:
        raise InvalidMessage(f"cannot unpickle {expect} body: {err!r}") from None
    wanted = JobPayload if expect == "job" else ResultPayload
    if not isinstance(payload, wanted):
        raise InvalidMessage(f"{expect} body holds {type(payload).__name__}, not {wanted.__name__}")
    return payload


def encode_event(event: Event, secret: bytes) -> bytes:
    return encode(
        Envelope(
            kind="event",
            body=event.to_json(),
            workflow_id=event.workflow_id,
            work_id=event.work_id,
            job_key=event.job_key,
            attempt=event.attempt,
            ts=event.ts,
        ),
        secret,
    )


def decode_event(data: bytes, secret: bytes) -> Event:
    env = decode(data, secret)
    if env.kind != "event":
        raise InvalidMessage(f"expected an event message, got {env.kind!r}")
    return Event.from_json(env.body)


CONTROL_TOPIC = "control"
RETRY, CANCEL = "retry", "cancel"


@dataclass(frozen=True)
class Control:
    """An instruction from the server: ``retry`` a lost job (sent to its work's results queue, where
    the driver holding the job resubmits it with ``attempt``), or ``cancel`` a workflow/work
    (broadcast on the control topic: workers drop its queued jobs and stop its running ones)."""

    action: str
    workflow_id: str | None = None
    work_id: str | None = None
    job_key: str | None = None
    attempt: int = 1
    reason: str = ""

    def encode(self, secret: bytes) -> bytes:
        return encode(Envelope(kind="control", body=json.dumps(asdict(self)).encode(),
                               workflow_id=self.workflow_id, work_id=self.work_id, job_key=self.job_key,
                               attempt=self.attempt), secret)

    @classmethod
    def from_envelope(cls, env: Envelope) -> "Control":
        try:
            return cls(**json.loads(env.body))
        except (ValueError, TypeError) as err:
            raise InvalidMessage(f"malformed control body: {err}") from None
