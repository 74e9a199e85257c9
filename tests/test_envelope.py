"""The signed, versioned envelope: what verifies, what is refused and why."""
from __future__ import annotations

import hashlib
import hmac
import os
import uuid

import pytest

from iworkflow.envelope import Envelope, _split, decode, encode, encode_fields, peek_header
from iworkflow.ids import new_id
from iworkflow.errors import BadSignature, InvalidMessage
from iworkflow.messages import Event, decode_event, encode_event

SECRET = b"s3cret"


def test_round_trip_keeps_every_header_field_and_the_body():
    env = Envelope(kind="job", body=b"\x00payload", workflow_id="wf", work_id="w", job_key="k", attempt=3)
    back = decode(encode(env, SECRET), SECRET)
    assert back == env


@pytest.mark.parametrize("extra", [{}, {"reply_to": "results.driver-1", "driver": True, "walltime": 30.0,
                                    "source": "a" * 64, "source_from": "blobs.driver-1"}])
def test_encode_fields_writes_the_same_bytes_as_encoding_the_envelope(extra):
    fields = dict(workflow_id="wf", work_id="w", job_key="k", attempt=2, id="abc", ts=1700000000.5, **extra)
    assert encode_fields("job", b"\x00body", SECRET, **fields) == encode(Envelope(kind="job", body=b"\x00body",
                                                                                  **fields), SECRET)


def test_encode_fields_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="unknown envelope kind"):
        encode_fields("jobb", b"x", SECRET)


def test_a_different_secret_is_refused_as_bad_signature():
    data = encode(Envelope(kind="job", body=b"x"), SECRET)
    with pytest.raises(BadSignature, match="IWORKFLOW_SECRET"):
        decode(data, b"other")


def test_a_flipped_body_byte_is_refused():
    data = bytearray(encode(Envelope(kind="result", body=b"abcdef"), SECRET))
    data[-1] ^= 1
    with pytest.raises(BadSignature):
        decode(bytes(data), SECRET)


def test_a_tampered_header_is_refused():
    data = encode(Envelope(kind="job", body=b"x", attempt=1), SECRET)
    with pytest.raises(BadSignature):
        decode(data.replace(b'"attempt":1', b'"attempt":9'), SECRET)


@pytest.mark.parametrize("cut", [0, 3, 8, 20])
def test_a_truncated_message_is_refused_as_invalid(cut):
    data = encode(Envelope(kind="job", body=b"x" * 10), SECRET)
    with pytest.raises(InvalidMessage):
        decode(data[:cut], SECRET)


def test_foreign_bytes_are_refused_as_not_an_iworkflow_message():
    with pytest.raises(InvalidMessage, match="magic"):
        decode(b'{"task": "celery"}' + b"\x00" * 40, SECRET)


def test_peek_header_reads_routing_fields_without_the_secret():
    data = encode(Envelope(kind="job", body=b"x", work_id="w1", job_key="k1"), SECRET)
    assert peek_header(data)["work_id"] == "w1"


def test_events_travel_as_json_in_a_signed_envelope():
    event = Event("job_failed", "wf", "w", "k", 2, data={"error": "boom"})
    assert decode_event(encode_event(event, SECRET), SECRET) == event


@pytest.mark.parametrize("secret_len", [0, 16, 64, 65, 200])
def test_the_signature_is_standard_hmac_sha256_of_header_and_body(secret_len):
    secret = os.urandom(secret_len)
    data = encode(Envelope(kind="job", body=os.urandom(5000), work_id="w"), secret)
    header, sig, body = _split(data)
    assert sig == hmac.new(secret, header + body, hashlib.sha256).digest()


def test_new_ids_are_version_4_uuids():
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(uuid.UUID(i).version == 4 and uuid.UUID(i).variant == uuid.RFC_4122 and str(uuid.UUID(i)) == i
               for i in ids)
