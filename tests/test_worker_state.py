"""The worker's state machine (``iworkflow/worker/state.py``) driven without a broker: events in, instructions out.

Tokens are plain strings standing for broker deliveries; each case feeds a few events and compares what the
state machine answers, summarised as tuples.  The same behaviours on real brokers and real workers are in
``tests/faults/test_worker_faults.py`` and ``tests/faults/test_broker_restart.py``.
"""
from __future__ import annotations

import pytest

from iworkflow.errors import JobLostError, JobTooOld, WorkCancelled
from iworkflow.worker.state import (
    DRIVERS,
    LEASE_MIN,
    Ack,
    Announce,
    BundleTaken,
    CancelRequested,
    ConsumerChanged,
    DeadLetter,
    Delivered,
    Exit,
    Fail,
    Finished,
    Forward,
    Heartbeat,
    HolderSeen,
    JobInfo,
    JobStarted,
    Malformed,
    NoticeSent,
    Notify,
    NotifyDone,
    ReportWorker,
    Requeue,
    Run,
    SetPrefetch,
    Stop,
    Stopping,
    Tick,
    WorkerStarted,
    WorkerState,
    WorkerStopped,
)

NOW = 1_800_000_000.0


def job(i: str = "a", **fields) -> JobInfo:
    return JobInfo(**{"id": f"id-{i}", "workflow_id": "wf", "work_id": "work", "job_key": f"k{i}", "attempt": 1,
                      "ts": NOW - 1, "reply_to": "results.driver-x", **fields})


def delivered(i: str = "a", token: str | None = None, count: int = 1, now: float = NOW, queue: str = "jobs",
              **fields) -> Delivered:
    return Delivered(token or f"t-{i}", job(i, **fields), count, now, queue)


def summary(instructions) -> list[tuple]:
    """Instructions as comparable tuples: the kind and what identifies it."""
    out = []
    for i in instructions:
        if isinstance(i, ReportWorker):
            continue  # the worker's own reports have tests of their own
        if isinstance(i, (Ack, Requeue)):
            out.append((type(i).__name__, *i.tokens))
        elif isinstance(i, DeadLetter):
            out.append(("DeadLetter", *i.tokens))
        elif isinstance(i, Fail):
            out.append(("Fail", *i.tokens, type(i.error).__name__, "dead" if i.dead else "ack"))
        elif isinstance(i, (Run, Forward)):
            out.append((type(i).__name__, i.token))
        elif isinstance(i, Stop):
            out.append(("Stop", i.job.id))
        elif isinstance(i, Heartbeat):
            out.append(("Heartbeat", *(j.id for j in i.jobs), "accepted" if i.accepted else "running"))
        elif isinstance(i, (Announce,)):
            out.append(("Announce", i.job.id))
        elif isinstance(i, (Notify, NotifyDone)):
            out.append((type(i).__name__, *(j.id for j in i.jobs)))
        elif isinstance(i, SetPrefetch):
            out.append(("SetPrefetch", i.prefetch))
        elif isinstance(i, Exit):
            out.append(("Exit",))
        else:
            raise AssertionError(f"unexpected instruction {i!r}")
    return out


def run(events, **settings) -> list[list[tuple]]:
    state = WorkerState("me", slots=2, **settings)
    return [summary(state.handle(e)) for e in events]


FIRST = [("Run", "t-a"), ("Announce", "id-a")]


