"""Runs jobs on threads of the driver process: for cheap functions, where a process hop costs more."""
from __future__ import annotations

import logging
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from iworkflow.errors import InvalidMessage
from iworkflow.failures import failure_message
from iworkflow.messages import EVENTS_TOPIC, Event, Job, encode_event, results_destination
from iworkflow.runner import run_encoded

from .base import Executor

logger = logging.getLogger(__name__)


class ThreadExecutor(Executor):
    ships_source = False

    def __init__(self, settings, bus, address: str | None = None, slots: int | None = None):
        super().__init__(settings, bus, address)
        self.slots = slots or (int(address) if address and address.isdigit() else settings.effective_slots)
        self._pool = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="iworkflow-thread")
        self._emit = self._broadcast if settings.emits_events else None
        self._lock = threading.Lock()
        self._unfinished: set[Future] = set()
        try:  # registered after the pool's own hook, so it runs before that one waits for the queued jobs
            threading._register_atexit(self._interrupted_exit)  # type: ignore[attr-defined]
        except RuntimeError:  # created while the interpreter shuts down
            pass

    def _interrupted_exit(self) -> None:
        """A driver ended by Ctrl-C drops its queued jobs (threads cannot be killed: running ones finish)."""
        if not isinstance(getattr(sys, "last_value", None), KeyboardInterrupt):
            return
        with self._lock:
            unfinished = list(self._unfinished)
        dropped = sum(1 for f in unfinished if f.cancel())
        self._pool.shutdown(wait=False, cancel_futures=True)
        if unfinished:
            logger.warning("iworkflow: Ctrl-C: dropped %d queued job(s) of the thread executor; %d running one(s) "
                           "finish first (a thread cannot be stopped)", dropped, len(unfinished) - dropped)

    def _broadcast(self, event: Event) -> None:
        self.bus.broadcast(EVENTS_TOPIC, encode_event(event, self.settings.secret_bytes))

    def _run(self, job: Job) -> None:
        secret = self.settings.secret_bytes
        try:
            data = run_encoded(job.data, secret, self._emit)
        except InvalidMessage as err:
            data = failure_message(job.data, err, secret)
        self.bus.publish(results_destination(job.work_id, job.reply_to), data)

    def submit(self, job: Job) -> Future:
        future = self._pool.submit(self._run, job)
        with self._lock:
            self._unfinished.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future) -> None:
        with self._lock:
            self._unfinished.discard(future)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)
