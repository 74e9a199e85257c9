"""Fuzzing (hypothesis) the envelope decoder and a real worker's message handling: no input crashes either.

The decoders may only answer with a decoded message or ``InvalidMessage`` (of which ``BadSignature`` is a
kind).  The worker is a real :class:`iworkflow.worker.Worker` on the in-process bus with a real runner
process: every fuzzed job message must land in the dead-letter queue, no bus handler may raise, and the
worker must still run a valid job afterwards.
"""
from __future__ import annotations

import hmac
import json
import logging
import struct
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from iworkflow import serialization
from iworkflow.bus.memory import MemoryBus
from iworkflow.config import load_settings
from iworkflow.envelope import MAGIC, VERSION, decode, peek_header
from iworkflow.errors import InvalidMessage
from iworkflow.messages import (
    CONTROL_TOPIC,
    EVENTS_TOPIC,
    BlobChunk,
    BlobRequest,
    Control,
    JobPayload,
    ResultPayload,
    decode_event,
    decode_payload,
    encode_payload,
    jobs_destination,
    results_destination,
)
from iworkflow.worker import Worker

logger = logging.getLogger(__name__)

SECRET = b"fuzz-secret"
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WORKER_FUZZ = settings(max_examples=150, deadline=None,
                       suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10)
header_fields = st.fixed_dictionaries({}, optional={
    "v": json_values, "kind": st.sampled_from(["job", "result", "event", "control", "other"]) | json_values,
    "id": json_values, "workflow_id": json_values, "work_id": json_values, "job_key": json_values,
    "attempt": json_values, "ts": json_values})


def _valid_job() -> bytes:
    """The same signed job message every time (fixed id and timestamp), so hypothesis can replay mutations."""
    payload = JobPayload(func=serialization.dumps(abs), func_digest="abs", args=serialization.dumps(((-3,), {})))
    return encode_payload("job", payload, SECRET, workflow_id="wf", work_id="fuzz-work", job_key="k", attempt=1,
                          id="fuzz-job", ts=1700000000.0)


VALID_JOB = _valid_job()


def _signed(header: object, body: bytes) -> bytes:
    """A correctly signed envelope around any JSON header: what only a holder of the secret could send."""
    raw = json.dumps(header).encode()
    sig = hmac.digest(SECRET, raw + body, "sha256")
    return MAGIC + bytes([VERSION]) + struct.pack(">I", len(raw)) + raw + sig + body


@st.composite
def mutated(draw, original: bytes) -> bytes:
    """A valid message with bytes flipped, cut, inserted or deleted."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            del data[at]
    return bytes(data)


def _decoders_refuse_or_decode(data: bytes) -> None:
    for call in (lambda: decode(data, SECRET), lambda: peek_header(data), lambda: decode_event(data, SECRET),
                 lambda: decode_payload(data, SECRET, "job"), lambda: decode_payload(data, SECRET, "result")):
        try:
            call()
        except InvalidMessage:
            pass


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_only_ever_raise_invalid_message(data: bytes) -> None:
    """Random bytes are refused with InvalidMessage by every decoder, never another exception."""
    _decoders_refuse_or_decode(data)


@FUZZ
@given(st.binary(max_size=300))
def test_bytes_behind_a_valid_prefix_only_ever_raise_invalid_message(rest: bytes) -> None:
    """Bytes after a well-formed magic/version/length prefix reach the header and signature checks."""
    _decoders_refuse_or_decode(MAGIC + bytes([VERSION]) + struct.pack(">I", len(rest) // 2) + rest)


@FUZZ
@given(st.data())
def test_mutated_valid_messages_are_refused(data) -> None:
    """Any change to a signed job message makes every decoder refuse it (a signature covers every byte)."""
    original = VALID_JOB
    message = data.draw(mutated(original))
    assume(message != original)
    for expect in ("job", "result"):
        with pytest.raises(InvalidMessage):
            decode_payload(message, SECRET, expect)
    _decoders_refuse_or_decode(message)


@FUZZ
@given(st.one_of(header_fields, json_values), st.binary(max_size=64))
@example({"v": 1, "kind": "job", "id": "x", "ts": 1.0, "attempt": float("inf")}, b"")
@example(None, b"")
def test_signed_messages_with_any_header_only_ever_raise_invalid_message(header: object, body: bytes) -> None:
    """Even a correctly signed message with a nonsensical header or body is refused cleanly."""
    message = _signed(header, body)
    _decoders_refuse_or_decode(message)
    try:
        env = decode(message, SECRET)
    except InvalidMessage:
        return
    readers = {"control": Control.from_envelope, "blob_request": BlobRequest.from_envelope,
               "blob_chunk": BlobChunk.from_envelope}
    if env.kind in readers:
        try:
            readers[env.kind](env)
        except InvalidMessage:
            pass


@FUZZ
@given(st.sampled_from(["blob_request", "blob_chunk"]), st.binary(max_size=200))
@example("blob_chunk",
         struct.pack(">I", 83) + b'{"request_id": 1, "digest": "d", "index": "a", "count": [], "size": 0, "error": ""}')
def test_signed_blob_messages_with_any_body_only_ever_raise_invalid_message(kind: str, body: bytes) -> None:
    """A correctly signed blob request or chunk whose body is nonsense is refused cleanly."""
    from iworkflow.envelope import Envelope, encode

    env = decode(encode(Envelope(kind=kind, body=body), SECRET), SECRET)
    reader = BlobRequest.from_envelope if kind == "blob_request" else BlobChunk.from_envelope
    try:
        reader(env)
    except InvalidMessage:
        pass


class _HandlerFailures(logging.Handler):
    """Collects the bus's 'handler failed' reports: a handler that raised is a worker that crashed."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "handler" in record.getMessage():
            self.records.append(record)


