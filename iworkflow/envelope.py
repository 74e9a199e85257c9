"""The versioned, HMAC-signed envelope every message travels in.

Wire layout: ``b"IWF" + version(1 byte) + header length (4 bytes, big endian) + header JSON +
signature (32 bytes) + body``.  The signature is HMAC-SHA256 over header JSON and body, so a
receiver verifies before it ever unpickles the body.  A job's header may carry ``reply_to``, the
queue its result goes to (the driver's results queue), and what a worker must know without unpickling
the body: ``driver`` (a detached workflow's driver job), ``walltime`` (its ``max_walltime``) and
``source``/``source_from`` (its source tree's digest, and the driver queue that serves it).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import math
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import BadSignature, InvalidMessage
from .ids import random_hex

MAGIC = b"IWF"
VERSION = 1
KINDS = ("job", "result", "event", "control", "bundle", "blob_request", "blob_chunk")
_PREFIX = struct.Struct(">3sBI")
_SIG_LEN = 32


@dataclass(frozen=True)
class Envelope:
    """One message: routing header fields plus an opaque body (pickle for jobs/results, JSON for events)."""

    kind: str
    body: bytes
    workflow_id: str | None = None
    work_id: str | None = None
    job_key: str | None = None
    attempt: int = 1
    id: str = field(default_factory=lambda: _message_id())
    ts: float = field(default_factory=time.time)
    v: int = VERSION
    #: where a job's result goes (the driver's results queue); absent: ``results.<work_id>``
    reply_to: str | None = None
    #: a detached workflow's driver job (workers run it outside their job slots)
    driver: bool = False
    #: a job's ``max_walltime`` in seconds (None: unbounded)
    walltime: float | None = None
    #: a job's source tree (sha256) and the queue of the driver that serves it over the bus (``blob_transfer``)
    source: str | None = None
    source_from: str | None = None

    def header(self) -> dict:
        return _header(self.kind, self.id, self.ts, self.workflow_id, self.work_id, self.job_key, self.attempt,
                       self.reply_to, self.driver, self.walltime, self.source, self.source_from, self.v)


def _header(kind: str, id: str, ts: float, workflow_id: str | None, work_id: str | None, job_key: str | None,
            attempt: int, reply_to: str | None, driver: bool, walltime: float | None, source: str | None,
            source_from: str | None, v: int = VERSION) -> dict:
    """The header every envelope carries, in wire order (the one place it is built)."""
    header = {"v": v, "kind": kind, "id": id, "workflow_id": workflow_id, "work_id": work_id, "job_key": job_key,
              "attempt": attempt, "ts": ts}
    if reply_to:
        header["reply_to"] = reply_to
    if driver:
        header["driver"] = True
    if walltime:
        header["walltime"] = walltime
    if source:
        header["source"] = source
    if source_from:
        header["source_from"] = source_from
    return header


_json = json.JSONEncoder(separators=(",", ":"))
_json_decode = json.JSONDecoder().decode


def _message_id() -> str:
    return random_hex(12)


_pads: dict[bytes, tuple[Any, Any]] = {}


def _keyed(secret: bytes) -> tuple[Any, Any]:
    """HMAC-SHA256's inner and outer hashes, already fed the padded key (RFC 2104), kept per secret."""
    pads = _pads.get(secret)
    if pads is None:
        key = hashlib.sha256(secret).digest() if len(secret) > 64 else secret
        key = key.ljust(64, b"\0")
        pads = (hashlib.sha256(bytes(k ^ 0x36 for k in key)), hashlib.sha256(bytes(k ^ 0x5C for k in key)))
        if len(_pads) > 16:
            _pads.clear()
        _pads[secret] = pads
    return pads


def _sign(secret: bytes, header: bytes, body: bytes) -> bytes:
    """HMAC-SHA256 of header then body, from copies of the keyed hashes (the same bytes as ``hmac.new``,
    without setting up the key on every message)."""
    inner, outer = _keyed(secret)
    mac = inner.copy()
    mac.update(header)
    mac.update(body)
    out = outer.copy()
    out.update(mac.digest())
    return out.digest()


def encode(env: Envelope, secret: bytes) -> bytes:
    if env.kind not in KINDS:
        raise ValueError(f"unknown envelope kind {env.kind!r}; expected one of {KINDS}")
    return _pack(env.header(), env.body, secret)


