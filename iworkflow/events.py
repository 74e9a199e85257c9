"""Batching of lifecycle events: one signed message per burst instead of one per job and event.

Lifecycle events feed the server's records and are on nobody's critical path, so a worker running
hundreds of short jobs a second sends them every ``delay`` seconds (or every ``max_events``) as one
``encode_event_batch`` message; the recorder reads single events and batches alike.
"""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from .messages import EVENTS_TOPIC, Event, encode_event_batch

if TYPE_CHECKING:
    from .bus.base import Bus

logger = logging.getLogger(__name__)


class EventBatcher:
    """Collects events (``Event`` or its ``to_json()`` bytes) and broadcasts them together."""

    def __init__(self, bus: "Bus", secret: bytes, topic: str = EVENTS_TOPIC, delay: float = 0.05,
                 max_events: int = 500):
        self.bus = bus
        self.secret = secret
        self.topic = topic
        self.delay = delay
        self.max_events = max_events
        self._items: list[bytes] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def add(self, event: Event | bytes) -> None:
        data = event if isinstance(event, bytes) else event.to_json()
        full: list[bytes] = []
        with self._cond:
            if self._closed:
                full = [data]
            else:
                self._items.append(data)
                if len(self._items) >= self.max_events:
                    full, self._items = self._items, []
                elif len(self._items) == 1:
                    self._ensure_thread()
                    self._cond.notify()
        if full:
            self._send(full)

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="iworkflow-events", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                self._cond.wait(self.delay)  # let the burst gather; close() sends what is left
                batch, self._items = self._items, []
            if batch:
                self._send(batch)

    def _send(self, batch: list[bytes]) -> None:
        try:
            self.bus.broadcast_async(self.topic, encode_event_batch(batch, self.secret))
        except Exception as err:  # noqa: BLE001 - events are records, never a reason to fail a job
            logger.warning("%d event(s) for %s not sent: %s", len(batch), self.topic, err)

    def close(self) -> None:
        """Send what is waiting; events added afterwards go out one message each."""
        with self._cond:
            self._closed = True
            batch, self._items = self._items, []
            self._cond.notify_all()
            thread = self._thread
        if batch:
            self._send(batch)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
