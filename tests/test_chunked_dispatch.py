"""A large fan-out is encoded and dispatched in chunks, so that workers start before the driver is done."""
from __future__ import annotations

import threading

import pytest

from iworkflow import ConfigurationError, work
from iworkflow.executors.broker import BUNDLE_MAX, bundle_size
from iworkflow.messages import Job
from iworkflow.work import FIRST_CHUNK, MAX_CHUNK


@work
def add(a, b=0):
    return a + b


def add_work(**kwargs):
    return work(add.__wrapped__, return_work=True)(**kwargs)


def record_chunks(runtime, monkeypatch, fail_from: int | None = None) -> list[int]:
    """Wrap the runtime's executor so each ``submit_many`` call's size is recorded (and, from call
    ``fail_from`` on, refused as an executor that went away would)."""
    executor = runtime.executor()
    real = executor.submit_many
    sizes: list[int] = []

    def submit_many(jobs):
        jobs = list(jobs)
        sizes.append(len(jobs))
        if fail_from is not None and len(sizes) > fail_from:
            raise RuntimeError("executor went away")
        return real(jobs)

    monkeypatch.setattr(executor, "submit_many", submit_many)
    return sizes


def test_a_large_fan_out_is_dispatched_in_chunks_that_double(threaded, monkeypatch):
    sizes = record_chunks(threaded, monkeypatch)
    n = 3000
    assert add(1, group_kwargs=[{"b": i} for i in range(n)]) == [1 + i for i in range(n)]
    expected, size, left = [], FIRST_CHUNK, n
    while left > 0:
        expected.append(min(size, left))
        left -= size
        size = min(MAX_CHUNK, size * 2)
    assert sizes == expected


def test_a_small_fan_out_goes_in_one_call(threaded, monkeypatch):
    sizes = record_chunks(threaded, monkeypatch)
    assert add(1, group_kwargs=[{"b": i} for i in range(FIRST_CHUNK)]) == [1 + i for i in range(FIRST_CHUNK)]
    assert sizes == [FIRST_CHUNK]


def test_an_unpicklable_argument_late_in_a_fan_out_fails_the_call_before_any_job_is_sent(threaded, monkeypatch):
    sizes = record_chunks(threaded, monkeypatch)
    entries = [{"b": i} for i in range(1000)] + [{"b": threading.Lock()}]
    with pytest.raises(ConfigurationError, match="argument 'b' of type lock"):
        add(1, group_kwargs=entries)
    assert sizes == []


def test_jobs_after_a_chunk_the_executor_refused_end_with_a_failure_that_says_why(threaded, monkeypatch):
    record_chunks(threaded, monkeypatch, fail_from=1)
    n = FIRST_CHUNK + 10
    job = add_work(a=1, group_kwargs=[{"b": i} for i in range(n)])
    job.submit()
    job.init_async_result().wait(timeout=30)
    outcomes = job.init_async_result().outcomes
    assert len(outcomes) == n
    failed = [o for o in outcomes.values() if not o.ok]
    assert len(failed) == 10
    assert all("executor went away" in o.error.message for o in failed)


def test_a_function_measured_short_is_bundled_as_its_whole_fan_out_even_in_small_chunks():
    chunk = [Job(id=str(i), workflow_id="wf", work_id="w", job_key=str(i), attempt=1, data=b"",
                 expected_seconds=1e-5, fanout=100_000) for i in range(FIRST_CHUNK)]
    assert bundle_size(chunk) == min(BUNDLE_MAX, FIRST_CHUNK)