@pytest.mark.parametrize("events, expected", [
    pytest.param([delivered()], [FIRST], id="a first delivery runs at once; its holder notice goes out batched"),
    pytest.param([delivered(count=2), NoticeSent(("id-a",))],
                 [[("Heartbeat", "id-a", "accepted"), ("Notify", "id-a")], [("Run", "t-a")]],
                 id="a redelivered job runs once its holder notice is confirmed"),
    pytest.param([delivered("a", count=2), delivered("b", count=2), NoticeSent(("id-a",)), NoticeSent(("id-b",))],
                 [[("Heartbeat", "id-a", "accepted"), ("Notify", "id-a")], [("Heartbeat", "id-b", "accepted")],
                  [("Run", "t-a"), ("Notify", "id-b")], [("Run", "t-b")]],
                 id="notices go one at a time; the jobs taken meanwhile go in the next"),
    pytest.param([HolderSeen("w1", NOW, keys=(("work", "ka"),)), delivered(count=6)],
                 [[], [("Fail", "t-a", "JobLostError", "ack")]],
                 id="past max_attempt a job fails naming the lost workers"),
    pytest.param([delivered(ts=NOW - 6 * 3600 - 301)], [[("Fail", "t-a", "JobTooOld", "dead")]],
                 id="a job older than job_max_age plus the skew is refused and dead-lettered"),
    pytest.param([delivered(ts=NOW - 6 * 3600 - 299)], [FIRST], id="within the clock skew it runs"),
    pytest.param([delivered(ts=NOW + 301)], [[("Fail", "t-a", "JobTooOld", "dead")]],
                 id="a job dated in the future past the skew is refused"),
    pytest.param([delivered(), delivered(token="copy"), Finished("id-a", "done", NOW)],
                 [FIRST, [], [("Ack", "t-a", "copy")]],
                 id="a copy of a running job is adopted and settled with it"),
    pytest.param([delivered(), Finished("id-a", "done", NOW), delivered(token="replay")],
                 [FIRST, [("Ack", "t-a")], [("Ack", "replay")]],
                 id="a job id and attempt that already ran here is dropped"),
    pytest.param([delivered(), delivered(token="copy"), Finished("id-a", "failed", NOW, error="bus closing")],
                 [FIRST, [], [("Requeue", "copy"), ("Ack", "t-a")]],
                 id="a job handed back goes back once, not once per copy"),
    pytest.param([delivered(driver=True)], [[("Forward", "t-a")]],
                 id="a driver job moves to the drivers queue without being unpickled"),
    pytest.param([delivered(driver=True, queue=DRIVERS)], [FIRST], id="a first delivery of a driver job runs"),
    pytest.param([CancelRequested(work_id="work", now=NOW), delivered()], [[], [("Fail", "t-a", "WorkCancelled", "ack")]],
                 id="a job of cancelled work fails without running"),
    pytest.param([delivered(count=2), CancelRequested(workflow_id="wf", now=NOW), NoticeSent(("id-a",))],
                 [[("Heartbeat", "id-a", "accepted"), ("Notify", "id-a")], [("Fail", "t-a", "WorkCancelled", "ack")],
                  []], id="a cancelled job waiting for its notice never runs"),
    pytest.param([delivered(), CancelRequested(workflow_id="wf", now=NOW)], [FIRST, [("Stop", "id-a")]],
                 id="a running job of a cancelled workflow is stopped"),
    pytest.param([delivered(), CancelRequested(work_id="work", now=NOW), Finished("id-a", "cancelled", NOW)],
                 [FIRST, [("Stop", "id-a")], [("Fail", "t-a", "WorkCancelled", "ack")]],
                 id="a cancelled job stopped before it started fails as cancelled"),
    pytest.param([delivered(), Finished("id-a", "cancelled", NOW)], [FIRST, [("Requeue", "t-a")]],
                 id="a job not started when the worker stops goes back"),
    pytest.param([delivered(), Finished("id-a", "invalid", NOW, error="cannot unpickle job body")],
                 [FIRST, [("DeadLetter", "t-a")]], id="a job message the runner refuses is dead-lettered"),
    pytest.param([Malformed("t-x", "signature does not match")], [[("DeadLetter", "t-x")]],
                 id="a message that is not a signed job is dead-lettered"),
    pytest.param([delivered("a"), delivered("b", count=2), Stopping(), delivered("c")],
                 [FIRST, [("Heartbeat", "id-b", "accepted"), ("Notify", "id-b")], [("Requeue", "t-b")],
                  [("Requeue", "t-c")]], id="stopping hands back what has not started, and takes nothing new"),
    pytest.param([ConsumerChanged("jobs.q", "recovering"), ConsumerChanged("jobs.q", "consuming"),
                  ConsumerChanged("jobs.q", "lost", "access refused")], [[], [], [("Exit",)]],
                 id="a lost job consumer stops the worker"),
    pytest.param([delivered(), Tick(NOW + 5)], [FIRST, []],
                 id="a job waiting for a runner is not heartbeated as running"),
    pytest.param([delivered(), JobStarted("id-a", NOW + 1), Tick(NOW + 5)],
                 [FIRST, [("Heartbeat", "id-a", "running")], [("Heartbeat", "id-a", "running")]],
                 id="a job a runner started heartbeats at once and every tick"),
])
def test_the_worker_state_machine(events, expected):
    assert run(events) == expected


WAITING = [("Heartbeat", "id-a", "accepted"), ("Notify", "id-a")]


def test_a_redelivered_driver_job_waits_while_another_worker_renews_its_lease():
    state = WorkerState("me", slots=1, heartbeat_interval=1.0)
    t0 = NOW
    assert state.handle(HolderSeen("other", t0 - 1, keys=(("work", "ka"),))) == []
    assert state.handle(delivered(count=2, queue=DRIVERS, driver=True, now=t0)) == []
    for step in range(1, 4):  # the holder keeps renewing: the copy waits past the lease period
        now = t0 + step * LEASE_MIN / 2
        state.handle(HolderSeen("other", now - 0.5, keys=(("work", "ka"),)))
        assert summary(state.handle(Tick(now))) == []
    later = t0 + 2 * LEASE_MIN + LEASE_MIN + 1  # no renewal for a whole lease: the holder is gone
    assert summary(state.handle(Tick(later))) == WAITING


