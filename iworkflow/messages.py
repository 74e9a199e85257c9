"""Typed payloads carried in envelope bodies: jobs, results and events."""
from __future__ import annotations

import json
import pickle
import struct
import time
from dataclasses import asdict, dataclass, field
from operator import attrgetter
from typing import Any, Callable

from .envelope import Envelope, decode, encode, encode_fields
from .errors import ErrorInfo, InvalidMessage


class _Positional:
    """Pickles a frozen dataclass as its class and field values in order: no field names on the wire and no
    ``__setstate__`` walk, so each job or result message is ~100 bytes shorter and quicker to pickle and load."""

    __slots__ = ()
    _values: Callable[[Any], tuple] | None = None

    def __reduce__(self):
        cls = type(self)
        if cls.__dict__.get("_values") is None:  # set once per class, after @dataclass has listed the fields
            cls._values = staticmethod(attrgetter(*cls.__dataclass_fields__))
        return cls, cls._values(self)


@dataclass(frozen=True)
class SourceRef(_Positional):
    """Where a job finds the workflow's source tree: a content hash and the store that holds it, or the
    tarball itself (``data``: a detached driver's job carries its tree, since its submitter may be gone)."""

    digest: str
    store: str
    data: bytes | None = None


@dataclass(frozen=True)
class JobPayload(_Positional):
    """Everything a runner needs to execute one job.  ``func`` is pickled once per Work and shared."""

    func: bytes
    func_digest: str
    args: bytes
    source: SourceRef | None = None
    init_env: str | None = None
    container_options: dict | None = None
    max_walltime: float | None = None
    name: str = ""
    #: the executor the driver dispatched through (what an artifact saved by the job records as its lineage)
    executor: str = ""


@dataclass(frozen=True)
class JobMetrics(_Positional):
    start: float = 0.0
    end: float = 0.0
    worker: str = ""
    attempt: int = 1

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass(frozen=True)
class ResultPayload(_Positional):
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
    #: the driver's results queue, where the result goes (None: the work's own ``results.<work_id>``)
    reply_to: str | None = None
    #: how long the function's jobs have been taking in this driver (None: not known yet); executors may
    #: bundle short jobs into one message
    expected_seconds: float | None = None
    #: how many jobs the work fans out to in all (a work may be dispatched in several chunks)
    fanout: int = 1
    #: the source tree the job runs with (executors that move trees themselves read it: Dask, Ray)
    source: SourceRef | None = None


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
        # a shallow dict: ``asdict`` would deep-copy ``data`` (a whole fan-out's job list) first
        fields = {"type": self.type, "workflow_id": self.workflow_id, "work_id": self.work_id,
                  "job_key": self.job_key, "attempt": self.attempt, "ts": self.ts, "data": self.data}
        return _json.encode(fields).encode()

    @classmethod
    def from_json(cls, body: bytes) -> "Event":
        try:
            d = json.loads(body)
            return cls(**d)
        except (ValueError, TypeError) as err:
            raise InvalidMessage(f"malformed event body: {err}") from None


_json = json.JSONEncoder(default=str, separators=(",", ":"))


def results_destination(work_id: str | None, reply_to: str | None = None) -> str:
    """Where a job's result goes: the queue its driver named in ``reply_to``, else ``results.<work_id>``."""
    return reply_to or f"results.{work_id or ''}"


INBOX_PREFIX = "results.driver-"


def inbox_destination(driver_id: str) -> str:
    """The one results queue of a driver process, shared by all its works."""
    return INBOX_PREFIX + driver_id


def is_inbox(destination: str) -> bool:
    """Whether a driver's inbox reads this queue (it takes result bundles; a work's own queue may not)."""
    return destination.startswith(INBOX_PREFIX)


def jobs_destination(queue: str) -> str:
    return f"jobs.{queue}"


EVENTS_TOPIC = "events"
#: workers tell each other which of them holds which job (so a job that keeps losing its worker names it)
HOLDERS_TOPIC = "holders"
DEAD_LETTER_QUEUE = "dlq"


_LENGTH = struct.Struct(">I")


def encode_bundle(members: list[bytes], secret: bytes, **header: Any) -> bytes:
    """One signed message carrying several signed job (or result) messages of one work, sent and settled
    together: for short jobs, the broker then moves one message per bundle instead of one per job."""
    body = b"".join(_LENGTH.pack(len(m)) + m for m in members)
    return encode_fields("bundle", body, secret, **header)


def split_bundle(env: Envelope) -> list[bytes]:
    """The member messages of a verified bundle (each still signed: receivers verify them as usual)."""
    if env.kind != "bundle":
        raise InvalidMessage(f"expected a bundle message, got {env.kind!r}")
    body, pos, members = env.body, 0, []
    while pos < len(body):
        if pos + _LENGTH.size > len(body):
            raise InvalidMessage("bundle truncated inside a member's length")
        (length,) = _LENGTH.unpack_from(body, pos)
        pos += _LENGTH.size
        if pos + length > len(body):
            raise InvalidMessage("bundle truncated inside a member")
        members.append(body[pos : pos + length])
        pos += length
    return members


def encode_payload(kind: str, payload: Any, secret: bytes, **header: Any) -> bytes:
    return encode_fields(kind, pickle.dumps(payload, protocol=5), secret, **header)


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


