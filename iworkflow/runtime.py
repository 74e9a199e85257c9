"""The process-wide runtime: settings, the bus and the executors, created on first use."""
from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from .config import Settings, load_settings
from .messages import EVENTS_TOPIC, Event, encode_event

if TYPE_CHECKING:
    from .bus.base import Bus
    from .executors.base import Executor  # noqa: F401

logger = logging.getLogger(__name__)


class Runtime:
    """Holds what every Work in this process shares; closed at interpreter exit."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.secret = settings.secret_bytes
        self._bus: Bus | None = None
        self._executors: dict[str, Any] = {}
        self._result_cache = None
        self._run = None
        self._inbox = None
        self._job_seconds: dict[str, float] = {}
        self._blobs = None
        #: source trees this driver's works shipped, by digest: what its blob endpoint serves
        self._shipped: dict[str, Any] = {}
        #: works with jobs not finished yet, by id: cancelled if the driver exits (or is interrupted) before them
        self._outstanding: dict[str, Any] = {}
        self._outstanding_lock = threading.Lock()  # not _lock: results land on bus threads that close() joins
        self._lock = threading.RLock()
        self.emit_events = settings.emits_events

    @property
    def bus(self) -> "Bus":
        if self._bus is None:
            with self._lock:
                if self._bus is None:
                    from .bus import connect

                    self._bus = connect(self.settings.broker, self.settings)
        return self._bus

    @property
    def inbox(self):
        """This driver's results queue, shared by all its works (see ``iworkflow.inbox``)."""
        if self._inbox is None:
            with self._lock:
                if self._inbox is None:
                    from .inbox import Inbox

                    self._inbox = Inbox(self.bus, self.secret, unrouted=self._unrouted_control)
        return self._inbox

    def _unrouted_control(self, env) -> None:
        """A user's retry for a work this driver no longer routes (it ended here): say so, never nothing."""
        from .messages import Control, Event

        control = Control.from_envelope(env)
        if control.failed:
            reason = ("its work had ended in the driver (every result in and handed to the caller); "
                      "resubmit the workflow to run failed jobs again")
            logger.warning("retry of job %s of work %s refused: %s", control.job_key, control.work_id, reason)
            self.emit(Event("retry_refused", control.workflow_id, control.work_id, control.job_key, control.attempt,
                            data={"reason": reason}))

    @property
    def blobs(self):
        """This process's blob endpoint (``iworkflow.blob_transfer``), on a connection of its own: a large result
        is fetched from inside a results handler, whose bus thread would otherwise never see the answer."""
        if self._blobs is None:
            with self._lock:
                if self._blobs is None:
                    from .blob_transfer import BlobEndpoint
                    from .bus import connect
                    from .messages import SOURCE

                    bus = connect(self.settings.broker, self.settings)
                    self._blobs = BlobEndpoint(bus, self.secret, "driver", {SOURCE: self._shipped_source}).start()
        return self._blobs

    def serve_source(self, ref) -> str:
        """Serve ``ref``'s tree to workers over the bus (for as long as this process runs); returns the queue
        that workers ask."""
        self._shipped[ref.digest] = ref
        return self.blobs.destination

    def _shipped_source(self, digest: str) -> bytes:
        ref = self._shipped.get(digest)
        if ref is None:
            raise FileNotFoundError(f"source {digest} was not shipped by this driver")
        from .source_shipping import read

        return read(ref)

    def fetch_blob(self, owner: str, what: str, digest: str) -> bytes:
        """A blob (a large result) from the process serving it on the bus queue ``owner``."""
        return self.blobs.fetch(owner, what, digest, self.settings.blob_fetch_timeout)

    def note_job_seconds(self, func_digest: str, seconds: float) -> None:
        """Keep a moving average of how long a function's jobs run (what executors may bundle by)."""
        previous = self._job_seconds.get(func_digest)
        self._job_seconds[func_digest] = seconds if previous is None else 0.8 * previous + 0.2 * seconds

    def expected_job_seconds(self, func_digest: str) -> float | None:
        return self._job_seconds.get(func_digest)

    def executor(self, name: str | None = None):
        from .executors import create_executor

        spec = name or self.settings.executor
        with self._lock:
            ex = self._executors.get(spec)
            if ex is None:
                ex = self._executors[spec] = create_executor(spec, self.settings, self.bus)
            return ex

    @property
    def result_cache(self):
        """The on-disk cache of finished jobs' results (``<home>/results.db``)."""
        if self._result_cache is None:
            with self._lock:
                if self._result_cache is None:
                    from .result_cache import ResultCache

                    self._result_cache = ResultCache(os.path.join(self.settings.home, "results.db"))
        return self._result_cache

    def run_for(self, program: str):
        """This process's run (``result_cache.Run``), started by the first workflow that submits work."""
        if self._run is None:
            with self._lock:
                if self._run is None:
                    from .result_cache import Run

                    self._run = Run(self.result_cache, program, self.settings.resume.strip(),
                                    self.settings.resume_runs)
        return self._run

    def track(self, work) -> None:
        """Note a submitted work whose jobs are not all finished (see ``cancel_outstanding``)."""
        with self._outstanding_lock:
            self._outstanding[work.internal_id] = work

    def untrack(self, work) -> None:
        with self._outstanding_lock:
            self._outstanding.pop(work.internal_id, None)

    def cancel_outstanding(self, reason: str) -> int:
        """Cancel every work with jobs unfinished, queued and running ones alike, and say so in one line.
        Returns how many jobs were unfinished."""
        with self._outstanding_lock:
            tracked, self._outstanding = list(self._outstanding.values()), {}
        # a work whose jobs all ended is left as it ended: its own bookkeeping may still be running
        works = [w for w in tracked if w.unfinished_jobs()]
        unfinished = 0
        for w in works:
            unfinished += w.unfinished_jobs()
            try:
                w.cancel(reason=reason)
            except Exception as err:  # noqa: BLE001 - the others are still cancelled
                logger.error("could not cancel work %s: %s", w.name, err)
        if unfinished:
            executors = ", ".join(sorted({w.executor_name for w in works}))
            logger.warning("iworkflow: %s: cancelled %d unfinished job(s) of %d work(s) on %s (queued ones "
                           "dropped, running ones stopped)", reason, unfinished, len(works), executors)
        return unfinished

    def emit(self, event: Event) -> None:
        if self.emit_events:
            self.bus.broadcast_async(EVENTS_TOPIC, encode_event(event, self.secret))

    def close(self) -> None:
        """Close everything; jobs still unfinished are cancelled (a driver's jobs do not outlive it)."""
        with self._lock:
            cancelled = self.cancel_outstanding("the driver exited") if self._outstanding else 0
            for ex in self._executors.values():
                try:
                    ex.shutdown(wait=not cancelled)
                except Exception:
                    logger.exception("error shutting down executor %s", ex)
            self._executors.clear()
            if self._inbox is not None:
                self._inbox.close()
                self._inbox = None
            if self._blobs is not None:
                self._blobs.close()
                self._blobs.bus.close()
                self._blobs = None
            if self._result_cache is not None:
                self._result_cache.close()
                self._result_cache = None
            if self._bus is not None:
                self._bus.close()
                self._bus = None


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                _runtime = Runtime(load_settings())
    return _runtime


def configure(config_file: str | None = None, **overrides: Any) -> Runtime:
    """Replace the runtime (closing the old one) with settings from env/TOML plus these overrides."""
    global _runtime
    with _runtime_lock:
        if _runtime is not None:
            _runtime.close()
        _runtime = Runtime(load_settings(config_file, **overrides))
        return _runtime


def shutdown() -> None:
    global _runtime
    with _runtime_lock:
        if _runtime is not None:
            _runtime.close()
            _runtime = None


atexit.register(shutdown)