class _LiveWorker:
    def __init__(self) -> None:
        self.bus = MemoryBus()
        self.settings = load_settings(broker="memory://", secret=SECRET.decode(), queue="fuzz", heartbeat_interval=60)
        self.worker = Worker(self.settings, self.bus, slots=1, name="fuzz-worker")
        self.dead: list[bytes] = []
        self.results: list[bytes] = []
        self.markers: list[bytes] = []
        self.cond = threading.Condition()
        self.bus.consume("dlq", self._collect(self.dead), prefetch=0)
        self.bus.consume(results_destination("fuzz-work"), self._collect(self.results), prefetch=0)
        self.bus.subscribe("fuzz-marker", self._collect(self.markers))
        self.failures = _HandlerFailures()
        logging.getLogger("iworkflow").addHandler(self.failures)
        self.worker.start()

    def _collect(self, into: list[bytes]):
        def handle(delivery) -> None:
            with self.cond:
                into.append(delivery.body)
                self.cond.notify_all()
            delivery.ack()
        return handle

    def wait(self, into: list[bytes], n: int, timeout: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(into) >= n, timeout)

    def close(self) -> None:
        logging.getLogger("iworkflow").removeHandler(self.failures)
        self.worker.stop(grace=10)
        self.bus.close()


@pytest.fixture(scope="module")
def live_worker() -> Iterator[_LiveWorker]:
    w = _LiveWorker()
    yield w
    w.close()


@WORKER_FUZZ
@given(st.one_of(st.binary(max_size=256), mutated(VALID_JOB),
                 st.builds(_signed, st.one_of(header_fields, json_values), st.binary(max_size=32))))
def test_a_worker_dead_letters_every_fuzzed_job_message_and_never_crashes(live_worker: _LiveWorker,
                                                                         message: bytes) -> None:
    """Whatever arrives on the jobs queue is dead-lettered, untouched, without a handler raising."""
    assume(message != VALID_JOB)
    live_worker.failures.records.clear()
    before = len(live_worker.dead)
    live_worker.bus.publish(jobs_destination("fuzz"), message)
    live_worker.bus.broadcast(CONTROL_TOPIC, message)
    live_worker.bus.broadcast(EVENTS_TOPIC, message)
    assert live_worker.wait(live_worker.dead, before + 1), "the fuzzed job message was dead-lettered"
    marks = len(live_worker.markers)
    live_worker.bus.broadcast("fuzz-marker", b"")
    assert live_worker.wait(live_worker.markers, marks + 1), "the bus handled everything sent before the marker"
    assert live_worker.dead[before] == message
    assert not live_worker.failures.records, live_worker.failures.records[0].getMessage()


def test_the_fuzzed_worker_still_runs_a_valid_job(live_worker: _LiveWorker) -> None:
    """After the fuzzing (this module's worker), a valid job runs and its result comes back (a fresh message:
    ``VALID_JOB`` is dated 2023, so a worker refuses it as a replay)."""
    payload = JobPayload(func=serialization.dumps(abs), func_digest="abs", args=serialization.dumps(((-3,), {})))
    fresh = encode_payload("job", payload, SECRET, workflow_id="wf", work_id="fuzz-work", job_key="k", attempt=1)
    live_worker.bus.publish(jobs_destination("fuzz"), fresh)
    assert live_worker.wait(live_worker.results, 1, timeout=30), "the valid job's result arrived"
    _env, result = decode_payload(live_worker.results[-1], SECRET, "result")
    assert isinstance(result, ResultPayload) and result.ok and serialization.loads(result.value) == 3
