"""Blobs over the bus: served in signed chunks, checked against their digest, refused or timed out clearly."""
from __future__ import annotations

import hashlib
import os

import pytest

from iworkflow import blob_transfer
from iworkflow.blob_transfer import BlobEndpoint, BlobUnavailable
from iworkflow.bus.memory import MemoryBus
from iworkflow.envelope import decode, encode, Envelope
from iworkflow.errors import InvalidMessage
from iworkflow.messages import RESULT, SOURCE, BlobChunk, BlobRequest

SECRET = b"blob-secret"


@pytest.fixture
def bus():
    b = MemoryBus("memory://")
    yield b
    b.close()


def endpoints(bus, blobs: dict[str, bytes]):
    owner = BlobEndpoint(bus, SECRET, "driver", {SOURCE: lambda d: blobs[d]}).start()
    asker = BlobEndpoint(bus, SECRET, "worker").start()
    return owner, asker


def test_a_blob_larger_than_one_chunk_arrives_whole_and_checked(bus, monkeypatch):
    monkeypatch.setattr(blob_transfer, "CHUNK_BYTES", 1000)
    data = os.urandom(10_500)
    digest = hashlib.sha256(data).hexdigest()
    owner, asker = endpoints(bus, {digest: data})
    assert asker.fetch(owner.destination, SOURCE, digest, timeout=10) == data


def test_an_owner_that_does_not_hold_the_digest_answers_with_a_refusal(bus):
    owner, asker = endpoints(bus, {})
    with pytest.raises(BlobUnavailable, match="does not hand over source"):
        asker.fetch(owner.destination, SOURCE, "0" * 64, timeout=10)


def test_a_kind_of_blob_the_owner_does_not_serve_is_refused(bus):
    owner, asker = endpoints(bus, {})
    with pytest.raises(BlobUnavailable, match="serves no result blobs"):
        asker.fetch(owner.destination, RESULT, "0" * 64, timeout=10)


def test_bytes_that_do_not_match_the_digest_are_never_handed_over(bus):
    owner, asker = endpoints(bus, {"1" * 64: b"other bytes"})
    with pytest.raises(BlobUnavailable, match="does not match its digest"):
        asker.fetch(owner.destination, SOURCE, "1" * 64, timeout=10)


def test_nobody_answering_ends_the_fetch_after_the_timeout_naming_the_queue(bus):
    asker = BlobEndpoint(bus, SECRET, "worker").start()
    with pytest.raises(BlobUnavailable, match="no answer from blobs.driver-gone"):
        asker.fetch("blobs.driver-gone", SOURCE, "2" * 64, timeout=0.3)


def test_a_chunk_signed_with_another_secret_is_dead_lettered_not_used(bus):
    asker = BlobEndpoint(bus, SECRET, "worker").start()
    dead = []
    bus.consume("dlq", lambda d: (dead.append(d.body), d.ack()))
    forged = BlobChunk("r", "3" * 64, 0, 1, 3, b"bad").encode(b"another secret")
    bus.publish(asker.destination, forged)
    bus.publish(asker.destination, b"\x00 not even an envelope")
    import time

    deadline = time.monotonic() + 10
    while len(dead) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sorted(dead) == sorted([forged, b"\x00 not even an envelope"])


def test_a_chunk_message_round_trips_and_a_malformed_one_is_refused():
    chunk = BlobChunk("req", "4" * 64, 2, 3, 30, b"\x00\x01bytes")
    assert BlobChunk.from_envelope(decode(chunk.encode(SECRET), SECRET)) == chunk
    with pytest.raises(InvalidMessage, match="out of range"):
        BlobChunk.from_envelope(decode(BlobChunk("r", "4" * 64, 5, 3, 1).encode(SECRET), SECRET))
    with pytest.raises(InvalidMessage, match="malformed blob request"):
        BlobRequest.from_envelope(decode(encode(Envelope(kind="blob_request", body=b'{"what": "x"}'), SECRET), SECRET))
