"""A large recorded workflow for the dashboard tests, fed through the real recorder as the events a run sends.

5 stages, 21 works (repeated names), 500 jobs on 4 workers, failed jobs with tracebacks and output, jobs
retried after their first worker was lost, a nested workflow, and (optionally) a last work still running.
Running 500 real jobs would test the same pages more slowly: what the pages read is what the recorder wrote.
"""
from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass, field

from iworkflow.ids import get_unique_id_for_dict
from iworkflow.messages import Event

WORKERS = ["node-a:4101", "node-b:4102", "node-c:4103", "node-d:4104"]
#: (name, how many works, jobs per work); every work of a stage feeds on the previous stage
STAGES = [("load", 1, 1), ("prepare", 4, 10), ("fit", 10, 40), ("score", 5, 10), ("report", 1, 9)]


@dataclass
class Seeded:
    workflow_id: str
    child_id: str
    works: dict[str, list[str]] = field(default_factory=dict)  # stage name -> work ids
    edges: list[tuple[str, str]] = field(default_factory=list)
    n_jobs: int = 0
    failed: int = 0
    retried: int = 0
    running: int = 0
    jobs_by_worker: dict[str, int] = field(default_factory=dict)
    failed_key: str = ""
    running_key: str = ""


def _fails(stage: str, i: int) -> bool:
    return stage == "fit" and i % 13 == 5


def _retried(stage: str, i: int) -> bool:
    return stage in ("prepare", "fit") and i % 17 == 3


class _Slots:
    """Where the next job runs: the worker slot free first (4 workers x 4 slots), as a broker hands them out."""

    def __init__(self, slots: int = 4):
        self.free = [(0.0, w, n) for w in WORKERS for n in range(slots)]

    def take(self, ready: float, took: float) -> tuple[str, float]:
        self.free.sort()
        at, worker, n = self.free.pop(0)
        start = max(at, ready)
        self.free.append((start + took, worker, n))
        return worker, start


def seed_events(live: bool = False) -> tuple[Seeded, list[Event]]:
    """The events of one run that ends now; with ``live`` the last work's jobs are still running."""
    wf = uuid.uuid4().hex
    child = uuid.uuid4().hex
    seeded = Seeded(wf, child)
    events = [Event("workflow_started", wf, ts=0.0, data={"name": "big-pipeline", "parent_id": None})]
    slots = _Slots()
    clock = 1.0
    previous: list[str] = []
    for s, (stage, n_works, n_jobs) in enumerate(STAGES):
        ids = []
        last_stage = s == len(STAGES) - 1
        stage_end = clock
        for w in range(n_works):
            work = uuid.uuid4().hex
            ids.append(work)
            parents = previous if stage in ("load", "report") or len(previous) <= 1 else [previous[w % len(previous)]]
            seeded.edges += [(p, work) for p in parents]
            args = [{"stage": stage, "part": w, "i": i} for i in range(n_jobs)]
            keys = [get_unique_id_for_dict(a) for a in args]
            events.append(Event("work_submitted", wf, work, ts=clock + w * 0.01, data={
                "name": stage, "executor": "broker", "queue": "default", "parents": parents,
                "jobs": [{"key": k, "args": a} for k, a in zip(keys, args)], "reply_to": "results.driver-x"}))
            statuses = []
            work_end = clock
            for i, key in enumerate(keys):
                took = 0.4 + (i * 7 % 23) / 20 + 0.3 * s
                attempt = 1
                if _retried(stage, i):
                    lost_on, lost_at = slots.take(clock, 3.0)
                    events.append(Event("job_started", wf, work, key, 1, ts=lost_at, data={"worker": lost_on}))
                    attempt = 2
                    seeded.retried += 1
                worker, start = slots.take(clock + (3.5 if attempt == 2 else 0.0), took)
                events.append(Event("job_started", wf, work, key, attempt, ts=start, data={"worker": worker}))
                seeded.jobs_by_worker[worker] = seeded.jobs_by_worker.get(worker, 0) + 1
                seeded.n_jobs += 1
                work_end = max(work_end, start + took)
                if live and last_stage:
                    seeded.running += 1
                    seeded.running_key = seeded.running_key or key
                    statuses.append("running")
                    continue
                if _fails(stage, i):
                    seeded.failed += 1
                    seeded.failed_key = seeded.failed_key or key
                    statuses.append("failed")
                    events.append(Event("job_failed", wf, work, key, attempt, ts=start + took, data={
                        "worker": worker, "start": start, "end": start + took,
                        "error": f"ValueError: fit diverged for part {w} item {i}",
                        "traceback": ("Traceback (most recent call last):\n  File \"pipeline.py\", line 12, in fit\n"
                                      f"    raise ValueError('fit diverged for part {w} item {i}')\n"
                                      f"ValueError: fit diverged for part {w} item {i}\n"),
                        "output": f"fitting part {w} item {i}\nloss=nan after 3 steps\n"}))
                else:
                    statuses.append("finished")
                    events.append(Event("job_finished", wf, work, key, attempt, ts=start + took,
                                        data={"worker": worker, "start": start, "end": start + took}))
            if not (live and last_stage):
                status = "finished" if "failed" not in statuses else "subfinished"
                events.append(Event("work_finished", wf, work, ts=work_end, data={"status": status}))
            stage_end = max(stage_end, work_end)
        seeded.works[stage] = ids
        previous = ids
        if stage == "fit":
            events += _nested(seeded, child, wf, stage_end)
        clock = stage_end + 0.2
    if not live:
        events.append(Event("workflow_finished", wf, ts=clock, data={"status": "failed",
                                                                      "error": "ValueError: fit diverged"}))
    # the run ends now (a live run's last jobs started a moment ago): shift every time by the same amount
    end = max(e.ts for e in events if e.type == "job_started") if live else clock
    events += _worker_reports(seeded, live, end)
    shift = time.time() - end
    for e in events:
        for k in ("start", "end", "started"):
            if k in e.data:
                e.data[k] += shift
    return seeded, [dataclasses.replace(e, ts=e.ts + shift) for e in events]