def test_a_waiting_driver_job_finished_by_its_holder_is_dropped():
    state = WorkerState("me", slots=1)
    state.handle(delivered(count=2, queue=DRIVERS, driver=True))
    assert summary(state.handle(HolderSeen("other", NOW + 1, done=(("id-a", 1),)))) == [("Ack", "t-a")]
    assert summary(state.handle(delivered(token="again", count=3, queue=DRIVERS, driver=True))) == [("Ack", "again")]


def test_a_driver_job_finished_here_tells_the_other_workers():
    state = WorkerState("me", slots=1)
    state.handle(delivered(queue=DRIVERS, driver=True))
    assert summary(state.handle(Finished("id-a", "done", NOW))) == [("Ack", "t-a"), ("NotifyDone", "id-a")]


def test_a_driver_job_seen_held_elsewhere_waits_even_on_its_first_delivery():
    """ActiveMQ may hand out a message again after a restart without saying it was delivered before."""
    state = WorkerState("me", slots=1)
    state.handle(HolderSeen("other", NOW - 100, keys=(("work", "ka"),)))
    assert state.handle(delivered(queue=DRIVERS, driver=True)) == []
    assert summary(state.handle(Tick(NOW + LEASE_MIN + 1))) == FIRST


def test_the_prefetch_follows_the_measured_job_length_per_message():
    state = WorkerState("me", slots=2)
    state.handle(delivered())
    assert summary(state.handle(Finished("id-a", "done", NOW, job_seconds=1e-5))) == [("Ack", "t-a"),
                                                                                      ("SetPrefetch", 128)]
    for _ in range(20):
        state.handle(BundleTaken(64))  # each message now carries many jobs: fewer messages cover the refill
    state.handle(delivered("b"))
    assert summary(state.handle(Finished("id-b", "done", NOW + 1, job_seconds=1e-3))) == [("Ack", "t-b"),
                                                                                          ("SetPrefetch", 4)]


def test_the_errors_say_what_happened():
    state = WorkerState("me", slots=1, max_attempt=2, job_max_age=60, clock_skew=5)
    state.handle(HolderSeen("lost-1", NOW, keys=(("work", "ka"),)))
    [lost] = state.handle(delivered(count=3))
    assert isinstance(lost.error, JobLostError) and "lost-1" in str(lost.error) and "max_attempt=2" in str(lost.error)
    [old] = state.handle(delivered("b", ts=NOW - 100))
    assert isinstance(old.error, JobTooOld) and "job_max_age=60s" in str(old.error)
    state.handle(CancelRequested(workflow_id="wf", now=NOW))
    [cancelled] = state.handle(delivered("c"))
    assert isinstance(cancelled.error, WorkCancelled)


def test_what_a_worker_remembers_is_bounded():
    state = WorkerState("me", slots=1)
    state.ran.limit = 100
    for i in range(300):
        state.handle(delivered(str(i)))
        state.handle(Finished(f"id-{i}", "done", NOW))
    assert len(state.ran) == 100 and not state.held


def test_heartbeats_of_started_jobs_carry_the_start_time():
    state = WorkerState("me", slots=1)
    state.handle(delivered())
    (beat,) = state.handle(JobStarted("id-a", NOW + 2))
    assert beat == Heartbeat((job(),), starts=(NOW + 2,))
    later = [i for i in state.handle(Tick(NOW + 5)) if isinstance(i, Heartbeat)]
    assert later == [Heartbeat((job(),), starts=(NOW + 2,))]


def test_the_worker_reports_itself_with_running_and_held_counts():
    state = WorkerState("me", slots=2)
    assert state.handle(WorkerStarted(NOW)) == [ReportWorker("worker_heartbeat", 0, 0, 0, NOW)]
    state.handle(delivered("a"))
    state.handle(delivered("b"))
    state.handle(JobStarted("id-a", NOW + 1))
    assert state.handle(Tick(NOW + 5))[0] == ReportWorker("worker_heartbeat", running=1, held=1, served=0,
                                                          started_at=NOW)
    state.handle(Finished("id-a", "done", NOW + 6))
    assert state.handle(WorkerStopped(NOW + 7)) == [ReportWorker("worker_stopped", 0, 1, 1, NOW)]


def test_a_retried_job_waiting_for_a_runner_says_it_is_held_every_tick():
    state = WorkerState("me", slots=1)
    first = [i for i in state.handle(delivered("r", attempt=2)) if isinstance(i, Heartbeat)]
    assert first == [Heartbeat((job("r", attempt=2),), accepted=True)]
    later = [i for i in state.handle(Tick(NOW + 5)) if isinstance(i, Heartbeat)]
    assert later == [Heartbeat((job("r", attempt=2),), accepted=True)]
    state.handle(JobStarted("id-r", NOW + 6))
    assert [i for i in state.handle(Tick(NOW + 10)) if isinstance(i, Heartbeat)] == \
        [Heartbeat((job("r", attempt=2),), starts=(NOW + 6,))]
