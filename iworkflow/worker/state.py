"""The broker worker's state machine: ``handle(event) -> [instructions]``, with no I/O, clock or thread.

Everything a worker decides lives here, driven by events the service layer (``service.py``) turns broker
messages, runner outcomes and timer ticks into; the instructions it returns are carried out there.  The
tests drive it with plain values (tokens stand for broker deliveries).

What it guarantees:

- a job message signed longer ago than ``job_max_age`` (or dated in the future past ``clock_skew``) never
  runs: it fails, saying why, and goes to the dead letters (a captured message cannot be replayed later);
- a job id+attempt runs at most once per worker process: a copy arriving while it runs is adopted (settled
  with it), one arriving after its result was published is dropped (the last ``REMEMBERED_RUNS`` ids);
- a detached driver job runs outside the job slots, and waits while another worker holds it (its
  heartbeats on the ``holders`` topic are its lease), so a broker restart never starts a second copy;
- a job redelivered because its worker was lost starts only once the other workers know who holds it
  (the holder notice is confirmed), and fails with ``JobLostError`` naming the lost workers past
  ``max_attempt``;
- cancelled work never starts; a lost job consumer stops the worker with a clear message.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..envelope import Envelope
from ..errors import InvalidMessage, JobLostError, JobTooOld, WorkCancelled

logger = logging.getLogger(__name__)

REMEMBERED = 10_000
#: job id+attempt pairs remembered as run here (older ones are refused by their age anyway)
REMEMBERED_RUNS = 100_000
PREFETCH_MIN_PER_SLOT = 2
PREFETCH_MAX_PER_SLOT = 64
REFILL_SECONDS = 0.05
#: how often the prefetch is reconsidered, and by how much it must change to be applied
PREFETCH_REVIEW_SECONDS = 0.5
PREFETCH_STEP = 2.0
#: a driver job's holder keeps its lease while its heartbeats are at most this many intervals apart, and never
#: less than LEASE_MIN seconds (longer than the buses' longest reconnect wait, so a holder that reconnects late
#: after a broker restart keeps its job)
LEASE_HEARTBEATS = 3.0
LEASE_MIN = 15.0

JOBS, DRIVERS = "jobs", "drivers"
#: phases of a held job: waiting for another worker's lease to lapse, waiting for its holder notice, running
WAITING, ANNOUNCING, RUNNING = "waiting", "announcing", "running"


@dataclass(frozen=True)
class JobInfo:
    """What a worker knows of a job: its verified header (the body stays unpickled until a runner)."""

    id: str
    workflow_id: str = ""
    work_id: str = ""
    job_key: str = ""
    attempt: int = 1
    ts: float = 0.0
    reply_to: str | None = None
    driver: bool = False
    walltime: float | None = None

    @classmethod
    def from_envelope(cls, env: Envelope) -> JobInfo:
        if env.kind != "job":
            raise InvalidMessage(f"expected a job message, got {env.kind!r}")
        return cls(id=env.id, workflow_id=env.workflow_id or "", work_id=env.work_id or "",
                   job_key=env.job_key or "", attempt=env.attempt, ts=env.ts, reply_to=env.reply_to,
                   driver=env.driver, walltime=env.walltime)

    @property
    def run_key(self) -> tuple[str, int]:
        return self.id, self.attempt

    @property
    def key(self) -> tuple[str, str]:
        return self.work_id, self.job_key


# --- events ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Delivered:
    """A verified job message taken from the jobs (or drivers) queue; ``token`` stands for the delivery."""

    token: Any
    job: JobInfo
    count: int
    now: float
    queue: str = JOBS
    #: False for the jobs of a bundle (the bundle was counted as one message: ``BundleTaken``)
    whole_message: bool = True


@dataclass(frozen=True)
class Malformed:
    """A message on a job queue that is not a job signed with our secret."""

    token: Any
    reason: str


@dataclass(frozen=True)
class BundleTaken:
    """A bundle of ``size`` jobs was taken as one message (the prefetch counts messages)."""

    size: int


@dataclass(frozen=True)
class NoticeSent:
    """The broker confirmed (or refused: ``error``) the holder notice for these jobs."""

    ids: tuple[str, ...]
    error: str = ""


@dataclass(frozen=True)
class Finished:
    """A job handed to a runner is over: ``done`` (its result is published), ``cancelled`` before it started,
    ``invalid`` (the runner refused the message) or ``failed`` (it could not run here)."""

    id: str
    outcome: str
    now: float
    error: str = ""
    job_seconds: float | None = None


@dataclass(frozen=True)
class JobStarted:
    """A runner process started this job (it was only held, prefetched, until now)."""

    id: str
    at: float


@dataclass(frozen=True)
class WorkerStarted:
    """The worker is consuming: it reports itself to the server."""

    now: float


@dataclass(frozen=True)
class WorkerStopped:
    """The worker has settled every job and is about to exit."""

    now: float


@dataclass(frozen=True)
class CancelRequested:
    workflow_id: str = ""
    work_id: str = ""
    reason: str = ""
    now: float = 0.0


@dataclass(frozen=True)
class HolderSeen:
    """Another worker (or this one) holds these jobs (``keys``: work id, job key), or has just finished them
    (``done``: job id, attempt)."""

    worker: str
    now: float
    keys: tuple[tuple[str, str], ...] = ()
    done: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class ConsumerChanged:
    name: str
    state: str
    error: str = ""


@dataclass(frozen=True)
class Tick:
    """The heartbeat interval passed."""

    now: float


@dataclass(frozen=True)
class Stopping:
    """Stop taking jobs: the ones not started go back to the broker."""


# --- instructions --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ack:
    tokens: tuple[Any, ...]


@dataclass(frozen=True)
class Requeue:
    tokens: tuple[Any, ...]


@dataclass(frozen=True)
class DeadLetter:
    tokens: tuple[Any, ...]
    reason: str


@dataclass(frozen=True)
class Fail:
    """Publish a failure result saying ``error`` (and a ``job_failed`` event for the server), then settle the
    tokens (ack, or dead-letter when ``dead``)."""

    tokens: tuple[Any, ...]
    job: JobInfo
    error: BaseException
    dead: bool = False


@dataclass(frozen=True)
class Forward:
    """Move a message to another of this worker's queues: publish it there, then ack it."""

    token: Any
    queue: str


