"""The broker worker's I/O: turns broker messages, runner outcomes and ticks into state machine events and
carries out the instructions (``state.py`` decides; this module only acts).

A job message is verified here (its signature, its header) but never unpickled: the worker learns what it
needs (detached driver or not, walltime) from the signed header, and user bytes are unpickled only inside a
runner process.  A job message is acked only after its result is published, so a worker that dies loses
nothing: the broker hands the message to another worker.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import Future
from typing import Any

from .. import result_store
from ..bus.base import Bus, Delivery, Subscription
from ..bus.delivery import Bundle
from ..config import Settings
from ..envelope import decode, peek_header
from ..errors import InvalidMessage
from ..events import EventBatcher
from ..messages import (
    CANCEL,
    CONTROL_TOPIC,
    DEAD_LETTER_QUEUE,
    HOLDERS_TOPIC,
    Control,
    Event,
    Job,
    decode_events,
    encode_event,
    jobs_destination,
    results_destination,
    split_bundle,
)
from ..failures import failure_message
from .sources import SourceFetcher, worker_blobs
from .state import (
    DRIVERS,
    JOBS,
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
    Notify,
    NotifyDone,
    NoticeSent,
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

logger = logging.getLogger(__name__)

DRIVER_SUFFIX = ".drivers"
#: the event type of a holder notice: ``data = {"worker": name, "jobs": [[work_id, job_key], ...]}``
JOBS_HELD = "jobs_held"
#: the event type of a finished-jobs notice: ``data = {"worker": name, "jobs": [[job_id, attempt], ...]}``
JOBS_DONE = "jobs_done"


class Worker:
    """Serves one job queue with ``slots`` runner processes (plus ``driver_slots`` for detached drivers)."""

    def __init__(self, settings: Settings, bus: Bus, queue: str | None = None, slots: int | None = None,
                 driver_slots: int = 4, name: str | None = None):
        from ..executors.local import LocalExecutor

        self.settings = settings
        self.bus = bus
        self.secret = settings.secret_bytes
        self.queue = queue or settings.queue
        self.slots = slots or settings.effective_slots
        self.driver_slots = max(1, driver_slots)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.state = WorkerState(self.name, self.slots, max_attempt=settings.max_attempt,
                                 heartbeat_interval=settings.heartbeat_interval, job_max_age=settings.job_max_age,
                                 clock_skew=settings.clock_skew)
        # the heartbeat sent when a runner starts a job stands for its job_started event
        self.jobs = LocalExecutor(settings, bus, slots=self.slots, started_events=False, worker_name=self.name,
                                  on_start=self._runner_started)
        self.drivers = LocalExecutor(settings, bus, slots=self.driver_slots, started_events=False,
                                     worker_name=self.name, on_start=self._runner_started)
        #: serves the large results its jobs stored, and fetches the source trees of jobs from their drivers
        self.blobs = worker_blobs(settings, bus)
        self.jobs.runner_env = self.drivers.runner_env = {result_store.BLOBS_ENV: self.blobs.destination}
        self.sources = SourceFetcher(self.blobs, settings, self.name)
        self.events = EventBatcher(bus, self.secret)
        #: holder notices of first deliveries, and driver jobs' heartbeats (their lease), batched like events
        self.notices = EventBatcher(bus, self.secret, topic=HOLDERS_TOPIC)
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._futures: dict[str, Future] = {}
        self._stop_requested: dict[str, Stop] = {}
        self._bundles = 0
        self._subs: dict[str, Subscription] = {}
        self._stopping = threading.Event()
        #: set when the worker cannot go on (a job consumer is lost): why; the command exits non-zero
        self.failed: str | None = None

    @property
    def served(self) -> int:
        return self.state.served

    @property
    def prefetch(self) -> int:
        return self.state.prefetch

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        jobs = jobs_destination(self.queue)
        self._subs["control"] = self.bus.subscribe(CONTROL_TOPIC, self._on_control)
        self._subs["holders"] = self.bus.subscribe(HOLDERS_TOPIC, self._on_holder)
        self._subs[jobs + DRIVER_SUFFIX] = self.bus.consume(jobs + DRIVER_SUFFIX, self._on_driver,
                                                            prefetch=self.driver_slots)
        self._subs[jobs] = self.bus.consume(jobs, self._on_job, prefetch=self.state.prefetch)
        self.blobs.start()
        threading.Thread(target=self._tick_loop, name="iworkflow-worker-heartbeat", daemon=True).start()
        self._feed(WorkerStarted(time.time()))
        logger.info("worker %s serving %s with %d slot(s) (+%d for drivers)", self.name, jobs, self.slots,
                    self.driver_slots)

    def stop(self, grace: float | None = None) -> bool:
        """Stop taking jobs, requeue the ones not started, finish the running ones; False if grace ran out."""
        self._stopping.set()
        for sub in self._subs.values():
            sub.cancel()
        self._feed(Stopping())
        with self._lock:
            futures = list(self._futures.items())
        for job_id, future in futures:
            if future.cancel():
                logger.info("requeueing job %s (not started)", job_id)
        deadline = None if grace is None else time.time() + grace
        with self._idle:
            while self.state.held or self._bundles:
                remaining = None if deadline is None else deadline - time.time()
                if remaining is not None and remaining <= 0:
                    logger.error("worker %s: %d job(s) still running after %.0fs; leaving them to the broker",
                                 self.name, len(self.state.held), grace)
                    return False
                self._idle.wait(0.5 if remaining is None else min(0.5, remaining))
        self.jobs.shutdown(wait=True)
        self.drivers.shutdown(wait=True)
        self._feed(WorkerStopped(time.time()))
        self.events.close()
        self.notices.close()
        self.sources.close()
        self.blobs.close()
        if self.blobs.bus is not self.bus:
            self.blobs.bus.close()
        return True

    def status(self) -> dict[str, Any]:
        """What a health check shows: the consumers' states, jobs held and served, and why it failed."""
        consumers = {name: sub.state for name, sub in self._subs.items()}
        return {"ok": self.failed is None and all(s in ("consuming", "recovering") for s in consumers.values()),
                "worker": self.name, "queue": self.queue, "consumers": consumers, "held": len(self.state.held),
                "served": self.served, "prefetch": self.prefetch, "error": self.failed}

    # --- events in -----------------------------------------------------------------------------
    def _feed(self, event: Any) -> None:
        """Apply an event to the state machine, then carry out its instructions (outside the lock: none of
        them may wait for a broker while a bus thread waits for the lock)."""
        with self._lock:
            instructions = self.state.handle(event)
            self._idle.notify_all()
        for instruction in instructions:
            try:
                self._do(instruction)
            except Exception:  # noqa: BLE001 - one failed instruction must not drop the others
                logger.exception("worker %s could not carry out %s", self.name, type(instruction).__name__)

    def _on_job(self, delivery: Delivery) -> None:
        try:
            env = decode(delivery.body, self.secret)
            if env.kind == "bundle":
                self._on_bundle(delivery, split_bundle(env))
                return
            job = JobInfo.from_envelope(env)
        except InvalidMessage as err:
            self._feed(Malformed(delivery, str(err)))
            return
        self._feed(Delivered(delivery, job, delivery.delivery_count, time.time(), JOBS))

    def _on_bundle(self, delivery: Delivery, members: list[bytes]) -> None:
        """Run a bundle's jobs as separate jobs; the bundle is settled once all of them are."""
        self._feed(BundleTaken(len(members)))
        if not members:
            delivery.ack()
            return
        with self._lock:
            self._bundles += 1
        bundle = Bundle(self.bus, delivery, len(members), jobs_destination(self.queue), DEAD_LETTER_QUEUE,
                        on_settled=self._bundle_settled)
        now = time.time()
        for member in bundle.members(members):
            try:
                job = JobInfo.from_envelope(decode(member.body, self.secret))
            except InvalidMessage as err:
                self._feed(Malformed(member, str(err)))
                continue
            self._feed(Delivered(member, job, delivery.delivery_count, now, JOBS, whole_message=False))

    def _bundle_settled(self, _f: Future) -> None:
        with self._idle:
            self._bundles -= 1
            self._idle.notify_all()

    def _on_driver(self, delivery: Delivery) -> None:
        try:
            job = JobInfo.from_envelope(decode(delivery.body, self.secret))
        except InvalidMessage as err:
            self._feed(Malformed(delivery, str(err)))
            return
        self._feed(Delivered(delivery, job, delivery.delivery_count, time.time(), DRIVERS))

    def _runner_started(self, job: Job, at: float) -> None:
        self._feed(JobStarted(job.id, at))

    def _on_control(self, delivery: Delivery) -> None:
        try:
            env = decode(delivery.body, self.secret)
            if env.kind != "control":
                raise InvalidMessage(f"expected a control message, got {env.kind!r}")
            control = Control.from_envelope(env)
        except InvalidMessage as err:
            logger.error("worker %s ignores a control message: %s", self.name, err)
            return
        if control.action == CANCEL:
            self._feed(CancelRequested(control.workflow_id or "", control.work_id or "", control.reason, time.time()))

    def _on_holder(self, delivery: Delivery) -> None:
        """Which workers hold which jobs (to name them if a job keeps losing its worker; a driver job's lease),
        and which driver jobs they finished."""
        try:
            events = decode_events(delivery.body, self.secret)
        except InvalidMessage:
            return
        now = time.time()
        for event in events:
            data = event.data if isinstance(event.data, dict) else {}
            worker = str(data.get("worker", "?"))
            try:
                if event.type == JOBS_HELD:
                    self._feed(HolderSeen(worker, now, keys=tuple((str(w), str(k)) for w, k in data.get("jobs", ()))))
                elif event.type == JOBS_DONE:
                    self._feed(HolderSeen(worker, now, done=tuple((str(i), int(a)) for i, a in data.get("jobs", ()))))
                elif event.type in ("job_heartbeat", "job_started"):
                    self._feed(HolderSeen(worker, now, keys=((str(event.work_id), str(event.job_key)),)))
            except (TypeError, ValueError) as err:
                logger.warning("worker %s ignores a malformed holder notice from %s: %s", self.name, worker, err)

    def _tick_loop(self) -> None:
        interval = max(0.5, self.settings.heartbeat_interval)
        while not self._stopping.wait(interval):
            self._feed(Tick(time.time()))
            for name, sub in list(self._subs.items()):
                if self.state.consumers.get(name) != sub.state:
                    self._feed(ConsumerChanged(name, sub.state, str(sub.error or "")))

    # --- instructions out ----------------------------------------------------------------------
    def _do(self, instruction: Any) -> None:
        handler = getattr(self, "_do_" + type(instruction).__name__)
        handler(instruction)

    def _do_Ack(self, i: Ack) -> None:
        for token in i.tokens:
            token.ack()

    def _do_Requeue(self, i: Requeue) -> None:
        for token in i.tokens:
            token.reject(requeue=True)

    def _do_DeadLetter(self, i: DeadLetter) -> None:
        for token in i.tokens:
            try:
                where = peek_header(token.body)
                what = f"{where.get('kind')} {where.get('job_key') or ''} of work {where.get('work_id')}"
            except InvalidMessage:
                what = "an unreadable message"
            logger.error("worker %s dead-letters %s from %s: %s", self.name, what, token.destination, i.reason)
            token.reject(requeue=False)

    def _do_Fail(self, i: Fail) -> None:
        """Publish the failure result; settle the deliveries once the broker has it (else they go back)."""
        logger.warning("worker %s: %s", self.name, i.error)
        self._report_failure(i.job, i.error)
        body = failure_message(i.tokens[0].body, i.error, self.secret)
        self._publish_then(results_destination(i.job.work_id, i.job.reply_to), body, i.tokens,
                           dead=i.dead)

    def _publish_then(self, destination: str, body: bytes, tokens: tuple[Delivery, ...], dead: bool = False) -> None:
        try:
            sent = self.bus.publish_many_async(destination, [body])
        except Exception as err:  # noqa: BLE001 - the bus is closing: the broker keeps the messages
            sent = Future()
            sent.set_exception(err)

        def settle(f: Future) -> None:
            if f.exception() is not None:
                logger.warning("worker %s could not publish to %s (%s); the job goes back", self.name, destination,
                               f.exception())
                for token in tokens:
                    token.reject(requeue=True)
                return
            for token in tokens:
                if dead:
                    token.reject(requeue=False)
                else:
                    token.ack()

        sent.add_done_callback(settle)

    def _do_Forward(self, i: Forward) -> None:
        destination = jobs_destination(self.queue) + (DRIVER_SUFFIX if i.queue == DRIVERS else "")
        self._publish_then(destination, i.token.body, (i.token,))

    def _do_Run(self, i: Run) -> None:
        """Run the job once its source tree is here (fetched from its driver over the bus if needed)."""
        fetching = self.sources.fetching(i.token.body)
        if fetching is None:
            self._run(i)
        else:
            fetching.add_done_callback(lambda _f: self._run(i))

    def _run(self, i: Run) -> None:
        job = i.job
        data = Job(id=job.id, workflow_id=job.workflow_id, work_id=job.work_id, job_key=job.job_key,
                   attempt=job.attempt, data=i.token.body, queue=self.queue, max_walltime=job.walltime,
                   reply_to=job.reply_to)
        executor = self.drivers if i.driver else self.jobs
        try:
            future = executor.submit(data)
        except Exception as exc:  # noqa: BLE001 - e.g. stopping: the broker hands the job to another worker
            self._feed(Finished(job.id, "failed", time.time(), error=f"not started here: {exc}"))
            return
        with self._lock:
            self._futures[job.id] = future
            stop = self._stop_requested.pop(job.id, None)
        future.add_done_callback(lambda f, j=job, e=executor: self._finished(j, e, f))
        if stop is not None:
            self._do_Stop(stop)

    def _finished(self, job: JobInfo, executor, future: Future) -> None:
        with self._lock:
            self._futures.pop(job.id, None)
        error = ""
        if future.cancelled():
            outcome = "cancelled"
        elif isinstance(future.exception(), InvalidMessage):
            outcome, error = "invalid", str(future.exception())
        elif future.exception() is not None:
            outcome, error = "failed", str(future.exception())
        else:
            outcome = "done"
        self._feed(Finished(job.id, outcome, time.time(), error=error, job_seconds=executor.job_seconds))

    def _do_Stop(self, i: Stop) -> None:
        with self._lock:
            future = self._futures.get(i.job.id)
            if future is None:  # its Run has not reached the executor yet: it stops right after
                self._stop_requested[i.job.id] = i
                return
        if future.cancel():
            return  # Finished(cancelled) fails it as cancelled
        self._report_failure(i.job, i.error)
        self.bus.publish_many_async(results_destination(i.job.work_id, i.job.reply_to),
                                    [failure_message(i.token.body, i.error, self.secret)])
        killed = self.jobs.kill_running({i.job.id}) + self.drivers.kill_running({i.job.id})
        logger.warning("worker %s stopped %d running job(s) of a cancelled workflow", self.name, killed)

    def _report_failure(self, job: JobInfo, error: BaseException) -> None:
        """A job this worker ends itself (refused, cancelled, stopped): the server records why."""
        now = time.time()
        self.events.add(Event("job_failed", job.workflow_id, job.work_id, job.job_key, job.attempt, data={
            "worker": self.name, "start": now, "end": now, "error": f"{type(error).__name__}: {error}"}))

    def _do_Heartbeat(self, i: Heartbeat) -> None:
        for job, start in zip(i.jobs, i.starts or (None,) * len(i.jobs)):
            running = start is not None
            data: dict[str, Any] = {"worker": self.name, "running": running}
            if running:
                data["start"] = start
            event = Event("job_heartbeat", job.workflow_id, job.work_id, job.job_key, job.attempt, data=data)
            self.events.add(event)
            if job.driver and running:
                self.notices.add(event)  # a driver job's lease, for the other workers

    def _do_ReportWorker(self, i: ReportWorker) -> None:
        self.events.add(Event(i.kind, data={
            "worker": self.name, "queue": self.queue, "slots": self.slots, "driver_slots": self.driver_slots,
            "running": i.running, "held": i.held, "served": i.served, "started": i.started_at}))

    def _do_Announce(self, i: Announce) -> None:
        self.notices.add(Event("job_heartbeat", i.job.workflow_id, i.job.work_id, i.job.job_key, i.job.attempt,
                               data={"worker": self.name}))

    def _do_Notify(self, i: Notify) -> None:
        ids = tuple(job.id for job in i.jobs)
        notice = Event(JOBS_HELD, data={"worker": self.name, "jobs": [[job.work_id, job.job_key] for job in i.jobs]})
        try:
            self.bus.broadcast_async(HOLDERS_TOPIC, encode_event(notice, self.secret),
                                     lambda err: self._feed(NoticeSent(ids, str(err) if err else "")))
        except Exception as err:  # noqa: BLE001 - the jobs run even if nobody can be told
            self._feed(NoticeSent(ids, str(err)))

    def _do_NotifyDone(self, i: NotifyDone) -> None:
        self.notices.add(Event(JOBS_DONE, data={"worker": self.name,
                                                "jobs": [[job.id, job.attempt] for job in i.jobs]}))

    def _do_SetPrefetch(self, i: SetPrefetch) -> None:
        sub = self._subs.get(jobs_destination(self.queue))
        if sub is not None and not self._stopping.is_set():
            sub.set_prefetch(i.prefetch)

    def _do_Exit(self, i: Exit) -> None:
        logger.error("%s", i.message)
        self.failed = i.message


__all__ = ["DRIVER_SUFFIX", "JOBS_DONE", "JOBS_HELD", "Worker"]
