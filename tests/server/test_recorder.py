"""The recorder writes real workflow events idempotently: duplicates, redeliveries and reordering change nothing."""
from __future__ import annotations

import random
import time

import pytest
from iworkflow.server.db import Database
from iworkflow.server.models import EventRecord, JobRecord, WorkEdge, WorkflowRecord, WorkRecord
from iworkflow.server.recorder import apply_event

import iworkflow
from iworkflow.messages import EVENTS_TOPIC, Event, decode_event, encode_event

IGNORED = {"updated_at", "id"}


def snapshot(db: Database) -> dict:
    """Every recorded row, minus bookkeeping columns, in a stable order."""
    from sqlalchemy import select

    out = {}
    with db.session() as s:
        for model in (WorkflowRecord, WorkRecord, JobRecord, WorkEdge, EventRecord):
            rows = []
            for obj in s.scalars(select(model)).all():
                rows.append(tuple(sorted((c.key, getattr(obj, c.key)) for c in model.__table__.columns
                                         if c.key not in IGNORED)))
            out[model.__tablename__] = sorted(rows, key=repr)
    return out


def run_sample_workflow() -> None:
    """Two works (the second takes the first's MapResult, so it is its parent), one failing job."""

    @iworkflow.work(map_results=True)
    def square(x):
        if x == 3:
            raise ValueError("x=3 is not allowed")
        return x * x

    @iworkflow.work
    def total(squares):
        return sum(squares.get_all_results().values())

    @iworkflow.workflow(local=True, name="sample")
    def sample():
        first = square(multi_jobs_kwargs_list=[{"x": i} for i in range(5)])
        return total(squares=first)

    assert sample() == 0 + 1 + 4 + 16


def clear(db: Database) -> None:
    with db.engine.begin() as conn:
        for model in (EventRecord, WorkEdge, JobRecord, WorkRecord, WorkflowRecord):
            conn.execute(model.__table__.delete())


def capture_events(runtime) -> list[bytes]:
    seen: list[bytes] = []
    runtime.bus.subscribe(EVENTS_TOPIC, lambda d: seen.append(d.body))
    return seen


def record_all(db: Database, raw: list[bytes], secret: bytes) -> int:
    written = 0
    with db.session() as s, s.begin():
        for body in raw:
            written += apply_event(s, decode_event(body, secret))
    return written


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_duplicates_and_reordering_change_nothing(runtime, db_url):
    raw = capture_events(runtime)
    run_sample_workflow()
    wait_until(lambda: any(decode_event(b, runtime.secret).type == "workflow_finished" for b in raw))
    secret = runtime.secret
    types = {decode_event(b, secret).type for b in raw}
    assert {"workflow_started", "work_submitted", "job_started", "job_finished", "job_failed",
            "work_finished", "workflow_finished"} <= types

    db = Database(db_url)
    try:
        first = record_all(db, raw, secret)
        assert first == len(raw)
        once = snapshot(db)
        assert record_all(db, raw, secret) == 0, "a redelivered event must not be written again"
        assert snapshot(db) == once
    finally:
        db.dispose()

    shuffled = list(raw) * 2
    random.Random(7).shuffle(shuffled)
    db = Database(db_url)
    try:
        clear(db)
        record_all(db, shuffled, secret)
        assert snapshot(db) == once, "recording out of order (with duplicates) must give the same records"
    finally:
        db.dispose()

    edges = once["iwf_work_edges"]
    assert len(edges) == 1
    jobs = [dict(r) for r in once["iwf_jobs"]]
    assert sorted(j["status"] for j in jobs) == ["failed"] + ["finished"] * 5
    failed = next(j for j in jobs if j["status"] == "failed")
    assert "ValueError: x=3 is not allowed" in failed["error"]
    assert "Traceback" in failed["traceback"]


def test_live_recorder_ignores_rebroadcast_events(runtime, server):
    raw = capture_events(runtime)
    run_sample_workflow()
    wait_until(lambda: any(decode_event(b, runtime.secret).type == "workflow_finished" for b in raw))
    server.flush()
    before = snapshot(server.db)
    recorded = server.server.recorder.recorded
    for body in raw:
        runtime.bus.broadcast(EVENTS_TOPIC, body)
    time.sleep(0.2)
    server.flush()
    assert server.server.recorder.recorded == recorded
    assert snapshot(server.db) == before
    wf = dict(before["iwf_workflows"][0])
    assert wf["name"] == "sample" and wf["status"] == "subfinished"


def _ev(type_: str, attempt: int = 1, ts: float = 100.0, **data) -> Event:
    return Event(type=type_, workflow_id="wf-1", work_id="work-1", job_key="k1", attempt=attempt, ts=ts, data=data)


def _job(db: Database) -> JobRecord:
    from sqlalchemy import select

    with db.session() as s:
        return s.scalar(select(JobRecord))


