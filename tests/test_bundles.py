"""Bundles: many short jobs (or their results) in one signed message, settled together."""
from __future__ import annotations

import threading

import pytest
from iworkflow.executors.broker import BUNDLE_MAX, BrokerExecutor, bundle_size

from iworkflow import serialization
from iworkflow.bus.memory import MemoryBus
from iworkflow.config import load_settings
from iworkflow.envelope import decode
from iworkflow.errors import InvalidMessage
from iworkflow.inbox import Inbox
from iworkflow.messages import (
    Job,
    JobMetrics,
    JobPayload,
    ResultPayload,
    decode_payload,
    encode_bundle,
    encode_payload,
    jobs_destination,
    split_bundle,
)
from iworkflow.worker import Worker

SECRET = b"bundle-secret"


def job_message(i: int, reply_to: str = "results.driver-test") -> bytes:
    func = serialization.dumps_function(abs)
    payload = JobPayload(func=func, func_digest="abs", args=serialization.dumps(((-i,), {})))
    return encode_payload("job", payload, SECRET, workflow_id="wf", work_id="work-1", job_key=f"k{i}",
                          reply_to=reply_to)


def result_message(key: str, value: int, work_id: str = "work-1") -> bytes:
    payload = ResultPayload(ok=True, value=serialization.dumps(value), metrics=JobMetrics(0.0, 0.0))
    return encode_payload("result", payload, SECRET, work_id=work_id, job_key=key)


def jobs(n: int, expected: float | None) -> list[Job]:
    return [Job(id=str(i), workflow_id="wf", work_id="w", job_key=str(i), attempt=1, data=b"",
                expected_seconds=expected) for i in range(n)]


def result_values(bodies: list[bytes]) -> dict[str, int]:
    """Job key -> value of these result messages, bundled or not."""
    values = {}
    for body in bodies:
        env = decode(body, SECRET)
        for member in split_bundle(env) if env.kind == "bundle" else [body]:
            header, payload = decode_payload(member, SECRET, "result")
            values[header.job_key] = serialization.loads(payload.value)
    return values


def collector(bus: MemoryBus, queue: str):
    got: list[bytes] = []
    cond = threading.Condition()

    def take(delivery) -> None:
        with cond:
            got.append(delivery.body)
            cond.notify_all()
        delivery.ack()

    bus.consume(queue, take, prefetch=0)
    return got, cond


def test_a_bundle_carries_its_member_messages_unchanged():
    members = [job_message(i) for i in range(3)]
    env = decode(encode_bundle(members, SECRET, work_id="work-1"), SECRET)
    assert env.kind == "bundle" and env.work_id == "work-1"
    assert split_bundle(env) == members


def test_a_truncated_bundle_body_is_an_invalid_message():
    env = decode(encode_bundle([b"x" * 10], SECRET), SECRET)
    broken = type(env)(kind="bundle", body=env.body[:-3])
    with pytest.raises(InvalidMessage, match="truncated"):
        split_bundle(broken)


@pytest.mark.parametrize("n, expected, size", [
    (1000, None, 1),             # the function has not been measured yet
    (40, 1e-5, 1),               # too few jobs to be worth it
    (1000, 1e-5, 1000 // 32),    # short jobs: still at least 32 messages
    (100_000, 1e-5, BUNDLE_MAX),
    (100_000, 0.01, 2),          # about 20 ms of work per bundle
    (100_000, 1.0, 1),           # long jobs travel alone
])
def test_only_large_fan_outs_of_a_function_measured_short_are_bundled(n, expected, size):
    assert bundle_size(jobs(n, expected)) == size


@pytest.fixture
def worker_bus():
    bus = MemoryBus()
    settings = load_settings(broker="memory://", secret=SECRET.decode(), queue="q", heartbeat_interval=60)
    worker = Worker(settings, bus, slots=2, name="bundle-worker")
    yield bus, worker
    worker.stop(grace=10)
    bus.close()


def test_a_worker_runs_every_job_of_a_bundle_and_returns_each_result(worker_bus):
    bus, worker = worker_bus
    results, cond = collector(bus, "results.driver-test")
    worker.start()
    bus.publish(jobs_destination("q"), encode_bundle([job_message(i) for i in range(20)], SECRET))
    with cond:
        assert cond.wait_for(lambda: len(result_values(results)) == 20, 30), "every job's result came back"
    assert result_values(results) == {f"k{i}": i for i in range(20)}


def test_a_result_bundle_with_a_bad_member_keeps_the_good_results():
    bus = MemoryBus()
    inbox = Inbox(bus, SECRET, driver_id="test")
    routed: list[str] = []
    done = threading.Event()

    def route(env, delivery) -> None:
        routed.append(env.job_key)
        delivery.ack()
        done.set()

    dead, cond = collector(bus, "dlq")
    inbox.register("work-1", route)
    bus.publish(inbox.destination, encode_bundle([result_message("k1", 1), b"IWF\x01garbage"], SECRET))
    assert done.wait(10)
    with cond:
        assert cond.wait_for(lambda: dead == [b"IWF\x01garbage"], 10)
    assert routed == ["k1"]
    inbox.close()
    bus.close()


@pytest.mark.parametrize("bundles, messages", [("auto", 34), ("off", 100)])  # auto: bundles of 3 jobs
def test_the_bundles_setting_decides_how_many_messages_a_fan_out_takes(bundles, messages):
    bus = MemoryBus()
    settings = load_settings(broker="memory://", secret=SECRET.decode(), bundles=bundles)
    fan_out = [Job(id=str(i), workflow_id="wf", work_id="work-1", job_key=f"k{i}", attempt=1, data=job_message(i),
                   queue="q", expected_seconds=1e-5) for i in range(100)]
    futures = BrokerExecutor(settings, bus).submit_many(fan_out)
    assert all(f.result(10) is None for f in futures)
    got, cond = collector(bus, jobs_destination("q"))
    with cond:
        assert cond.wait_for(lambda: len(got) == messages, 10)
    jobs_carried = sum(len(split_bundle(env)) if (env := decode(body, SECRET)).kind == "bundle" else 1 for body in got)
    assert jobs_carried == 100
    bus.close()