def encode_fields(kind: str, body: bytes, secret: bytes, *, workflow_id: str | None = None,
                  work_id: str | None = None, job_key: str | None = None, attempt: int = 1, id: str | None = None,
                  ts: float | None = None, reply_to: str | None = None, driver: bool = False,
                  walltime: float | None = None, source: str | None = None, source_from: str | None = None) -> bytes:
    """The same bytes as ``encode(Envelope(kind, body, ...), secret)`` without building the Envelope: the
    dispatch path encodes one message per job, and the frozen dataclass is a good part of that cost."""
    if kind not in KINDS:
        raise ValueError(f"unknown envelope kind {kind!r}; expected one of {KINDS}")
    header = _header(kind, id or _message_id(), time.time() if ts is None else ts, workflow_id, work_id, job_key,
                     attempt, reply_to, driver, walltime, source, source_from)
    return _pack(header, body, secret)


def _pack(header: dict, body: bytes, secret: bytes) -> bytes:
    raw = _json.encode(header).encode()
    return b"".join((_PREFIX.pack(MAGIC, VERSION, len(raw)), raw, _sign(secret, raw, body), body))


def peek_header(data: bytes) -> dict:
    """Read the routing header without checking the signature (for logging and dead-lettering only)."""
    header, _sig, _body = _split(data)
    try:
        found = json.loads(header)
    except ValueError as err:
        raise InvalidMessage(f"message header is not JSON: {err}") from None
    if not isinstance(found, dict):
        raise InvalidMessage(f"message header is a JSON {type(found).__name__}, not an object")
    return found


def _split(data: bytes) -> tuple[bytes, bytes, bytes]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidMessage(f"message must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _PREFIX.size:
        raise InvalidMessage(f"message truncated: {len(data)} bytes is shorter than the envelope prefix")
    magic, version, hlen = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise InvalidMessage("not an iworkflow message (bad magic bytes)")
    if version != VERSION:
        raise InvalidMessage(f"unsupported envelope version {version}; this iworkflow speaks {VERSION}")
    start = _PREFIX.size
    if len(data) < start + hlen + _SIG_LEN:
        raise InvalidMessage("message truncated inside its header or signature")
    header = data[start : start + hlen]
    sig = data[start + hlen : start + hlen + _SIG_LEN]
    return header, sig, data[start + hlen + _SIG_LEN :]


def _optional_str(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"expected a string, got {type(value).__name__}")


def _timestamp(value: object) -> float:
    ts = float(value)  # type: ignore[arg-type]
    if not math.isfinite(ts):
        raise ValueError(f"timestamp {value!r} is not a finite number")
    return ts


def _optional_bool(value: object) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    raise TypeError(f"expected a boolean, got {type(value).__name__}")


def _optional_seconds(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ValueError(f"expected a number of seconds, got {value!r}")
    return float(value)


def _optional_digest(value: object) -> str | None:
    if value is None:
        return None
    if not (isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)):
        raise ValueError(f"expected a sha256 hex digest, got {value!r}")
    return value


def decode(data: bytes, secret: bytes) -> Envelope:
    """Verify and decode; raises BadSignature or InvalidMessage, never unpickles anything."""
    header, sig, body = _split(data)
    if not hmac.compare_digest(sig, _sign(secret, header, body)):
        raise BadSignature(
            "message signature does not match: sender and receiver must share the same IWORKFLOW_SECRET"
        )
    try:
        h = _json_decode(header.decode())
        env = Envelope(
            kind=h["kind"],
            body=body,
            workflow_id=h.get("workflow_id"),
            work_id=h.get("work_id"),
            job_key=h.get("job_key"),
            attempt=int(h.get("attempt", 1)),
            id=h["id"],
            ts=_timestamp(h["ts"]),
            v=int(h["v"]),
            reply_to=_optional_str(h.get("reply_to")),
            driver=_optional_bool(h.get("driver")),
            walltime=_optional_seconds(h.get("walltime")),
            source=_optional_digest(h.get("source")),
            source_from=_optional_str(h.get("source_from")),
        )
    except (ValueError, KeyError, TypeError, OverflowError) as err:
        raise InvalidMessage(f"malformed message header: {err!r}") from None
    if env.kind not in KINDS:
        raise InvalidMessage(f"unknown message kind {env.kind!r}")
    return env