@dataclass(frozen=True)
class Run:
    job: JobInfo
    token: Any
    driver: bool


@dataclass(frozen=True)
class Stop:
    """Stop a running job: cancel it if it has not started, else publish ``error`` as its result (and as a
    ``job_failed`` event) and kill it."""

    job: JobInfo
    token: Any
    error: BaseException


@dataclass(frozen=True)
class Heartbeat:
    """Heartbeats for the server: of jobs a runner started (``starts``: when), or of one just ``accepted`` (held
    here, not running yet); running driver jobs' heartbeats also go on the holders topic, as their lease."""

    jobs: tuple[JobInfo, ...]
    accepted: bool = False
    starts: tuple[float, ...] = ()


@dataclass(frozen=True)
class ReportWorker:
    """Tell the server about this worker: ``worker_heartbeat`` (alive) or ``worker_stopped``."""

    kind: str
    running: int
    held: int
    served: int
    started_at: float


@dataclass(frozen=True)
class Announce:
    """Add this job to the next batched holder notice (a first delivery: it runs without waiting)."""

    job: JobInfo


@dataclass(frozen=True)
class Notify:
    """Broadcast a holder notice for these jobs now and report its confirmation as ``NoticeSent``."""

    jobs: tuple[JobInfo, ...]


@dataclass(frozen=True)
class NotifyDone:
    """Tell the other workers these (driver) jobs are finished, so they drop any copy they hold."""

    jobs: tuple[JobInfo, ...]


@dataclass(frozen=True)
class SetPrefetch:
    prefetch: int


@dataclass(frozen=True)
class Exit:
    """The worker cannot go on (a job consumer is lost): stop and exit non-zero with this message."""

    message: str


Instruction = (Ack | Requeue | DeadLetter | Fail | Forward | Run | Stop | Heartbeat | Announce | Notify | NotifyDone
               | SetPrefetch | Exit | ReportWorker)

WORKER_HEARTBEAT, WORKER_STOPPED = "worker_heartbeat", "worker_stopped"


class Recent(OrderedDict):
    """An insertion-ordered map that forgets its oldest entries past ``limit``."""

    def __init__(self, limit: int = REMEMBERED):
        super().__init__()
        self.limit = limit

    def remember(self, key, value=True) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


@dataclass(eq=False)
class Held:
    """A job this worker took from the broker and has not settled yet (``tokens``: its deliveries, the
    first one and any copy adopted while it ran)."""

    job: JobInfo
    tokens: list[Any]
    count: int
    driver: bool
    since: float
    phase: str = ANNOUNCING
    #: when a runner started it (None: handed to the runners, still waiting behind other jobs)
    started: float | None = None


