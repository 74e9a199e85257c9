"""The monitor: requeues jobs whose worker went silent or overran, then fails them for good.

A running job with no start/heartbeat for ``heartbeat_timeout`` (or running past its work's
``max_walltime``) is lost.  After a backoff the monitor sends ``Control(retry, attempt+1)`` to the
work's results queue, where the driver resubmits it.  A requeued job that nobody starts within
``heartbeat_timeout`` is lost again.  Once ``max_attempt`` attempts are spent, a signed failure
result naming the lost worker(s) goes to ``results.<work_id>``, so the caller's wait ends.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from iworkflow.bus.base import Bus
from iworkflow.errors import JobLostError
from iworkflow.failures import failure_message
from iworkflow.messages import RETRY, Control, results_destination

from . import states
from .db import Database
from .models import (
    FAILED,
    QUEUED,
    RETRYING,
    RUNNING,
    WORK_TERMINAL,
    WORKER_ALIVE,
    WORKER_LOST,
    JobRecord,
    WorkerRecord,
    WorkflowRecord,
    WorkRecord,
)
from .recorder import log_event, write_lines

logger = logging.getLogger(__name__)

#: executors that notice a dead job themselves and publish its failure (no heartbeats needed)
SELF_SUPERVISED = frozenset({"local", "thread"})


@dataclass(frozen=True)
class Backoff:
    """Delay before retry attempt ``n+1`` after attempt ``n`` was lost: ``base * factor**(n-1)``, capped."""

    base: float = 1.0
    factor: float = 2.0
    cap: float = 60.0

    def delay(self, attempt: int) -> float:
        return min(self.cap, self.base * self.factor ** max(0, attempt - 1))


@dataclass
class MonitorPolicy:
    heartbeat_timeout: float = 30.0
    max_attempt: int = 5
    backoff: Backoff = field(default_factory=Backoff)
    self_supervised: frozenset[str] = SELF_SUPERVISED


@dataclass(frozen=True)
class Action:
    """What one tick did to one job (for logs and tests)."""

    kind: str
    work_id: str
    job_key: str
    attempt: int
    reason: str
    message: bytes | None = field(default=None, repr=False)
    #: the queue the message goes to (the work's driver's results queue)
    destination: str = ""


class Monitor:
    """Checks the recorded jobs every ``interval`` seconds on its own thread."""

    def __init__(self, db: Database, bus: Bus, secret: bytes, policy: MonitorPolicy | None = None,
                 interval: float = 1.0):
        self.db = db
        self.bus = bus
        self.secret = secret
        self.policy = policy or MonitorPolicy()
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Monitor:
        self._thread = threading.Thread(target=self._loop, name="iworkflow-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:
                logger.exception("monitor tick failed")

    def tick(self, now: float | None = None) -> list[Action]:
        """One pass over the unfinished jobs; messages go out only after the new states are committed."""
        now = time.time() if now is None else now
        actions: list[Action] = []
        with self.db.session() as session, session.begin():
            rows = session.execute(
                select(JobRecord, WorkRecord)
                .join(WorkRecord, JobRecord.work_id == WorkRecord.id)
                .outerjoin(WorkflowRecord, WorkRecord.workflow_id == WorkflowRecord.id)
                .where(or_(JobRecord.status.in_((RUNNING, RETRYING)),
                           (JobRecord.status == QUEUED) & JobRecord.requeued.is_(True)))
                .where(WorkRecord.status.not_in(WORK_TERMINAL))
                .where(or_(WorkflowRecord.status.is_(None), WorkflowRecord.status != "cancelled"))
            ).all()
            for job, work in rows:
                action = self._check(session, job, work, now)
                if action is not None:
                    actions.append(action)
                    log_event(session, f"job_{action.kind}", work.id, job.job_key, action.attempt, now,
                              workflow_id=job.workflow_id, worker=job.worker, message=action.reason)
            write_lines(session)
            failed = [a.work_id for a in actions if a.kind == "failed"]
            if failed:
                states.refresh(session, failed, now=now)
            self._silent_workers(session, now)
        for action in actions:
            if action.message is not None:
                self.bus.publish(action.destination, action.message)
            log = logger.error if action.kind == "failed" else logger.warning
            log("monitor %s job %s of work %s (attempt %d): %s", action.kind, action.job_key, action.work_id,
                action.attempt, action.reason)
        return actions

    def _silent_workers(self, session: Session, now: float) -> None:
        """A worker that stopped reporting for ``heartbeat_timeout`` without saying it stopped is lost."""
        for worker in session.scalars(select(WorkerRecord).where(
                WorkerRecord.state == WORKER_ALIVE,
                WorkerRecord.last_heartbeat < now - self.policy.heartbeat_timeout)).all():
            worker.state = WORKER_LOST
            worker.running = worker.held = 0  # its last report is stale: nothing runs there that we know of
            worker.updated_at = now
            logger.warning("worker %s is lost: no report for %.0fs", worker.name, now - (worker.last_heartbeat or 0))

    def _watched(self, job: JobRecord, work: WorkRecord) -> bool:
        executor = (work.executor or "").split("://", 1)[0]
        return job.heartbeats or executor not in self.policy.self_supervised

    def _check(self, session: Session, job: JobRecord, work: WorkRecord, now: float) -> Action | None:
        timeout = self.policy.heartbeat_timeout
        if job.status == RETRYING:
            if job.retry_at is not None and job.retry_at > now:
                return None
            return self._retry(job, work, now)
        if job.status == QUEUED:
            since = job.last_seen or now
            if now - since <= timeout:
                return None
            return self._lost(job, work, now, f"requeued attempt {job.attempt} was not started by any worker "
                                              f"within heartbeat_timeout={timeout:g}s")
        if work.max_walltime and job.started_at and now - job.started_at > work.max_walltime:
            return self._lost(job, work, now, f"ran {now - job.started_at:.0f}s on {job.worker or 'an unknown worker'},"
                                              f" past max_walltime={work.max_walltime:g}s")
        if not self._watched(job, work):
            return None
        last = max(x for x in (job.last_seen, job.started_at, 0.0) if x is not None)
        if now - last <= timeout:
            return None
        return self._lost(job, work, now, f"worker {job.worker or 'unknown'} sent no heartbeat for "
                                          f"{now - last:.0f}s (heartbeat_timeout={timeout:g}s)")

    def _lost(self, job: JobRecord, work: WorkRecord, now: float, reason: str) -> Action:
        if job.worker and job.status == RUNNING:
            lost = [w for w in (job.lost_workers or "").split(",") if w]
            lost.append(job.worker)
            job.lost_workers = ",".join(lost)[-4000:]
        job.error = f"lost: {reason}"
        job.updated_at = now
        if job.attempt >= self.policy.max_attempt:
            return self._fail(job, work, now, reason)
        job.status = RETRYING
        job.retry_at = now + self.policy.backoff.delay(job.attempt)
        return Action("lost", work.id, job.job_key, job.attempt, reason)

    def _retry(self, job: JobRecord, work: WorkRecord, now: float) -> Action:
        attempt = job.attempt + 1
        reason = job.error or "lost"
        control = Control(action=RETRY, workflow_id=job.workflow_id, work_id=work.id, job_key=job.job_key,
                          attempt=attempt, reason=reason)
        job.status = QUEUED
        job.attempt = attempt
        job.requeued = True
        job.retry_at = None
        job.last_seen = now
        job.updated_at = now
        return Action("retried", work.id, job.job_key, attempt, reason, control.encode(self.secret),
                      results_destination(work.id, work.reply_to))

    def _fail(self, job: JobRecord, work: WorkRecord, now: float, reason: str) -> Action:
        workers = [w for w in (job.lost_workers or "").split(",") if w] or [job.worker or "unknown"]
        message = (f"job {job.job_key} of work {work.name or work.id} was lost on worker "
                   f"{', '.join(dict.fromkeys(workers))}; gave up after {job.attempt} of "
                   f"{self.policy.max_attempt} attempts (last: {reason})")
        header = {"workflow_id": job.workflow_id, "work_id": work.id, "job_key": job.job_key,
                  "attempt": job.attempt}
        result = failure_message(header, JobLostError(message), self.secret, start=job.started_at or now,
                                 worker=workers[-1])
        job.status = FAILED
        job.error = f"iworkflow.errors.JobLostError: {message}"
        job.finished_at = now
        job.retry_at = None
        job.requeued = False
        return Action("failed", work.id, job.job_key, job.attempt, message,
                      result, results_destination(work.id, work.reply_to))
