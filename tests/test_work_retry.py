"""The server's retry control makes the driver send a lost job again: the same call, a new attempt."""
from __future__ import annotations

import threading

import iworkflow
from iworkflow import work
from iworkflow.envelope import decode
from iworkflow.messages import RETRY, Control, decode_payload, jobs_destination, results_destination
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