def _worker_reports(seeded: Seeded, live: bool, end: float) -> list[Event]:
    """Each worker's last report: the first three report until the end; the last went silent 2 minutes
    before it (the monitor marks it lost), or, in a finished run, stopped cleanly."""
    events = []
    for n, worker in enumerate(WORKERS):
        silent = n == len(WORKERS) - 1
        ts = end - 120 if silent else end
        kind = "worker_stopped" if silent and not live else "worker_heartbeat"
        events.append(Event(kind, ts=ts, data={"worker": worker, "queue": "default", "slots": 4, "running": 0,
                                               "held": 0, "served": seeded.jobs_by_worker.get(worker, 0),
                                               "started": 0.0}))
    return events


def _nested(seeded: Seeded, child: str, parent: str, clock: float) -> list[Event]:
    """A nested workflow of two works (5 jobs each) started from the parent's driver."""
    events = [Event("workflow_started", child, ts=clock, data={"name": "nested-tuning", "parent_id": parent})]
    first = None
    for name in ("tune", "pick"):
        work = uuid.uuid4().hex
        keys = [get_unique_id_for_dict({"trial": i, "step": name}) for i in range(5)]
        events.append(Event("work_submitted", child, work, ts=clock, data={
            "name": name, "executor": "broker", "queue": "default", "parents": [first] if first else [],
            "jobs": [{"key": k, "args": {"trial": i}} for i, k in enumerate(keys)]}))
        for i, key in enumerate(keys):
            events += [Event("job_started", child, work, key, ts=clock + i * 0.1, data={"worker": WORKERS[1]}),
                       Event("job_finished", child, work, key, ts=clock + 1 + i * 0.1,
                             data={"worker": WORKERS[1], "start": clock + i * 0.1, "end": clock + 1 + i * 0.1})]
        events.append(Event("work_finished", child, work, ts=clock + 2, data={"status": "finished"}))
        first = work
        clock += 2
    events.append(Event("workflow_finished", child, ts=clock, data={"status": "finished"}))
    return events


def seed(server, live: bool = False) -> Seeded:
    """Record the run on a test server (``Running`` of conftest) through its recorder."""
    seeded, events = seed_events(live)
    recorder = server.server.recorder
    for start in range(0, len(events), 200):
        recorder.submit(events[start:start + 200])
    assert recorder.flush(120), "the recorder did not write the seeded run within 120 s"
    return seeded


def seed_deep(server, stages: int = 12, width: int = 5) -> str:
    """A workflow of ``stages`` x ``width`` one-job works (all named ``step``), each fed by the one before it in
    its lane and the first work of the stage before; returns the workflow id."""
    wf = uuid.uuid4().hex
    now = time.time() - stages
    events = [Event("workflow_started", wf, ts=now, data={"name": "deep-pipeline"})]
    previous: list[str] = []
    for s in range(stages):
        current = []
        for lane in range(width):
            work = uuid.uuid4().hex
            parents = sorted({previous[lane], previous[0]}) if previous else []
            key = get_unique_id_for_dict({"stage": s, "lane": lane})
            ts = now + s + lane * 0.01
            events += [Event("work_submitted", wf, work, ts=ts, data={"name": "step", "parents": parents,
                                                                      "jobs": [{"key": key, "args": {"lane": lane}}]}),
                       Event("job_started", wf, work, key, ts=ts, data={"worker": WORKERS[lane % 4]}),
                       Event("job_finished", wf, work, key, ts=ts + 0.5,
                             data={"worker": WORKERS[lane % 4], "start": ts, "end": ts + 0.5})]
            current.append(work)
        previous = current
    server.server.recorder.submit(events)
    assert server.server.recorder.flush(120)
    return wf


def record_to_file(path) -> Seeded:
    """Write a finished seeded run into a new SQLite file with the recorder's own batch write, once, for tests
    that each start a server on a copy of it."""
    from iworkflow.server.db import Database
    from iworkflow.server.recorder import Recorder

    seeded, events = seed_events(live=False)
    db = Database(f"sqlite:///{path}")
    try:
        Recorder(db, bus=None, secret=b"")._write(events)
    finally:
        db.dispose()
    return seeded