def test_out_of_order_job_events(sqlite_url):
    db = Database(sqlite_url)
    try:
        with db.session() as s, s.begin():
            apply_event(s, _ev("job_finished", ts=105.0, worker="w1", start=101.0, end=105.0))
            apply_event(s, _ev("job_started", ts=101.0, worker="w1"))
            apply_event(s, _ev("job_heartbeat", ts=103.0))
            apply_event(s, _ev("work_submitted", ts=99.0, name="f", executor="broker", queue="q",
                               jobs=[{"key": "k1", "args": {"x": 1}}]))
        job = _job(db)
        assert (job.status, job.started_at, job.finished_at, job.worker) == ("finished", 101.0, 105.0, "w1")
        assert job.args == '{"x": 1}' and job.submitted_at == 99.0

        with db.session() as s, s.begin():
            apply_event(s, _ev("job_started", attempt=1, ts=200.0, worker="w1"))
            apply_event(s, Event("job_started", "wf-1", "work-1", "k2", attempt=2, ts=300.0, data={"worker": "w2"}))
            apply_event(s, Event("job_started", "wf-1", "work-1", "k2", attempt=1, ts=310.0, data={"worker": "w1"}))
            apply_event(s, Event("job_heartbeat", "wf-1", "work-1", "k2", attempt=1, ts=320.0))
        from sqlalchemy import select

        with db.session() as s:
            k1 = s.scalar(select(JobRecord).where(JobRecord.job_key == "k1"))
            k2 = s.scalar(select(JobRecord).where(JobRecord.job_key == "k2"))
            wf = s.get(WorkflowRecord, "wf-1")
        assert k1.status == "finished", "a late start must not reopen a finished job"
        assert (k2.status, k2.attempt, k2.worker, k2.last_seen, k2.heartbeats) == ("running", 2, "w2", 300.0, False), \
            "events of an older attempt must not overwrite the newer attempt"
        assert wf is not None and wf.status == "unknown", "a workflow known only from its works is a placeholder"
    finally:
        db.dispose()


def test_unreadable_event_is_dropped_not_fatal(runtime, server):
    from iworkflow.envelope import Envelope, encode

    runtime.bus.broadcast(EVENTS_TOPIC, b"garbage")
    runtime.bus.broadcast(EVENTS_TOPIC, encode(Envelope(kind="event", body=b"{not json"), runtime.secret))
    runtime.bus.broadcast(EVENTS_TOPIC, encode_event(_ev("workflow_started", name="after"), b"wrong-secret"))
    runtime.bus.broadcast(EVENTS_TOPIC, encode_event(Event("workflow_started", "wf-ok", data={"name": "ok"}),
                                                     runtime.secret))
    wait_until(lambda: server.server.recorder.recorded >= 1)
    server.flush()
    assert server.server.recorder.rejected == 3
    with server.db.session() as s:
        assert s.get(WorkflowRecord, "wf-ok").name == "ok"
        assert s.get(WorkflowRecord, "wf-1") is None


@pytest.mark.parametrize("n", [3])
def test_fan_out_counts(runtime, server, n):
    @iworkflow.work
    def add(a, b):
        return a + b

    @iworkflow.workflow(local=True, name="fan")
    def fan():
        return add(multi_jobs_kwargs_list=[{"a": i, "b": 1} for i in range(n)])

    assert fan() == [1, 2, 3]
    wait_until(lambda: _count_finished(server) == n)
    with server.db.session() as s:
        from sqlalchemy import select

        work = s.scalar(select(WorkRecord))
        assert (work.name, work.executor, work.n_jobs, work.status) == ("add", "thread", n, "finished")


def _count_finished(server) -> int:
    from sqlalchemy import func, select

    server.flush()
    with server.db.session() as s:
        return s.scalar(select(func.count()).select_from(JobRecord).where(JobRecord.status == "finished"))


def test_a_reused_result_is_recorded_as_cached(runtime, sqlite_url):
    """The dashboard can mark a job whose result was reused (cache=True or a resume) rather than run."""
    raw = capture_events(runtime)

    @iworkflow.work(cache=True)
    def double(x):
        return 2 * x

    @iworkflow.workflow(local=True, name="twice")
    def twice():
        return double(4), double(4)  # the second call is the same call: memoized

    assert twice() == (8, 8)
    wait_until(lambda: sum(decode_event(b, runtime.secret).type == "job_finished" for b in raw) == 2)
    db = Database(sqlite_url)
    try:
        record_all(db, raw, runtime.secret)
        from sqlalchemy import select

        from iworkflow.server.queries import job_out

        with db.session() as s:
            jobs = s.scalars(select(JobRecord)).all()  # the two calls' events may arrive in either order
            assert sorted((j.status, j.cached) for j in jobs) == [("finished", False), ("finished", True)]
            (reused,) = [j for j in jobs if j.cached]
            assert job_out(reused).cached is True
    finally:
        db.dispose()
