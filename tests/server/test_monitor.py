"""The monitor requeues lost jobs (with backoff) through the real driver, then fails them with a clear error."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from iworkflow.server.db import Database
from iworkflow.server.models import EventRecord, JobRecord
from iworkflow.server.monitor import Backoff, Monitor, MonitorPolicy
from iworkflow.server.recorder import apply_event
from sqlalchemy import select

import iworkflow
from iworkflow.envelope import decode
from iworkflow.errors import JobLostError
from iworkflow.messages import Control, Event, decode_payload
from iworkflow.runner import WORKER_NAME


def make_job(tmp: Path, block: str):
    """A work whose calls block until ``tmp/release`` exists: every call (``block="all"``) or the first only."""
    release = str(tmp / "release")
    first_marker = str(tmp / "first-call")

    @iworkflow.work
    def slow(x):
        import os as _os
        import time as _time

        try:
            _os.mkdir(first_marker)
            first = True
        except FileExistsError:
            first = False
        if first or block == "all":
            deadline = _time.time() + 60
            while not _os.path.exists(release) and _time.time() < deadline:
                _time.sleep(0.05)
            return "stale"
        return x * 10

    return slow


@pytest.fixture
def release(tmp_path):
    yield tmp_path
    (tmp_path / "release").touch()


def job_rows(server) -> list[JobRecord]:
    server.flush()
    with server.db.session() as s:
        return s.scalars(select(JobRecord)).all()


def test_lost_job_is_retried_and_succeeds(make_server, release):
    server = make_server(heartbeat_timeout=1.0, max_attempt=3)
    slow = make_job(release, block="first")

    @iworkflow.workflow(local=True, name="retry-ok")
    def run():
        return slow(x=4)

    t0 = time.monotonic()
    assert run() == 40, "the retried attempt's value reaches the caller"
    assert time.monotonic() - t0 >= 1.0 + 0.2, "retried only after heartbeat_timeout plus backoff"
    time.sleep(0.2)
    [job] = job_rows(server)
    assert (job.status, job.attempt) == ("finished", 2)
    assert job.lost_workers == WORKER_NAME
    with server.db.session() as s:
        starts = s.scalars(select(EventRecord.attempt).where(EventRecord.type == "job_started")).all()
    assert sorted(starts) == [1, 2]


def test_lost_job_fails_after_max_attempt(db_url, make_server, release):
    server = make_server(db_url=db_url, heartbeat_timeout=0.8, max_attempt=2)
    slow = make_job(release, block="all")

    @iworkflow.workflow(local=True, name="retry-fail")
    def run():
        return slow(x=1)

    with pytest.raises(JobLostError) as info:
        run()
    message = str(info.value)
    assert WORKER_NAME in message, "the error names the lost worker"
    assert "2 of 2 attempts" in message
    assert "no heartbeat" in message
    [job] = job_rows(server)
    assert (job.status, job.attempt) == ("failed", 2)
    assert job.error.startswith("iworkflow.errors.JobLostError")


def test_walltime_overrun_fails_the_job(make_server, release):
    server = make_server(heartbeat_timeout=30.0, max_attempt=1, self_supervised=frozenset({"thread"}))
    slow = iworkflow.work(max_walltime=0.5)(make_job(release, block="all").__wrapped__)

    @iworkflow.workflow(local=True, name="walltime")
    def run():
        return slow(x=1)

    with pytest.raises(JobLostError, match="max_walltime=0.5s"):
        run()
    [job] = job_rows(server)
    assert job.status == "failed"


def _job(db: Database, key: str) -> JobRecord:
    with db.session() as s:
        return s.scalar(select(JobRecord).where(JobRecord.job_key == key))


def test_backoff_requeue_and_final_failure_step_by_step(runtime, sqlite_url):
    db = Database(sqlite_url)
    received: list[bytes] = []
    sub = runtime.bus.consume("results.work-1", lambda d: (received.append(d.body), d.ack()), prefetch=0)
    monitor = Monitor(db, runtime.bus, runtime.secret,
                      MonitorPolicy(heartbeat_timeout=30.0, max_attempt=3, backoff=Backoff(base=1.0, factor=2.0)))
    try:
        t = 1000.0
        with db.session() as s, s.begin():
            for work_id, executor in (("work-1", "broker"), ("work-2", "thread")):
                apply_event(s, Event("work_submitted", "wf-1", work_id, ts=t, data={
                    "name": "f", "executor": executor, "queue": "q", "jobs": [{"key": "k", "args": {}}]}))
                apply_event(s, Event("job_started", "wf-1", work_id, "k", ts=t, data={"worker": f"host:{work_id}"}))
            apply_event(s, Event("job_heartbeat", "wf-1", "work-1", "k", ts=t + 20))

        assert monitor.tick(now=t + 49) == [], "a heartbeat 29 s ago is recent enough"
        [lost] = monitor.tick(now=t + 51)
        assert (lost.kind, lost.work_id, lost.attempt) == ("lost", "work-1", 1)
        assert monitor.tick(now=t + 51.9) == [], "the retry waits for its backoff (1 s)"
        [retried] = monitor.tick(now=t + 52.1)
        assert (retried.kind, retried.attempt) == ("retried", 2)
        time.sleep(0.2)
        control = Control.from_envelope(decode(received[-1], runtime.secret))
        assert (control.action, control.job_key, control.attempt) == ("retry", "k", 2)
        assert "host:work-1" in control.reason
        job = _job(db, "k")
        assert (job.status, job.attempt, job.requeued) == ("queued", 2, True)

        assert monitor.tick(now=t + 52.1 + 29) == [], "a requeued job has heartbeat_timeout to start"
        [lost2] = monitor.tick(now=t + 52.1 + 31)
        assert "not started" in lost2.reason
        assert monitor.tick(now=t + 52.1 + 31 + 1.5) == [], "the second backoff is 2 s"
        [retried2] = monitor.tick(now=t + 52.1 + 31 + 2.1)
        assert retried2.attempt == 3
        with db.session() as s, s.begin():
            apply_event(s, Event("job_started", "wf-1", "work-1", "k", attempt=3, ts=t + 90,
                                 data={"worker": "host:b"}))
        [failed] = monitor.tick(now=t + 90 + 31)
        assert failed.kind == "failed"
        assert "host:work-1, host:b" in failed.reason and "3 of 3 attempts" in failed.reason
        time.sleep(0.2)
        env, payload = decode_payload(received[-1], runtime.secret, "result")
        assert (env.work_id, env.job_key, env.attempt, payload.ok) == ("work-1", "k", 3, False)
        assert payload.error.type_name == "iworkflow.errors.JobLostError"
        assert isinstance(payload.error.to_exception(), JobLostError)
        assert payload.metrics.worker == "host:b"
        assert _job(db, "k").status == "failed"
        assert monitor.tick(now=t + 500) == [], "the self-supervised thread job without heartbeats is left alone"
    finally:
        sub.cancel()
        db.dispose()


def test_healthy_jobs_are_never_requeued(make_server):
    server = make_server(heartbeat_timeout=0.5, max_attempt=2)

    @iworkflow.work
    def quick(x):
        return x + 1

    @iworkflow.workflow(local=True, name="healthy")
    def run():
        return quick(multi_jobs_kwargs_list=[{"x": i} for i in range(20)])

    assert run() == list(range(1, 21))
    time.sleep(1.0)
    rows = job_rows(server)
    assert len(rows) == 20 and {(j.status, j.attempt) for j in rows} == {("finished", 1)}


def test_a_worker_silent_past_the_heartbeat_timeout_is_lost(make_server):
    from iworkflow.server.models import WorkerRecord

    server = make_server(heartbeat_timeout=5.0)
    now = time.time()
    with server.db.session() as s, s.begin():
        s.add_all([WorkerRecord(name="gone", queue="q", slots=2, state="alive", running=2, held=3, served=7,
                                last_heartbeat=now - 60, updated_at=now - 60),
                   WorkerRecord(name="here", queue="q", slots=2, state="alive", running=1, held=0, served=1,
                                last_heartbeat=now + 3600, updated_at=now)])
    server.server.monitor.tick(now)
    with server.db.session() as s:
        states = {w.name: (w.state, w.running, w.held, w.served) for w in s.scalars(select(WorkerRecord))}
    assert states == {"gone": ("lost", 0, 0, 7), "here": ("alive", 1, 0, 1)}
