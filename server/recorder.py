"""The recorder: consumes the ``events`` stream and writes the DAG idempotently.

It reads the durable queue ``events.server`` bound to the ``events`` topic (``Bus.subscribe_durable``),
so events sent while the server is down wait for it, and it acks an event only once its batch is
written: a server killed mid-batch gets those events again.

Every non-heartbeat event is logged once under a digest of its content, so a redelivered or
duplicated event changes nothing; job state only moves forward (the first terminal event wins,
events of an older attempt never overwrite a newer one), so out-of-order events are harmless.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import queue
import threading
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from iworkflow.bus.base import Bus, Delivery, Subscription
from iworkflow.errors import InvalidMessage
from iworkflow.messages import EVENTS_TOPIC, Event, decode_events, encode_event

from . import states
from .db import Database
from .models import (
    CANCELLED,
    FAILED,
    FINISHED,
    JOB_TERMINAL,
    QUEUED,
    RUNNING,
    UNKNOWN,
    WORKER_ALIVE,
    WORKER_STOPPED,
    EventRecord,
    JobRecord,
    WorkEdge,
    WorkerRecord,
    WorkflowRecord,
    WorkRecord,
)

logger = logging.getLogger(__name__)

JOB_EVENTS = ("job_started", "job_heartbeat", "job_finished", "job_failed")
#: each server says it is there on the events topic; one that reads another's notice shares its backlog
SERVER_PRESENCE = "server_presence"
PRESENCE_SECONDS = 2.0
WORKER_EVENTS = ("worker_heartbeat", "worker_stopped")
#: a job failure of this type means the job was cancelled, not that it failed
CANCELLED_ERROR = "WorkCancelled"
#: the name of the server's durable copy of the events topic (servers sharing a prefix share the queue)
DURABLE_NAME = "server"
TEXT_LIMIT = 16000


def event_digest(event: Event) -> str:
    """Content digest of an event: the same event delivered twice has the same digest."""
    d = {"type": event.type, "workflow_id": event.workflow_id, "work_id": event.work_id,
         "job_key": event.job_key, "attempt": event.attempt, "ts": event.ts, "data": event.data}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def _clip(text: Any, limit: int = TEXT_LIMIT) -> str | None:
    if text is None or text == "":
        return None
    s = str(text)
    return s if len(s) <= limit else s[-limit:]


def _min(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _workflow(session: Session, workflow_id: str | None, now: float) -> WorkflowRecord | None:
    if not workflow_id:
        return None
    held: dict[str, WorkflowRecord] = session.info.setdefault("iwf_workflow_records", {})
    wf = held.get(workflow_id) or session.get(WorkflowRecord, workflow_id)
    if wf is None:
        wf = WorkflowRecord(id=workflow_id, name="", status=UNKNOWN, updated_at=now)
        session.add(wf)
        session.flush()
    held[workflow_id] = wf  # the session's identity map holds unchanged records weakly: keep it for the batch
    return wf


def _work(session: Session, work_id: str, workflow_id: str | None, now: float) -> WorkRecord:
    held: dict[str, WorkRecord] = session.info.setdefault("iwf_work_records", {})
    work = held.get(work_id) or session.get(WorkRecord, work_id)
    if work is None:
        _workflow(session, workflow_id, now)
        work = WorkRecord(id=work_id, workflow_id=workflow_id or None, status=UNKNOWN, updated_at=now)
        session.add(work)
        session.flush()
    elif work.workflow_id is None and workflow_id:
        _workflow(session, workflow_id, now)
        work.workflow_id = workflow_id
    held[work_id] = work  # the session's identity map holds unchanged records weakly: keep it for the batch
    return work


def _job(session: Session, work: WorkRecord, key: str, now: float) -> JobRecord:
    cache: dict[tuple[str, str], JobRecord | None] = session.info.setdefault("iwf_jobs", {})
    pair = (work.id, key)
    job = cache.get(pair)
    if job is None and pair not in cache:
        job = session.scalar(select(JobRecord).where(JobRecord.work_id == work.id, JobRecord.job_key == key))
    if job is None:
        job = JobRecord(work_id=work.id, workflow_id=work.workflow_id, job_key=key, status=QUEUED, attempt=1,
                        heartbeats=False, requeued=False, updated_at=now)
        session.add(job)
    cache[pair] = job
    return job


def preload(session: Session, events: list[Event]) -> None:
    """Read what a batch of events will look up in a few queries instead of one or two per event: the digests
    already recorded and the jobs named (a job not found is remembered as absent)."""
    digests = [event_digest(e) for e in events if e.type not in ("job_heartbeat", "job_output", *WORKER_EVENTS)]
    known: set[str] = session.info.setdefault("iwf_digests", set())
    checked: set[str] = session.info.setdefault("iwf_checked", set())
    for i in range(0, len(digests), 500):
        chunk = digests[i:i + 500]
        known.update(session.scalars(select(EventRecord.digest).where(EventRecord.digest.in_(chunk))).all())
        checked.update(chunk)
    wanted: dict[str, set[str]] = {}
    for e in events:
        if e.work_id and e.job_key is not None:
            wanted.setdefault(e.work_id, set()).add(str(e.job_key))
        elif e.type == "work_submitted" and e.work_id:
            keys = {str(spec.get("key")) for spec in (e.data or {}).get("jobs") or [] if isinstance(spec, dict)}
            wanted.setdefault(e.work_id, set()).update(keys)
    cache: dict[tuple[str, str], JobRecord | None] = session.info.setdefault("iwf_jobs", {})
    for work_id, keys in wanted.items():
        ordered = sorted(keys)
        for i in range(0, len(ordered), 500):
            chunk = ordered[i:i + 500]
            for job in session.scalars(select(JobRecord).where(JobRecord.work_id == work_id,
                                                               JobRecord.job_key.in_(chunk))).all():
                cache[(work_id, job.job_key)] = job
            for key in chunk:
                cache.setdefault((work_id, key), None)


def _seen(session: Session, digest: str) -> bool:
    """Whether an event line with this digest is recorded (or written in this batch); remembers it as written."""
    known: set[str] = session.info.setdefault("iwf_digests", set())
    checked: set[str] = session.info.setdefault("iwf_checked", set())
    if digest in known:
        return True
    if digest not in checked and session.scalar(select(EventRecord.id).where(EventRecord.digest == digest)):
        return True
    known.add(digest)
    return False


def touched(session: Session) -> tuple[set[str], set[str]]:
    """The works and workflows whose statuses this session's events may have changed (see ``states.refresh``)."""
    return session.info.setdefault("iwf_works", set()), session.info.setdefault("iwf_workflows", set())