@dataclass
class WorkerState:
    """The state of one worker process (see the module docstring for what it guarantees)."""

    name: str
    slots: int
    max_attempt: int = 5
    heartbeat_interval: float = 5.0
    job_max_age: float = 6 * 3600.0
    clock_skew: float = 300.0
    held: dict[str, Held] = field(default_factory=dict)
    ran: Recent = field(default_factory=lambda: Recent(REMEMBERED_RUNS))
    cancelled: Recent = field(default_factory=Recent)
    #: (work id, job key) -> {worker: when last seen holding it}
    holders: Recent = field(default_factory=Recent)
    consumers: dict[str, str] = field(default_factory=dict)
    unannounced: list[str] = field(default_factory=list)
    announcing: bool = False
    stopping: bool = False
    served: int = 0
    #: moving average of jobs per message taken (bundles carry many): the prefetch counts messages
    jobs_per_message: float = 1.0
    prefetch: int = 0
    prefetch_reviewed: float = 0.0
    started_at: float = 0.0

    def __post_init__(self) -> None:
        self.prefetch = self.prefetch or self.slots * PREFETCH_MIN_PER_SLOT

    @property
    def lease_seconds(self) -> float:
        return max(LEASE_MIN, LEASE_HEARTBEATS * self.heartbeat_interval)

    def handle(self, event: Any) -> list[Instruction]:
        """Apply one event; returns what the service layer must do, in order."""
        handler = getattr(self, "_on_" + type(event).__name__, None)
        if handler is None:
            raise TypeError(f"the worker state machine has no handler for {type(event).__name__}")
        return handler(event)

    # --- jobs ------------------------------------------------------------------------------------------
    def _on_Delivered(self, ev: Delivered) -> list[Instruction]:
        job = ev.job
        if ev.queue == JOBS and ev.whole_message:
            self.jobs_per_message = 0.8 * self.jobs_per_message + 0.2
        if self.stopping:
            return [Requeue((ev.token,))]
        age = ev.now - job.ts
        if age > self.job_max_age + self.clock_skew:
            return [Fail((ev.token,), job, JobTooOld(
                f"job {job.job_key} of work {job.work_id} was sent {age:.0f}s ago, more than job_max_age="
                f"{self.job_max_age:g}s (+ clock_skew={self.clock_skew:g}s): refused as a possible replay; "
                "submit it again, or raise job_max_age on the workers if jobs wait that long"), dead=True)]
        if -age > self.clock_skew:
            return [Fail((ev.token,), job, JobTooOld(
                f"job {job.job_key} of work {job.work_id} is dated {-age:.0f}s in the future: the clocks of its "
                f"driver and of worker {self.name} differ by more than clock_skew={self.clock_skew:g}s"), dead=True)]
        held = self.held.get(job.id)
        if held is not None and held.job.attempt == job.attempt:
            held.tokens.append(ev.token)  # the same job again (its broker was restarted, or a replay)
            logger.warning("worker %s already holds job %s of work %s: its copy is settled with it", self.name,
                           job.job_key, job.work_id)
            return []
        if job.run_key in self.ran:
            logger.warning("worker %s already ran job %s of work %s (attempt %d) and published its result: the "
                           "copy is dropped", self.name, job.job_key, job.work_id, job.attempt)
            return [Ack((ev.token,))]
        if ev.queue == JOBS and job.driver:
            return [Forward(ev.token, DRIVERS)]
        if self._is_cancelled(job):
            return [Fail((ev.token,), job, WorkCancelled(
                f"job {job.job_key} of workflow {job.workflow_id} was cancelled before it ran"))]
        if ev.count > self.max_attempt:
            workers = sorted(self.holders.get(job.key, {})) or ["not seen by this worker"]
            return [Fail((ev.token,), job, JobLostError(
                f"job {job.job_key} of work {job.work_id} was delivered {ev.count - 1} time(s) and each time the "
                f"worker holding it was lost (last seen on: {', '.join(workers)}); giving up after "
                f"max_attempt={self.max_attempt}"))]
        held = Held(job, [ev.token], ev.count, driver=ev.queue == DRIVERS, since=ev.now)
        self.held[job.id] = held
        others = self._other_holders(job)
        if held.driver and (ev.count > 1 or others):
            held.phase = WAITING
            logger.warning("worker %s holds driver job %s of work %s back for %.0fs: it was delivered before (held "
                           "by %s); it starts if nobody renews its lease meanwhile", self.name, job.job_key,
                           job.work_id, self.lease_seconds, ", ".join(others) or "a worker now gone")
            return []
        return self._start(held)

    def _start(self, held: Held) -> list[Instruction]:
        """Accept a job: a first delivery runs at once (its holder notice goes out with the next batch), a
        redelivered one once its own notice is confirmed.  A retried or redelivered job's heartbeat tells the server
        who holds it (it stays queued there until a runner starts it; the monitor watches such jobs)."""
        out: list[Instruction] = []
        if held.count > 1 or held.job.attempt > 1:
            out.append(Heartbeat((held.job,), accepted=True))
        if held.count <= 1:
            held.phase = RUNNING
            return [*out, Run(held.job, held.tokens[0], held.driver), Announce(held.job)]
        held.phase = ANNOUNCING
        self.unannounced.append(held.job.id)
        if not self.announcing:
            out.extend(self._next_notice())
        return out

    def _next_notice(self) -> list[Instruction]:
        batch = [self.held[i].job for i in self.unannounced if i in self.held]
        self.unannounced = []
        self.announcing = bool(batch)
        return [Notify(tuple(batch))] if batch else []

    def _on_NoticeSent(self, ev: NoticeSent) -> list[Instruction]:
        if ev.error:
            logger.warning("holder notice for %d job(s) not confirmed (%s); they run anyway", len(ev.ids), ev.error)
        out: list[Instruction] = []
        for job_id in ev.ids:
            held = self.held.get(job_id)
            if held is not None and held.phase == ANNOUNCING:
                held.phase = RUNNING
                out.append(Run(held.job, held.tokens[0], held.driver))
        return out + self._next_notice()

    def _on_Finished(self, ev: Finished) -> list[Instruction]:
        held = self.held.pop(ev.id, None)
        if held is None:
            return []
        job, tokens = held.job, tuple(held.tokens)
        out: list[Instruction] = []
        if ev.outcome == "done":
            self.ran.remember(job.run_key)
            self.served += 1
            out.append(Ack(tokens))
            if held.driver:
                out.append(NotifyDone((job,)))
        elif ev.outcome == "cancelled" and self._is_cancelled(job):
            out.append(Fail(tokens, job, WorkCancelled(
                f"job {job.job_key} of workflow {job.workflow_id} was cancelled before it ran")))
        elif ev.outcome == "invalid":
            out += _one_of(tokens, lambda t: DeadLetter(t, ev.error))
        else:
            if ev.outcome == "failed":
                logger.error("job %s could not run on worker %s (%s); requeued", job.job_key, self.name, ev.error)
            out += _one_of(tokens, Requeue)
        return out + self._review_prefetch(ev.now, ev.job_seconds)

    def _review_prefetch(self, now: float, job_seconds: float | None) -> list[Instruction]:
        """Buffer enough messages per slot to cover ``REFILL_SECONDS`` of the measured job duration."""
        if job_seconds is None or now - self.prefetch_reviewed < PREFETCH_REVIEW_SECONDS or self.stopping:
            return []
        self.prefetch_reviewed = now
        seconds = job_seconds * self.jobs_per_message
        per_slot = min(PREFETCH_MAX_PER_SLOT, max(PREFETCH_MIN_PER_SLOT, int(REFILL_SECONDS / max(seconds, 1e-6))))
        wanted = per_slot * self.slots
        if max(wanted, self.prefetch) / min(wanted, self.prefetch) < PREFETCH_STEP:
            return []
        logger.info("worker %s: messages take %.2g s; prefetch %d -> %d", self.name, seconds, self.prefetch, wanted)
        self.prefetch = wanted
        return [SetPrefetch(wanted)]

    def _on_Malformed(self, ev: Malformed) -> list[Instruction]:
        return [DeadLetter((ev.token,), ev.reason)]

    def _on_BundleTaken(self, ev: BundleTaken) -> list[Instruction]:
        self.jobs_per_message = 0.8 * self.jobs_per_message + 0.2 * max(1, ev.size)
        return []

    # --- cancel, holders, time ---------------------------------------------------------------------------
    def _is_cancelled(self, job: JobInfo) -> bool:
        return ("workflow", job.workflow_id) in self.cancelled or ("work", job.work_id) in self.cancelled

    def _on_CancelRequested(self, ev: CancelRequested) -> list[Instruction]:
        if ev.workflow_id:
            self.cancelled.remember(("workflow", ev.workflow_id), ev.now)
        if ev.work_id:
            self.cancelled.remember(("work", ev.work_id), ev.now)
        out: list[Instruction] = []
        for held in [h for h in self.held.values() if self._is_cancelled(h.job)]:
            if held.phase == RUNNING:
                out.append(Stop(held.job, held.tokens[0], WorkCancelled(
                    f"job {held.job.job_key} was stopped: {ev.reason or 'cancelled'}")))
            else:
                del self.held[held.job.id]
                out.append(Fail(tuple(held.tokens), held.job, WorkCancelled(
                    f"job {held.job.job_key} of workflow {held.job.workflow_id} was cancelled before it ran")))
        return out

    def _on_HolderSeen(self, ev: HolderSeen) -> list[Instruction]:
        for key in ev.keys:
            workers = dict(self.holders.get(key, {}))
            workers[ev.worker] = ev.now
            self.holders.remember(key, workers)
        out: list[Instruction] = []
        for run_key in ev.done:
            self.ran.remember(run_key)
            held = self.held.get(run_key[0])
            if held is not None and held.phase == WAITING and held.job.attempt == run_key[1]:
                del self.held[run_key[0]]
                logger.warning("worker %s drops its copy of driver job %s: worker %s finished it", self.name,
                               held.job.job_key, ev.worker)
                out.append(Ack(tuple(held.tokens)))
        return out

    def _other_holders(self, job: JobInfo, since: float | None = None) -> list[str]:
        """The other workers seen holding this job (after ``since``, when given)."""
        seen = self.holders.get(job.key, {})
        return sorted(w for w, at in seen.items() if w != self.name and (since is None or at > since))

    def _lease_lapsed(self, held: Held, now: float) -> bool:
        """A held-back driver job may start once this worker has listened for a whole lease period (since it got
        the job) and heard no other holder renew it in the last one."""
        return now - held.since >= self.lease_seconds and not self._other_holders(held.job, now - self.lease_seconds)

    def _on_JobStarted(self, ev: JobStarted) -> list[Instruction]:
        held = self.held.get(ev.id)
        if held is None or held.phase != RUNNING or held.started is not None:
            return []
        held.started = ev.at
        return [Heartbeat((held.job,), starts=(ev.at,))]

    def _report(self, kind: str) -> ReportWorker:
        started = [h for h in self.held.values() if h.started is not None]
        return ReportWorker(kind, running=len(started), held=len(self.held) - len(started), served=self.served,
                            started_at=self.started_at)

    def _on_WorkerStarted(self, ev: WorkerStarted) -> list[Instruction]:
        self.started_at = ev.now
        return [self._report(WORKER_HEARTBEAT)]

    def _on_WorkerStopped(self, ev: WorkerStopped) -> list[Instruction]:
        return [self._report(WORKER_STOPPED)]

    def _on_Tick(self, ev: Tick) -> list[Instruction]:
        out: list[Instruction] = [self._report(WORKER_HEARTBEAT)]
        running = [h for h in self.held.values() if h.phase == RUNNING and h.started is not None]
        if running:
            out.append(Heartbeat(tuple(h.job for h in running), starts=tuple(h.started for h in running)))
        # a retried or redelivered job waiting here for a runner: the server must not take it for lost
        waiting = tuple(h.job for h in self.held.values()
                        if h.started is None and h.phase != WAITING and (h.count > 1 or h.job.attempt > 1))
        if waiting:
            out.append(Heartbeat(waiting, accepted=True))
        for held in [h for h in self.held.values() if h.phase == WAITING]:
            if self._lease_lapsed(held, ev.now):
                logger.warning("worker %s starts driver job %s of work %s: its lease lapsed", self.name,
                               held.job.job_key, held.job.work_id)
                out.extend(self._start(held))
        return out

    def _on_ConsumerChanged(self, ev: ConsumerChanged) -> list[Instruction]:
        before = self.consumers.get(ev.name)
        self.consumers[ev.name] = ev.state
        if ev.state == "lost" and before != "lost" and not self.stopping:
            return [Exit(f"worker {self.name} lost its consumer of {ev.name} and could not re-establish it"
                         + (f": {ev.error}" if ev.error else ""))]
        return []

    def _on_Stopping(self, ev: Stopping) -> list[Instruction]:
        self.stopping = True
        out: list[Instruction] = []
        for held in [h for h in self.held.values() if h.phase != RUNNING]:
            del self.held[held.job.id]
            out += _one_of(tuple(held.tokens), Requeue)
        return out


def _one_of(tokens: tuple[Any, ...], settle) -> list[Instruction]:
    """Settle the latest of a job's deliveries as ``settle`` says and ack the others: a copy adopted while the
    job ran came last, on the live connection (an earlier connection's are gone; a replayed copy is dropped),
    so the job goes back (or to the dead letters) once, not once per copy."""
    out: list[Instruction] = [settle(tokens[-1:])]
    if len(tokens) > 1:
        out.append(Ack(tokens[:-1]))
    return out