def encode_event_batch(events_json: list[bytes], secret: bytes) -> bytes:
    """One signed message for many events (each ``Event.to_json()``): the body is their JSON array."""
    return encode(Envelope(kind="event", body=b"[" + b",".join(events_json) + b"]"), secret)


def decode_event(data: bytes, secret: bytes) -> Event:
    env = decode(data, secret)
    if env.kind != "event":
        raise InvalidMessage(f"expected an event message, got {env.kind!r}")
    return Event.from_json(env.body)


def decode_events(data: bytes, secret: bytes) -> list[Event]:
    """The events of a message from ``encode_event`` (one) or ``encode_event_batch`` (many)."""
    env = decode(data, secret)
    if env.kind != "event":
        raise InvalidMessage(f"expected an event message, got {env.kind!r}")
    if not env.body.lstrip().startswith(b"["):
        return [Event.from_json(env.body)]
    try:
        items = json.loads(env.body)
        return [Event(**item) for item in items]
    except (ValueError, TypeError) as err:
        raise InvalidMessage(f"malformed event batch: {err}") from None


#: each driver and worker serves blobs (source tarballs, large results) on its own queue ``blobs.<name>``
BLOBS_PREFIX = "blobs."
SOURCE, RESULT = "source", "result"


def blobs_destination(name: str) -> str:
    return BLOBS_PREFIX + name


@dataclass(frozen=True)
class BlobRequest:
    """Ask the process serving ``blobs.<name>`` for a source tarball or a stored result, by digest; the answer
    comes as ``BlobChunk`` messages on ``reply_to``."""

    what: str
    digest: str
    reply_to: str
    request_id: str

    def encode(self, secret: bytes) -> bytes:
        return encode(Envelope(kind="blob_request", body=json.dumps(asdict(self)).encode()), secret)

    @classmethod
    def from_envelope(cls, env: Envelope) -> "BlobRequest":
        if env.kind != "blob_request":
            raise InvalidMessage(f"expected a blob_request message, got {env.kind!r}")
        try:
            request = cls(**json.loads(env.body))
        except (ValueError, TypeError) as err:
            raise InvalidMessage(f"malformed blob request: {err}") from None
        if request.what not in (SOURCE, RESULT) or not all(
                isinstance(v, str) for v in (request.digest, request.reply_to, request.request_id)) or not (
                _is_digest(request.digest) and request.reply_to):
            raise InvalidMessage(f"malformed blob request {str(asdict(request))[:300]}")
        return request


def _is_digest(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


_META = struct.Struct(">I")


@dataclass(frozen=True)
class BlobChunk:
    """Part ``index`` of ``count`` of a blob of ``size`` bytes (each part a signed message of its own); a refused
    request is answered by one chunk with ``error`` set."""

    request_id: str
    digest: str
    index: int
    count: int
    size: int
    data: bytes = b""
    error: str = ""

    def encode(self, secret: bytes) -> bytes:
        meta = json.dumps({"request_id": self.request_id, "digest": self.digest, "index": self.index,
                           "count": self.count, "size": self.size, "error": self.error}).encode()
        return encode(Envelope(kind="blob_chunk", body=_META.pack(len(meta)) + meta + self.data), secret)

    @classmethod
    def from_envelope(cls, env: Envelope) -> "BlobChunk":
        if env.kind != "blob_chunk":
            raise InvalidMessage(f"expected a blob_chunk message, got {env.kind!r}")
        body = env.body
        try:
            (length,) = _META.unpack_from(body)
            meta = json.loads(body[_META.size : _META.size + length])
            chunk = cls(data=body[_META.size + length :], **meta)
        except (struct.error, ValueError, TypeError) as err:
            raise InvalidMessage(f"malformed blob chunk: {err}") from None
        numbers = (chunk.index, chunk.count, chunk.size)
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers) or not all(
                isinstance(t, str) for t in (chunk.request_id, chunk.digest, chunk.error)):
            raise InvalidMessage(f"malformed blob chunk header {str(meta)[:300]}")
        if not (0 <= chunk.index < max(chunk.count, 1)) or chunk.size < 0:
            raise InvalidMessage(f"blob chunk {chunk.index} of {chunk.count} is out of range")
        return chunk


CONTROL_TOPIC = "control"
RETRY, CANCEL = "retry", "cancel"


@dataclass(frozen=True)
class Control:
    """An instruction from the server: ``retry`` a lost job (sent to its work's results queue, where
    the driver holding the job resubmits it with ``attempt``), or ``cancel`` a workflow/work
    (broadcast on the control topic: workers drop its queued jobs and stop its running ones).

    ``failed``: a user's retry of a job that failed: the driver drops that failure (never a success) and
    resubmits the job, while the work is still running in it."""

    action: str
    workflow_id: str | None = None
    work_id: str | None = None
    job_key: str | None = None
    attempt: int = 1
    reason: str = ""
    failed: bool = False

    @classmethod
    def retry_failed(cls, workflow_id: str | None, work_id: str, job_key: str, attempt: int,
                     reason: str = "retry of a failed job asked through the server") -> "Control":
        """The retry a user asks for a failed job (as opposed to the monitor's retry of a lost one)."""
        return cls(action=RETRY, workflow_id=workflow_id, work_id=work_id, job_key=job_key, attempt=attempt,
                   reason=reason, failed=True)

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