def _touch(session: Session, work_id: str | None = None, workflow_id: str | None = None) -> None:
    works, workflows = touched(session)
    if work_id:
        works.add(work_id)
    if workflow_id:
        workflows.add(workflow_id)


def log_event(session: Session, type_: str, work_id: str | None, job_key: str | None, attempt: int, ts: float,
              workflow_id: str | None = None, worker: str | None = None, message: str | None = None) -> bool:
    """Add one line to a job's history (once: the same line twice is one), for lines no event carries as such
    (a heartbeat that started a job, the monitor's lost and retry decisions)."""
    key = json.dumps([type_, work_id, job_key, attempt, ts, worker], default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()
    lines: dict[str, EventRecord] = session.info.setdefault("iwf_lines", {})
    if digest in lines:
        return False
    lines[digest] = EventRecord(digest=digest, type=type_, workflow_id=workflow_id, work_id=work_id, job_key=job_key,
                                attempt=attempt, ts=ts, worker=_clip(worker, 255), message=_clip(message, 2000))
    return True


def write_lines(session: Session) -> int:
    """Add the lines ``log_event`` gathered, but those already recorded (checked in bulk); returns how many."""
    lines: dict[str, EventRecord] = session.info.pop("iwf_lines", {})
    digests = list(lines)
    for i in range(0, len(digests), 500):
        chunk = digests[i:i + 500]
        for known in session.scalars(select(EventRecord.digest).where(EventRecord.digest.in_(chunk))).all():
            lines.pop(known, None)
    session.add_all(lines.values())
    return len(lines)


def apply_event(session: Session, event: Event, now: float | None = None) -> bool:
    """Write one event; returns False when it was already recorded (or carries nothing to record)."""
    now = time.time() if now is None else now
    if event.type == "job_heartbeat":
        return _heartbeat(session, event, now)
    if event.type in WORKER_EVENTS:
        return _worker(session, event, now)
    if event.type == "job_output":
        return _output(session, event, now)
    handler = _HANDLERS.get(event.type)
    if handler is None:
        logger.debug("event type %s is not recorded", event.type)
        return False
    digest = event_digest(event)
    if _seen(session, digest):
        return False
    handler(session, event, now)
    data = event.data or {}
    session.add(EventRecord(
        digest=digest, type=event.type, workflow_id=event.workflow_id, work_id=event.work_id,
        job_key=event.job_key, attempt=event.attempt, ts=event.ts, worker=_clip(data.get("worker"), 255),
        message=_clip(data.get("error") or data.get("status") or data.get("reason"), 2000),
    ))
    return True


def _workflow_started(session: Session, event: Event, now: float) -> None:
    wf = _workflow(session, event.workflow_id, now)
    if wf is None:
        return
    data = event.data or {}
    wf.name = wf.name or str(data.get("name") or "")[:255]
    wf.parent_id = wf.parent_id or data.get("parent_id")
    wf.submitted_at = _min(wf.submitted_at, event.ts)
    if wf.status == UNKNOWN:
        wf.status = RUNNING
    wf.updated_at = now


def _workflow_finished(session: Session, event: Event, now: float) -> None:
    wf = _workflow(session, event.workflow_id, now)
    if wf is None:
        return
    data = event.data or {}
    if wf.status != CANCELLED:
        wf.status = str(data.get("status") or "finished")[:16]
    _touch(session, workflow_id=wf.id)
    wf.error = wf.error or _clip(data.get("error"))
    wf.finished_at = _max(wf.finished_at, event.ts)
    wf.updated_at = now


def _work_submitted(session: Session, event: Event, now: float) -> None:
    if not event.work_id:
        return
    work = _work(session, event.work_id, event.workflow_id, now)
    data = event.data or {}
    work.name = work.name or str(data.get("name") or "")[:255]
    work.executor = work.executor or str(data.get("executor") or "")[:255]
    work.queue = work.queue or str(data.get("queue") or "")[:255]
    if data.get("reply_to"):
        work.reply_to = str(data["reply_to"])[:255]
    if data.get("max_walltime"):
        work.max_walltime = float(data["max_walltime"])
    work.submitted_at = _min(work.submitted_at, event.ts)
    if work.status == UNKNOWN:
        work.status = RUNNING
    jobs = data.get("jobs") or []
    work.n_jobs = max(work.n_jobs or 0, len(jobs))
    _touch(session, work.id, work.workflow_id)
    work.updated_at = now
    for spec in jobs:
        key = str(spec.get("key"))
        job = _job(session, work, key, now)
        if job.args is None and "args" in spec:
            job.args = _clip(json.dumps(spec["args"], default=repr), 8000)
        job.submitted_at = _min(job.submitted_at, event.ts)
    for parent in data.get("parents") or []:
        if parent and session.get(WorkEdge, (str(parent), work.id)) is None:
            session.add(WorkEdge(parent_id=str(parent), child_id=work.id, workflow_id=work.workflow_id))
    session.flush()


def _work_finished(session: Session, event: Event, now: float) -> None:
    if not event.work_id:
        return
    work = _work(session, event.work_id, event.workflow_id, now)
    if work.status != CANCELLED:
        work.status = str((event.data or {}).get("status") or "finished")[:16]
    _touch(session, work.id, work.workflow_id)
    work.finished_at = _max(work.finished_at, event.ts)
    work.updated_at = now


def _job_for(session: Session, event: Event, now: float) -> JobRecord | None:
    if not event.work_id or event.job_key is None:
        logger.warning("job event %s without work_id/job_key ignored", event.type)
        return None
    work = _work(session, event.work_id, event.workflow_id, now)
    return _job(session, work, str(event.job_key), now)


def _job_started(session: Session, event: Event, now: float) -> None:
    job = _job_for(session, event, now)
    if job is None:
        return
    worker = _clip((event.data or {}).get("worker"), 255)
    if job.status in JOB_TERMINAL:
        job.started_at = job.started_at or event.ts
        job.worker = job.worker or worker
        if event.attempt >= job.attempt:
            job.last_seen = _max(job.last_seen, event.ts)
    elif event.attempt >= job.attempt:
        job.status = RUNNING
        job.attempt = event.attempt
        job.worker = worker or job.worker
        job.started_at = event.ts
        job.last_seen = _max(job.last_seen, event.ts)
        job.requeued = False
        job.retry_at = None
    job.updated_at = now


def _heartbeat(session: Session, event: Event, now: float) -> bool:
    """A heartbeat names the worker running the job, which is who gets blamed if it stops.  One with
    ``running: false`` only says a worker holds the job (prefetched): it stays queued, and is not lost meanwhile."""
    job = _job_for(session, event, now)
    if job is None or event.attempt < job.attempt:
        return False
    data = event.data or {}
    worker = _clip(data.get("worker"), 255)
    if data.get("running", True) is False:
        if job.status == QUEUED:
            job.last_seen = _max(job.last_seen, event.ts)
            job.updated_at = now
        return True
    if job.status not in JOB_TERMINAL and (job.status != RUNNING or event.attempt > job.attempt):
        start = _number(data.get("start")) or event.ts
        _job_started(session, Event("job_started", event.workflow_id, event.work_id, event.job_key, event.attempt,
                                    start, {"worker": worker}), now)
        log_event(session, "job_started", event.work_id, str(event.job_key), event.attempt, start,
                  workflow_id=job.workflow_id, worker=worker)
    if worker and job.status not in JOB_TERMINAL:
        job.worker = worker
    job.heartbeats = True
    job.last_seen = _max(job.last_seen, event.ts)
    job.updated_at = now
    return True


def _output(session: Session, event: Event, now: float) -> bool:
    """A running job's output tail so far (the live tail); its end event brings the final one."""
    job = _job_for(session, event, now)
    if job is None or job.status in JOB_TERMINAL or event.attempt < job.attempt:
        return False
    job.output = _clip((event.data or {}).get("output"))
    job.updated_at = now
    return True


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and abs(number) < 1e12 else None


def _worker(session: Session, event: Event, now: float) -> bool:
    """A worker's own report: alive (with its queue, slots and counts), or stopped cleanly."""
    data = event.data or {}
    name = _clip(data.get("worker"), 255)
    if not name:
        return False
    record = session.get(WorkerRecord, name)
    if record is None:
        record = WorkerRecord(name=name, queue="", slots=0, state=WORKER_ALIVE, running=0, held=0, served=0,
                              updated_at=now)
        session.add(record)
    if record.last_heartbeat is not None and event.ts < record.last_heartbeat:
        return False  # an older report, delivered late
    record.queue = _clip(data.get("queue"), 255) or record.queue
    record.slots = int(_number(data.get("slots")) or record.slots or 0)
    record.running = int(_number(data.get("running")) or 0)
    record.held = int(_number(data.get("held")) or 0)
    record.served = int(_number(data.get("served")) or 0)
    record.started_at = _number(data.get("started")) or record.started_at
    record.last_heartbeat = event.ts
    record.state = WORKER_STOPPED if event.type == "worker_stopped" else WORKER_ALIVE
    record.stopped_at = event.ts if record.state == WORKER_STOPPED else None
    record.updated_at = now
    return True


def _job_ended(session: Session, event: Event, now: float) -> None:
    """The first end of a job wins; a success clears the errors of earlier attempts (their history stays in the
    events), and a failure because the work was cancelled reads as cancelled."""
    job = _job_for(session, event, now)
    if job is None or job.status in JOB_TERMINAL:
        return
    _touch(session, job.work_id, job.workflow_id)
    data = event.data or {}
    error = _clip(data.get("error"))
    if event.type == "job_finished":
        job.status = FINISHED
    elif error and CANCELLED_ERROR in error.split(":", 1)[0]:
        job.status = CANCELLED
    else:
        job.status = FAILED
    job.attempt = max(job.attempt, event.attempt)
    job.worker = _clip(data.get("worker"), 255) or job.worker
    start = data.get("start")
    job.started_at = float(start) if start else (job.started_at or event.ts)
    end = data.get("end")
    job.finished_at = float(end) if end else event.ts
    job.retry_at = None
    job.requeued = False
    if event.type == "job_failed":
        job.error = error or "job failed"
        job.traceback = _clip(data.get("traceback"))
    else:
        job.error = job.traceback = None
    job.output = _clip(data.get("output"))
    if data.get("result_ref"):
        job.result_ref = _clip(data["result_ref"], 1024)
    job.cached = bool(data.get("cached"))
    job.updated_at = now


def _retry_refused(session: Session, event: Event, now: float) -> None:
    """The driver could not take a user's retry of a failed job: the job is failed again, saying why."""
    job = _job_for(session, event, now)
    if job is None or job.status in JOB_TERMINAL or job.attempt != event.attempt:
        return
    _touch(session, job.work_id, job.workflow_id)
    job.status = FAILED
    job.attempt = max(1, event.attempt - 1)
    job.requeued = False
    job.finished_at = event.ts
    reason = str((event.data or {}).get("reason") or "refused by its driver")
    job.error = _clip(f"{job.error or 'job failed'} (retry refused: {reason})")
    job.updated_at = now


_HANDLERS = {
    "workflow_started": _workflow_started,
    "workflow_finished": _workflow_finished,
    "work_submitted": _work_submitted,
    "work_finished": _work_finished,
    "job_started": _job_started,
    "job_finished": _job_ended,
    "job_failed": _job_ended,
    "retry_refused": _retry_refused,
}


class Recorder:
    """Subscribes to the events topic and writes events in batches on its own thread."""

    def __init__(self, db: Database, bus: Bus, secret: bytes, batch: int = 500, where: str = ""):
        import uuid

        self.db = db
        self.bus = bus
        self.secret = secret
        self.batch = batch
        #: this server, in its presence notices: a random id, and where it is (its URL) for the warning
        self.id = uuid.uuid4().hex
        self.where = where
        #: other servers seen reading this server's backlog (id -> where)
        self.rivals: dict[str, str] = {}
        self._stopped = threading.Event()
        self.recorded = 0
        self.rejected = 0
        self._queue: queue.Queue[tuple[Event, Delivery | None] | None] = queue.Queue()
        self._subscription: Subscription | None = None
        self._thread: threading.Thread | None = None
        self._pending = 0
        self._cond = threading.Condition()

    def start(self) -> Recorder:
        self._thread = threading.Thread(target=self._loop, name="iworkflow-recorder", daemon=True)
        self._thread.start()
        self._subscription = self.bus.subscribe_durable(EVENTS_TOPIC, DURABLE_NAME, self._on_delivery,
                                                        prefetch=self.batch)
        threading.Thread(target=self._announce, name="iworkflow-presence", daemon=True).start()
        return self

    def _announce(self) -> None:
        """Broadcast this server's presence now and then: on a broker, servers sharing the events backlog
        (same destination prefix) read each other's notices, since each takes only part of the stream."""
        while True:
            try:
                self.bus.broadcast_async(EVENTS_TOPIC, encode_event(Event(SERVER_PRESENCE, data={
                    "server": self.id, "where": self.where}), self.secret))
            except Exception as err:  # noqa: BLE001 - a notice, never a reason to stop recording
                logger.debug("presence notice not sent: %s", err)
            if self._stopped.wait(PRESENCE_SECONDS):
                return

    def _rival(self, event: Event) -> bool:
        """Whether this is a presence notice (warn once per other server found reading the same backlog)."""
        if event.type != SERVER_PRESENCE:
            return False
        data = event.data or {}
        other = str(data.get("server") or "")
        if other and other != self.id and other not in self.rivals:
            self.rivals[other] = str(data.get("where") or "?")
            logger.warning("another iworkflow server (%s) reads the same event backlog %s.%s: each of you records "
                           "only part of the events; run one server per broker and destination_prefix, or give each "
                           "its own IWORKFLOW_DESTINATION_PREFIX", self.rivals[other], EVENTS_TOPIC, DURABLE_NAME)
        return True

    def consumers(self) -> dict[str, str]:
        """The state of the events consumer (see ``Subscription.state``): a lost one is reported by /api/health."""
        sub = self._subscription
        return {f"{EVENTS_TOPIC}.{DURABLE_NAME}": sub.state if sub is not None else "stopped"}

    def stop(self) -> None:
        self._stopped.set()
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def _on_delivery(self, delivery: Delivery) -> None:
        try:
            events = decode_events(delivery.body, self.secret)
        except InvalidMessage as err:
            self.rejected += 1
            logger.error("recorder drops an unreadable event: %s", err)
            delivery.ack()
            return
        events = [e for e in events if not self._rival(e)]
        self.submit(events, delivery)

    def submit(self, events: list[Event], delivery: Delivery | None = None) -> None:
        """Queue one message's events for writing on the recorder thread; its delivery is acked once they are
        written."""
        with self._cond:
            self._pending += 1
        self._queue.put((events, delivery))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event received so far is written; False if that took longer than ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            items = [first]
            stop = False
            while len(items) < self.batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                items.append(item)
            self._write([event for batch, _ in items for event in batch])
            for _, delivery in items:
                if delivery is not None:
                    delivery.ack()
            with self._cond:
                self._pending -= len(items)
                self._cond.notify_all()
            if stop:
                return

    def _write(self, events: list[Event]) -> None:
        try:
            with self.db.session() as session, session.begin():
                preload(session, events)
                written = sum(apply_event(session, event) for event in events)
                write_lines(session)
                works, workflows = touched(session)
                states.refresh(session, works, workflows, time.time())
            self.recorded += written
            return
        except Exception:
            logger.exception("batch of %d events failed; writing them one by one", len(events))
        for event in events:
            try:
                with self.db.session() as session, session.begin():
                    self.recorded += apply_event(session, event)
                    write_lines(session)
                    works, workflows = touched(session)
                    states.refresh(session, works, workflows, time.time())
            except Exception:
                logger.exception("event %s for %s/%s could not be recorded", event.type, event.work_id,
                                 event.job_key)
