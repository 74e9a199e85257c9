"""The server's retry control makes the driver send a lost job again: the same call, a new attempt."""
from __future__ import annotations

import threading

import iworkflow
from iworkflow import serialization, work
from iworkflow.envelope import decode
from iworkflow.failures import failure_result, result_message
from iworkflow.messages import (EVENTS_TOPIC, RETRY, Control, Event, JobMetrics, ResultPayload, decode_events,
                                decode_payload, jobs_destination, results_destination)
from waiting import wait_until


def double(x: int) -> int:
    return 2 * x


def test_a_retry_control_resends_the_same_job_with_its_new_attempt_once():
    runtime = iworkflow.configure(broker="memory://", executor="broker")
    try:
        sent: list[bytes] = []
        lock = threading.Lock()

        def take(delivery) -> None:  # the jobs queue, as a worker would see it (nothing runs them)
            with lock:
                sent.append(delivery.body)
            delivery.ack()

        w = work(return_work=True)(double)(multi_jobs_kwargs_list=[{"x": 1}, {"x": 2}])
        runtime.bus.consume(jobs_destination(w.queue), take, prefetch=0)
        w.submit()
        wait_until(lambda: len(sent), lambda n: n == 2, what="the first dispatch")
        key = w.job_keys[1]
        retry = Control(action=RETRY, workflow_id=w.workflow_id, work_id=w.internal_id, job_key=key, attempt=2,
                        reason="lost on worker w1").encode(runtime.secret)
        destination = results_destination(w.internal_id, runtime.inbox.destination)
        runtime.bus.publish(destination, retry)
        runtime.bus.publish(destination, retry)  # a duplicate control changes nothing
        wait_until(lambda: len(sent), lambda n: n >= 3, what="the retried job")
        first = {decode(m, runtime.secret).job_key: m for m in sent[:2]}
        env, payload = decode_payload(sent[2], runtime.secret, "job")
        _env0, payload0 = decode_payload(first[key], runtime.secret, "job")
        assert (env.job_key, env.attempt, env.work_id) == (key, 2, w.internal_id)
        assert (payload.func, payload.args) == (payload0.func, payload0.args)
        assert env.id != decode(first[key], runtime.secret).id
        w.async_result.publish(4, key=key)  # the job's result lands: a later retry of it is ignored
        wait_until(lambda: w.async_result.has_outcome(key), what="the result")
        runtime.bus.publish(destination, Control(action=RETRY, work_id=w.internal_id, job_key=key, attempt=3)
                            .encode(runtime.secret))
        w.async_result.publish(2, key=w.job_keys[0])
        assert w.wait_results(timeout=60) == [2, 4]
        assert len(sent) == 3, [decode(m, runtime.secret).attempt for m in sent]
    finally:
        iworkflow.shutdown()


class _Driver:
    """A driver on the memory bus with the broker executor: its job messages and events, as a worker and the
    server would see them (no worker runs the jobs: the test publishes their results)."""

    def __init__(self, fanout: int):
        self.runtime = iworkflow.configure(broker="memory://", executor="broker", events="on")
        self.sent: list[bytes] = []
        self.events: list[Event] = []
        self.work = work(return_work=True)(double)(multi_jobs_kwargs_list=[{"x": i} for i in range(1, fanout + 1)])
        self.runtime.bus.consume(jobs_destination(self.work.queue), self._take, prefetch=0)
        self.runtime.bus.subscribe(EVENTS_TOPIC,
                                   lambda d: self.events.extend(decode_events(d.body, self.runtime.secret)))
        self.work.submit()
        wait_until(lambda: len(self.sent), lambda n: n == fanout, what="the first dispatch")

    def _take(self, delivery) -> None:
        self.sent.append(delivery.body)
        delivery.ack()

    def result(self, key: str, payload: ResultPayload) -> None:
        w = self.work
        self.runtime.bus.publish(self.runtime.inbox.destination, result_message(
            {"workflow_id": w.workflow_id, "work_id": w.internal_id, "job_key": key,
             "attempt": payload.metrics.attempt}, payload, self.runtime.secret))

    def retry_failed(self, key: str, attempt: int) -> None:
        w = self.work
        self.runtime.bus.publish(self.runtime.inbox.destination, Control.retry_failed(
            w.workflow_id, w.internal_id, key, attempt).encode(self.runtime.secret))

    def refusals(self) -> list[Event]:
        return [e for e in self.events if e.type == "retry_refused"]


def _ok(value: int, attempt: int) -> ResultPayload:
    return ResultPayload(ok=True, value=serialization.dumps(value), metrics=JobMetrics(attempt=attempt))


def test_a_retry_of_a_failed_job_while_its_work_runs_resends_it_and_the_waiter_gets_the_new_result():
    d = _Driver(2)
    try:
        w, (first, second) = d.work, d.work.job_keys
        futures = w.async_result.futures()
        d.result(first, failure_result(RuntimeError("flaky"), attempt=1))
        wait_until(lambda: w.async_result.has_outcome(first), what="the failure")
        assert futures[0].exception() is not None
        d.retry_failed(first, 2)
        wait_until(lambda: len(d.sent), lambda n: n == 3, what="the retried job")
        env = decode(d.sent[2], d.runtime.secret)
        assert (env.job_key, env.attempt) == (first, 2)
        assert not w.async_result.has_outcome(first)
        d.result(first, failure_result(RuntimeError("flaky"), attempt=1))  # a stale copy of the old failure
        d.result(first, _ok(2, attempt=2))
        d.result(second, _ok(4, attempt=1))
        assert w.wait_results(timeout=60) == [2, 4]
        assert w.async_result.futures()[0].result() == 2
        assert w.get_status() == "finished"
        assert d.refusals() == []
    finally:
        iworkflow.shutdown()


def test_a_retry_of_a_successful_job_changes_nothing_and_says_why():
    d = _Driver(2)
    try:
        w, (first, second) = d.work, d.work.job_keys
        d.result(first, _ok(2, attempt=1))
        wait_until(lambda: w.async_result.has_outcome(first), what="the result")
        d.retry_failed(first, 2)
        refused = wait_until(d.refusals, what="the refusal")
        assert "succeeded" in refused[0].data["reason"] and refused[0].job_key == first
        d.result(second, _ok(4, attempt=1))
        assert w.wait_results(timeout=60) == [2, 4]
        assert len(d.sent) == 2
    finally:
        iworkflow.shutdown()


def test_a_retry_of_a_failed_job_after_its_work_ended_is_refused_with_the_reason():
    d = _Driver(1)
    try:
        w, (key,) = d.work, d.work.job_keys
        d.result(key, failure_result(RuntimeError("broken"), attempt=1))
        assert w.async_result.wait(timeout=60)
        wait_until(lambda: [e for e in d.events if e.type == "work_finished"], what="the work's end")
        before = w.async_result.outcomes[key]
        d.retry_failed(key, 2)  # the work is no longer routed: the driver's inbox answers for it
        refused = wait_until(d.refusals, what="the refusal")
        assert "ended" in refused[0].data["reason"] and (refused[0].job_key, refused[0].attempt) == (key, 2)
        assert "ended" in w.async_result.reopen(key, 2), "a work whose results are all in keeps them"
        assert w.async_result.outcomes[key] is before and len(d.sent) == 1
    finally:
        iworkflow.shutdown()
