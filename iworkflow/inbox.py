"""The driver's results inbox: one queue per driver process, each message routed to its work's AsyncResult.

One long-lived queue instead of one per work saves a queue declare and delete per call (several ms on a
broker), and workers declare it once per driver rather than once per work.
"""
from __future__ import annotations

import logging
import threading
import uuid
from typing import TYPE_CHECKING, Callable

from .bus.base import Delivery
from .envelope import Envelope, decode
from .errors import InvalidMessage
from .messages import DEAD_LETTER_QUEUE, inbox_destination, split_bundle

if TYPE_CHECKING:
    from .bus.base import Bus, Subscription

logger = logging.getLogger(__name__)

Route = Callable[[Envelope, "Delivery"], None]
Wake = Callable[[], None]
#: told of a control message for a work no longer routed here (its sender waits for an answer)
Unrouted = Callable[[Envelope], None]


class _Member(Delivery):
    """One result of a result bundle: nothing to ack alone; rejecting it sends it to the dead letters."""

    def __init__(self, bus: "Bus", body: bytes, destination: str):
        self.body = body
        self.destination = destination
        self._bus = bus

    def ack(self) -> None:
        pass

    def reject(self, requeue: bool = False) -> None:
        if not requeue:
            self._bus.publish(DEAD_LETTER_QUEUE, self.body)


class Inbox:
    """Consumes ``results.driver-<id>`` from the first registered work on; routes by the header's work id."""

    def __init__(self, bus: "Bus", secret: bytes, driver_id: str | None = None, unrouted: Unrouted | None = None):
        self.bus = bus
        self._unrouted = unrouted
        self.secret = secret
        self.destination = inbox_destination(driver_id or uuid.uuid4().hex[:16])
        self._routes: dict[str, Route] = {}
        self._wakes: dict[str, Wake] = {}
        self._lock = threading.Lock()
        self._subscription: Subscription | None = None
        self._closed = False

    @property
    def error(self) -> BaseException | None:
        """Why the inbox no longer receives: the broker ended its consumer, or it was closed."""
        if self._closed:
            return RuntimeError("the results inbox is closed (iworkflow.shutdown() was called)")
        return getattr(self._subscription, "error", None)

    def register(self, work_id: str, route: Route, wake: Wake | None = None) -> None:
        """Route ``work_id``'s messages to ``route``; ``wake()`` is called if the broker ends the inbox's consumer."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the results inbox is closed (iworkflow.shutdown() was called)")
            self._routes[work_id] = route
            if wake is not None:
                self._wakes[work_id] = wake
            if self._subscription is None:
                # publishers declare the queue as well: no need to wait for the broker here
                self._subscription = self.bus.consume(self.destination, self._on_delivery, prefetch=0, wait=False)
                self._subscription.add_lost_callback(self._on_lost)

    def unregister(self, work_id: str) -> None:
        with self._lock:
            self._routes.pop(work_id, None)
            self._wakes.pop(work_id, None)

    def _on_lost(self) -> None:
        with self._lock:
            wakes = list(self._wakes.values())
        for wake in wakes:
            wake()

    def _on_delivery(self, delivery: "Delivery") -> None:
        try:
            env = decode(delivery.body, self.secret)
            members = split_bundle(env) if env.kind == "bundle" else None
        except InvalidMessage as err:
            logger.error("dead-lettering an unreadable result on %s: %s", delivery.destination, err)
            delivery.reject(requeue=False)
            return
        if members is None:
            self._route(env, delivery)
            return
        for body in members:  # a bundle of results that came back together: settled as a whole
            member = _Member(self.bus, body, delivery.destination)
            try:
                self._route(decode(body, self.secret), member)
            except InvalidMessage as err:
                logger.error("dead-lettering an unreadable result in a bundle on %s: %s", delivery.destination, err)
                member.reject(requeue=False)
        delivery.ack()

    def _route(self, env: Envelope, delivery: "Delivery") -> None:
        route = self._routes.get(env.work_id or "")
        if route is None:
            logger.debug("%s of job %s for finished or unknown work %s dropped", env.kind, env.job_key, env.work_id)
            if env.kind == "control" and self._unrouted is not None:
                try:
                    self._unrouted(env)
                except Exception:  # noqa: BLE001 - an answer that cannot go out must not stop the inbox
                    logger.exception("could not answer a control for work %s", env.work_id)
            delivery.ack()
            return
        route(env, delivery)

    def close(self) -> None:
        """Stop consuming and delete the queue: nobody will read it again."""
        with self._lock:
            self._closed = True
            subscription, self._subscription = self._subscription, None
            self._routes.clear()
            wakes = list(self._wakes.values())
            self._wakes.clear()
        for wake in wakes:  # whoever still waits sees the inbox closed
            wake()
        if subscription is None:
            return
        subscription.cancel()
        try:
            self.bus.forget_queue(self.destination)
        except Exception as err:  # noqa: BLE001 - the broker may already be gone at interpreter exit
            logger.debug("could not delete %s: %s", self.destination, err)
