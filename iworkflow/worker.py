"""The broker worker: takes jobs from ``jobs.<queue>`` and runs them through the local job runner.

A job message is acked only after its result is published, so a worker that dies loses nothing: the
broker hands the message to another worker.  The prefetch follows the measured job duration: enough
messages (single jobs or bundles of short jobs) per slot to cover ``REFILL_SECONDS`` of work (the
broker's round trips to refill), between ``PREFETCH_MIN_PER_SLOT`` (long jobs: no hoarding) and
``PREFETCH_MAX_PER_SLOT`` (no-op jobs).  Detached workflow drivers (which wait for their own works) are
moved to ``jobs.<queue>.drivers`` and run outside the slot count, so a driver never starves its works.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field

from . import serialization
from .bus.base import Bus, Delivery, Subscription
from .config import Settings
from .envelope import Envelope, decode, peek_header
from .errors import InvalidMessage, JobLostError, WorkCancelled
from .events import EventBatcher
from .messages import (
    CANCEL,
    CONTROL_TOPIC,
    DEAD_LETTER_QUEUE,
    HOLDERS_TOPIC,
    Control,
    Event,
    Job,
    JobPayload,
    decode_events,
    decode_payload,
    encode_event,
    jobs_destination,
    load_payload,
    results_destination,
    split_bundle,
)
from .runner import failure_message

logger = logging.getLogger(__name__)

DRIVER_SUFFIX = ".drivers"
#: the event type of a holder notice: ``data = {"worker": name, "jobs": [[work_id, job_key], ...]}``
JOBS_HELD = "jobs_held"
REMEMBERED = 10000
PREFETCH_MIN_PER_SLOT = 2
PREFETCH_MAX_PER_SLOT = 64
REFILL_SECONDS = 0.05
#: how often the prefetch is reconsidered, and by how much it must change to be applied
PREFETCH_REVIEW_SECONDS = 0.5
PREFETCH_STEP = 2.0


@dataclass(eq=False)
class _Held:
    """A job this worker took from the broker and has not settled yet."""

    delivery: Delivery
    env: Envelope
    job: Job
    future: Future | None = None
    driver: bool = False
    since: float = field(default_factory=time.time)


class _Bundle:
    """A bundle message being run as separate jobs: settled once every job is (see ``Worker._on_bundle``)."""

    def __init__(self, worker: "Worker", delivery: Delivery, size: int, back: list[bytes] | None = None):
        self.worker = worker
        self.delivery = delivery
        self.remaining = size
        self.back: list[bytes] = back or []
        self.dead: list[bytes] = []
        self._lock = threading.Lock()

    def settle(self, body: bytes, outcome: str) -> None:
        with self._lock:
            if outcome == "back":
                self.back.append(body)
            elif outcome == "dead":
                self.dead.append(body)
            self.remaining -= 1
            last = self.remaining == 0
        if last:
            self.worker._settle_bundle(self)


class _BundleMember(Delivery):
    """One job of a bundle: acking it marks it done, rejecting it hands it back (or to the dead letters)."""

    def __init__(self, bundle: _Bundle, body: bytes):
        self.body = body
        self.destination = bundle.delivery.destination
        self.redelivered = False
        self.delivery_count = 1
        self._bundle = bundle
        self._settled = False

    def ack(self) -> None:
        self._settle("done")

    def reject(self, requeue: bool = False) -> None:
        self._settle("back" if requeue else "dead")

    def _settle(self, outcome: str) -> None:
        if not self._settled:
            self._settled = True
            self._bundle.settle(self.body, outcome)


class _Recent(OrderedDict):
    """An insertion-ordered map that forgets its oldest entries past ``REMEMBERED``."""

    def remember(self, key, value) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > REMEMBERED:
            self.popitem(last=False)


def _is_driver(payload: JobPayload, cache: dict[str, bool]) -> bool:
    """A detached workflow's driver job is the library's own ``_run_detached`` shipped by reference."""
    found = cache.get(payload.func_digest)
    if found is None:
        from .workflow import _run_detached

        try:
            found = serialization.loads(payload.func) is _run_detached
        except Exception:  # noqa: BLE001 - the runner reports an unloadable function as the job's failure
            found = False
        cache[payload.func_digest] = found
    return found


class Worker:
    """Serves one job queue with ``slots`` runner processes (plus ``driver_slots`` for drivers)."""

    def __init__(self, settings: Settings, bus: Bus, queue: str | None = None, slots: int | None = None,
                 driver_slots: int = 4, name: str | None = None):
        from .executors.local import LocalExecutor

        self.settings = settings
        self.bus = bus
        self.secret = settings.secret_bytes
        self.queue = queue or settings.queue
        self.slots = slots or settings.effective_slots
        self.driver_slots = max(1, driver_slots)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        # the heartbeat sent when a job is accepted stands for its job_started event
        self.jobs = LocalExecutor(settings, bus, slots=self.slots, started_events=False)
        self.drivers = LocalExecutor(settings, bus, slots=self.driver_slots, started_events=False)
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}
        self._cancelled: _Recent = _Recent()
        self._holders: _Recent = _Recent()
        self._driver_funcs: dict[str, bool] = {}
        self._subs: list[Subscription] = []
        self._job_sub: Subscription | None = None
        self.events = EventBatcher(bus, self.secret)
        #: first deliveries' holder notices, batched like events (see ``_announce``)
        self.notices = EventBatcher(bus, self.secret, topic=HOLDERS_TOPIC)
        self._unannounced: list[_Held] = []
        self._settling = 0
        #: moving average of jobs per message taken (bundles carry many): the prefetch counts messages
        self._jobs_per_message = 1.0
        self._announcing = False
        self.prefetch = self.slots * PREFETCH_MIN_PER_SLOT
        self._prefetch_reviewed = time.monotonic()
        self._stopping = threading.Event()
        self._idle = threading.Condition(self._lock)
        self.served = 0

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._subs.append(self.bus.subscribe(CONTROL_TOPIC, self._on_control))
        self._subs.append(self.bus.subscribe(HOLDERS_TOPIC, self._on_holder))
        self._subs.append(self.bus.consume(jobs_destination(self.queue) + DRIVER_SUFFIX, self._on_driver,
                                           prefetch=self.driver_slots))
        self._job_sub = self.bus.consume(jobs_destination(self.queue), self._on_job, prefetch=self.prefetch)
        self._subs.append(self._job_sub)
        threading.Thread(target=self._heartbeat_loop, name="iworkflow-worker-heartbeat", daemon=True).start()
        logger.info("worker %s serving %s with %d slot(s) (+%d for drivers)", self.name,
                    jobs_destination(self.queue), self.slots, self.driver_slots)

    def stop(self, grace: float | None = None) -> bool:
        """Stop taking jobs, requeue the ones not started, finish the running ones; False if grace ran out."""
        self._stopping.set()
        for sub in self._subs:
            sub.cancel()
        with self._lock:
            held = list(self._held.values())
        for h in held:
            if h.future is not None and h.future.cancel():
                logger.info("requeueing job %s (not started)", h.env.job_key)
        deadline = None if grace is None else time.monotonic() + grace
        with self._idle:
            while self._held or self._settling:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    logger.error("worker %s: %d job(s) still running after %.0fs; leaving them to the broker",
                                 self.name, len(self._held), grace)
                    return False
                self._idle.wait(0.5 if remaining is None else min(0.5, remaining))
        self.jobs.shutdown(wait=True)
        self.drivers.shutdown(wait=True)
        self.events.close()
        self.notices.close()
        return True

    # --- jobs ----------------------------------------------------------------------------------
    def _verify(self, delivery: Delivery) -> tuple[Envelope, JobPayload] | None:
        """A message that fails its signature or shape is dead-lettered, never unpickled."""
        try:
            return decode_payload(delivery.body, self.secret, "job")
        except InvalidMessage as err:
            self._dead_letter(delivery, err)
            return None

    def _dead_letter(self, delivery: Delivery, err: InvalidMessage) -> None:
        try:
            where = peek_header(delivery.body)
            what = f"{where.get('kind')} {where.get('job_key') or ''} of work {where.get('work_id')}"
        except InvalidMessage:
            what = "an unreadable message"
        logger.error("worker %s dead-letters %s from %s: %s", self.name, what, delivery.destination, err)
        delivery.reject(requeue=False)

    def _on_job(self, delivery: Delivery) -> None:
        try:
            env = decode(delivery.body, self.secret)
            if env.kind == "bundle":
                members = split_bundle(env)
                self._jobs_per_message = 0.8 * self._jobs_per_message + 0.2 * max(1, len(members))
                self._on_bundle(delivery, members)
                return
            payload = load_payload(env, "job")
        except InvalidMessage as err:
            self._dead_letter(delivery, err)
            return
        self._jobs_per_message = 0.8 * self._jobs_per_message + 0.2
        self._take(delivery, env, payload)

    def _take(self, delivery: Delivery, env: Envelope, payload: JobPayload) -> None:
        if _is_driver(payload, self._driver_funcs):
            # move it out of the slot queue: publish first, then ack (at-least-once)
            self.bus.publish(jobs_destination(self.queue) + DRIVER_SUFFIX, delivery.body)
            delivery.ack()
            return
        self._accept(delivery, env, payload, driver=False)

    def _on_bundle(self, delivery: Delivery, members: list[bytes]) -> None:
        """Run a bundle's jobs as separate jobs; the bundle is settled once all of them are.

        A bundle delivered again (its worker was lost) is not run as a whole: its jobs go back to the
        queue one by one, so that each counts its own deliveries and one bad job cannot fail the others."""
        if not members:
            delivery.ack()
            return
        if delivery.delivery_count > 1 or (delivery.delivery_count == 0 and delivery.redelivered):
            logger.warning("worker %s splits a redelivered bundle of %d jobs", self.name, len(members))
            self._settle_bundle(_Bundle(self, delivery, 0, back=list(members)))
            return
        bundle = _Bundle(self, delivery, len(members))
        for body in members:
            member = _BundleMember(bundle, body)
            checked = self._verify(member)
            if checked is not None:
                self._take(member, *checked)

    def _settle_bundle(self, bundle: "_Bundle") -> None:
        """Every job of the bundle is settled: ack it, after re-sending the jobs handed back (alone) and
        dead-lettering the bad ones; if that fails, the broker gets the bundle back instead."""
        if not bundle.back and not bundle.dead:
            bundle.delivery.ack()
            return
        with self._idle:
            self._settling += 1
        sends = []
        for destination, bodies in ((jobs_destination(self.queue), bundle.back), (DEAD_LETTER_QUEUE, bundle.dead)):
            if not bodies:
                continue
            try:
                sends.append(self.bus.publish_many_async(destination, bodies))
            except Exception as err:  # noqa: BLE001 - the bus is closing: the bundle goes back whole
                failed: Future = Future()
                failed.set_exception(err)
                sends.append(failed)
        left = [len(sends)]
        lock = threading.Lock()

        def sent(_f: Future) -> None:
            with lock:
                left[0] -= 1
                if left[0]:
                    return
            errors = [f.exception() for f in sends if f.exception() is not None]
            if errors:
                logger.warning("could not re-send the jobs of a bundle (%s); the broker gets it back", errors[0])
                bundle.delivery.reject(requeue=True)
            else:
                bundle.delivery.ack()
            with self._idle:
                self._settling -= 1
                self._idle.notify_all()

        for f in sends:
            f.add_done_callback(sent)

    def _on_driver(self, delivery: Delivery) -> None:
        checked = self._verify(delivery)
        if checked is not None:
            self._accept(delivery, *checked, driver=True)

    def _accept(self, delivery: Delivery, env: Envelope, payload: JobPayload, driver: bool) -> None:
        if self._stopping.is_set():
            delivery.reject(requeue=True)
            return
        if self._is_cancelled(env):
            self._finish_without_running(delivery, env, WorkCancelled(
                f"job {env.job_key} of workflow {env.workflow_id} was cancelled before it ran"))
            return
        deliveries = delivery.delivery_count
        if deliveries > self.settings.max_attempt:
            holders = sorted(self._holders.get((env.work_id, env.job_key), ())) or ["not seen by this worker"]
            self._finish_without_running(delivery, env, JobLostError(
                f"job {env.job_key} of work {env.work_id} was delivered {deliveries - 1} time(s) and each time "
                f"the worker holding it was lost (last seen on: {', '.join(holders)}); giving up after "
                f"max_attempt={self.settings.max_attempt}"))
            return
        job = Job(id=env.id, workflow_id=env.workflow_id or "", work_id=env.work_id or "",
                  job_key=env.job_key or "", attempt=env.attempt, data=delivery.body, queue=self.queue,
                  max_walltime=payload.max_walltime, reply_to=env.reply_to)
        held = _Held(delivery, env, job, driver=driver)
        with self._lock:
            self._held[env.id] = held
        self._announce(held)

    def _run(self, held: _Held, err: BaseException | None) -> None:
        """Hand the job to a runner process (a redelivered one once the broker has our holder notice)."""
        if err is not None:
            logger.warning("holder notice for job %s not confirmed: %s", held.env.job_key, err)
        try:
            held.future = (self.drivers if held.driver else self.jobs).submit(held.job)
        except Exception as exc:  # noqa: BLE001 - e.g. stopping: the broker hands the job to another worker
            logger.warning("job %s not started here (%s); requeued", held.env.job_key, exc)
            held.delivery.reject(requeue=True)
            with self._idle:
                self._held.pop(held.env.id, None)
                self._idle.notify_all()
            return
        held.future.add_done_callback(lambda f, h=held: self._on_done(h, f))

    def _on_done(self, held: _Held, future: Future) -> None:
        """The result is published (the runner's executor did it): now the broker may forget the job."""
        try:
            if future.cancelled() and self._is_cancelled(held.env):
                self._finish_without_running(held.delivery, held.env, WorkCancelled(
                    f"job {held.env.job_key} of workflow {held.env.workflow_id} was cancelled before it ran"))
            elif future.cancelled():
                held.delivery.reject(requeue=True)
            elif future.exception() is not None:
                logger.error("job %s could not run here (%s); requeued", held.env.job_key, future.exception())
                held.delivery.reject(requeue=True)
            else:
                held.delivery.ack()
                self.served += 1
        finally:
            with self._idle:
                self._held.pop(held.env.id, None)
                self._idle.notify_all()
            self._review_prefetch()

    def _review_prefetch(self) -> None:
        """Buffer enough messages per slot to cover ``REFILL_SECONDS`` of the measured job duration."""
        now = time.monotonic()
        seconds = self.jobs.job_seconds
        if seconds is None or now - self._prefetch_reviewed < PREFETCH_REVIEW_SECONDS or self._job_sub is None:
            return
        seconds *= self._jobs_per_message
        self._prefetch_reviewed = now
        per_slot = min(PREFETCH_MAX_PER_SLOT, max(PREFETCH_MIN_PER_SLOT, int(REFILL_SECONDS / max(seconds, 1e-6))))
        wanted = per_slot * self.slots
        if max(wanted, self.prefetch) / min(wanted, self.prefetch) >= PREFETCH_STEP and not self._stopping.is_set():
            logger.info("worker %s: messages take %.2g s; prefetch %d -> %d", self.name, seconds, self.prefetch, wanted)
            self.prefetch = wanted
            self._job_sub.set_prefetch(wanted)

    def _finish_without_running(self, delivery: Delivery, env: Envelope, exc: BaseException) -> None:
        logger.warning("worker %s: %s", self.name, exc)
        self.bus.publish(results_destination(env.work_id, env.reply_to),
                         failure_message(delivery.body, exc, self.secret))
        delivery.ack()

    # --- cancel, heartbeats, holders -----------------------------------------------------------
    def _is_cancelled(self, env: Envelope) -> bool:
        return (("workflow", env.workflow_id) in self._cancelled) or (("work", env.work_id) in self._cancelled)

    def _on_control(self, delivery: Delivery) -> None:
        try:
            env = decode(delivery.body, self.secret)
            if env.kind != "control":
                raise InvalidMessage(f"expected a control message, got {env.kind!r}")
            control = Control.from_envelope(env)
        except InvalidMessage as err:
            logger.error("worker %s ignores a control message: %s", self.name, err)
            return
        if control.action != CANCEL:
            return
        if control.workflow_id:
            self._cancelled.remember(("workflow", control.workflow_id), time.time())
        if control.work_id:
            self._cancelled.remember(("work", control.work_id), time.time())
        with self._lock:
            targets = [h for h in self._held.values() if self._is_cancelled(h.env)]
        running: set[str] = set()
        for h in targets:
            if h.future is not None and h.future.cancel():
                continue  # _on_done requeues it; the next delivery finds it cancelled and fails it
            running.add(h.env.id)
            self.bus.publish(results_destination(h.env.work_id, h.env.reply_to), failure_message(
                h.delivery.body, WorkCancelled(f"job {h.env.job_key} was stopped: {control.reason or 'cancelled'}"),
                self.secret))
        if running:
            killed = self.jobs.kill_running(running) + self.drivers.kill_running(running)
            logger.warning("worker %s stopped %d running job(s) of a cancelled workflow", self.name, killed)

    def _on_holder(self, delivery: Delivery) -> None:
        """Remember which workers held which jobs, to name them if a job keeps losing its worker."""
        try:
            events = decode_events(delivery.body, self.secret)
        except InvalidMessage:
            return
        for event in events:
            worker = str(event.data.get("worker", "?"))
            if event.type == JOBS_HELD:
                keys = [(work_id, job_key) for work_id, job_key in event.data.get("jobs", ())]
            elif event.type in ("job_heartbeat", "job_started"):
                keys = [(event.work_id, event.job_key)]
            else:
                continue
            for key in keys:
                workers = set(self._holders.get(key, ()))
                workers.add(worker)
                self._holders.remember(key, workers)

    def _heartbeat(self, held: _Held) -> None:
        """A job's heartbeat for the server (batched with the others: see ``EventBatcher``)."""
        self.events.add(Event("job_heartbeat", held.env.workflow_id, held.env.work_id, held.env.job_key,
                              held.env.attempt, data={"worker": self.name}))

    def _announce(self, held: _Held) -> None:
        """Tell the other workers we hold this job, so that they can name us if the job keeps losing its worker.

        A first delivery runs at once; its notice goes out with the others of the next ``EventBatcher``
        tick (50 ms), off the job's round trip (one message per tick, not one per job).  A redelivered job
        (its last holder was lost) runs only once the broker has confirmed its own notice, so a job that
        kills this worker at once is still pinned on it; while one such notice is on its way, the jobs taken
        meanwhile go together in the next.  The accept heartbeat goes to the server (it stands for the
        job's ``job_started``)."""
        self._heartbeat(held)
        if held.delivery.delivery_count <= 1:
            self._run(held, None)
            self.notices.add(Event("job_heartbeat", held.env.workflow_id, held.env.work_id, held.env.job_key,
                                   held.env.attempt, data={"worker": self.name}))
            return
        with self._lock:
            self._unannounced.append(held)
            if self._announcing:
                return
            self._announcing = True
        self._send_notice()

    def _send_notice(self) -> None:
        with self._lock:
            batch, self._unannounced = self._unannounced, []
            if not batch:
                self._announcing = False
                return
        notice = Event(JOBS_HELD, data={"worker": self.name,
                                        "jobs": [[h.env.work_id, h.env.job_key] for h in batch]})
        try:
            self.bus.broadcast_async(HOLDERS_TOPIC, encode_event(notice, self.secret),
                                     lambda err: self._noticed(batch, err))
        except Exception as err:  # noqa: BLE001 - the jobs run even if nobody can be told
            self._noticed(batch, err)

    def _noticed(self, batch: list[_Held], err: BaseException | None) -> None:
        for held in batch:
            self._run(held, err)
        self._send_notice()

    def _heartbeat_loop(self) -> None:
        interval = max(0.5, self.settings.heartbeat_interval)
        while not self._stopping.wait(interval):
            with self._lock:
                running = [h for h in self._held.values() if h.future is not None and h.future.running()]
            for held in running:
                self._heartbeat(held)
