"""The delivery policy shared by the broker buses (``iworkflow/bus/delivery.py``), table-driven, no broker.

Counting queues (STOMP, RabbitMQ classic job queues): a handed-back message goes back as a copy with the
same count, one whose consumer vanished with ``iworkflow-lost`` + 1, a lost bundle one job per message with
a fresh count.  Queues whose broker counts (RabbitMQ quorum job queues) use the broker's requeue, and still
split a redelivered bundle.  The real brokers are exercised by ``tests/bus/test_contract.py`` and
``tests/bus/test_broker_e2e.py::test_a_bundle_whose_worker_dies_is_split_and_every_job_ends_once``.
"""
from __future__ import annotations

import pytest

from iworkflow import serialization
from iworkflow.bus.delivery import Arrival, DeliveryPolicy, GiveBack, HandOver, PutBack
from iworkflow.messages import JobPayload, encode_bundle, encode_payload

SECRET = b"delivery-secret"
JOB = b"a job"


def job_message(i: int) -> bytes:
    payload = JobPayload(func=serialization.dumps(abs), func_digest="abs", args=serialization.dumps(((-i,), {})))
    return encode_payload("job", payload, SECRET, work_id="w", job_key=f"k{i}")


MEMBERS = [job_message(i) for i in range(3)]
BUNDLE = encode_bundle(MEMBERS, SECRET, work_id="w")
FOREIGN_BUNDLE = encode_bundle(MEMBERS, b"another secret", work_id="w")


@pytest.mark.parametrize("counts, arrival, active, expected", [
    # counting queues: only lost deliveries count
    (True, Arrival(JOB), True, HandOver(1, False)),
    (True, Arrival(JOB, lost=2, requeued=True), True, HandOver(3, True)),
    (True, Arrival(JOB, broker_redelivered=True, lost=1), True, PutBack(((JOB, 2),))),
    (True, Arrival(JOB, lost=1), False, PutBack(((JOB, 1),))),
    (True, Arrival(BUNDLE, broker_redelivered=True, lost=0), True, PutBack(tuple((m, 0) for m in MEMBERS))),
    (True, Arrival(FOREIGN_BUNDLE, broker_redelivered=True), True, PutBack(((FOREIGN_BUNDLE, 1),))),
    (True, Arrival(BUNDLE), True, HandOver(1, False)),
    # queues whose broker counts (quorum: x-delivery-count), and plain queues
    (False, Arrival(JOB, broker_count=0), True, HandOver(1, False)),
    (False, Arrival(JOB, broker_redelivered=True, broker_count=2), True, HandOver(3, True)),
    (False, Arrival(BUNDLE, broker_redelivered=True, broker_count=1), True, PutBack(tuple((m, 0) for m in MEMBERS))),
    (False, Arrival(JOB, broker_count=0), False, GiveBack()),
    (False, Arrival(JOB), True, HandOver(1, False)),
    (False, Arrival(JOB, broker_redelivered=True), True, HandOver(0, True)),
], ids=["first", "handed-back", "lost", "inactive", "lost-bundle", "foreign-bundle", "bundle", "quorum-first",
        "quorum-again", "quorum-bundle", "quorum-inactive", "plain", "plain-redelivered"])
def test_what_a_queue_does_with_a_message_that_arrives(counts, arrival, active, expected):
    assert DeliveryPolicy(counts, SECRET).on_arrival(arrival, active) == expected


@pytest.mark.parametrize("counts, count, expected", [
    (True, 1, PutBack(((JOB, 0),))),
    (True, 3, PutBack(((JOB, 2),))),
    (False, 3, GiveBack()),
])
def test_a_message_handed_back_keeps_its_count(counts, count, expected):
    assert DeliveryPolicy(counts, SECRET).on_requeue(JOB, count) == expected


def test_without_the_secret_a_lost_bundle_goes_back_whole():
    assert DeliveryPolicy(True).on_arrival(Arrival(BUNDLE, broker_redelivered=True), True) == PutBack(((BUNDLE, 1),))
