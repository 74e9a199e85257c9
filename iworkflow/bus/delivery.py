"""The delivery policy shared by the broker buses: counting lost deliveries, putting messages back, dead
letters, splitting bundles, and the dispatcher that hands deliveries to handlers.

Brokers only say *whether* a message was handed out before (AMQP ``redelivered``, STOMP
``redelivered:true``), and a message handed back on purpose looks the same as one whose consumer vanished.
So on a counting queue a message is never requeued in place: a handed-back message is re-published as a
copy (same count) and the original acked; a message the broker hands out again because its consumer
vanished is re-published with the ``iworkflow-lost`` header incremented.  ``delivery_count`` is then
``lost + 1``: only lost deliveries count.  A lost bundle is not put back whole: each of its (separately
signed) jobs goes back alone with a fresh count, so one job that kills its worker cannot fail the others.

The transports (``amqp.py``, ``stomp.py``) carry the policy's decisions out: ``HandOver`` (run the handler),
``PutBack`` (publish these copies, then ack the original), ``GiveBack`` (the broker's own requeue).
"""
from __future__ import annotations

import logging
import queue as _queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from ..envelope import decode
from ..errors import InvalidMessage
from .base import Bus, Delivery, Handler

logger = logging.getLogger(__name__)

#: header: how many times the message's holder was lost so far
LOST = "iworkflow-lost"
#: header: set on a copy put back (lost or handed back): its consumer sees it as redelivered
REQUEUED = "iworkflow-requeued"


@dataclass(frozen=True)
class Arrival:
    """What a transport knows about a message it received from a queue."""

    body: bytes
    #: the broker handed it out before (its consumer vanished, or it was requeued in place)
    broker_redelivered: bool = False
    #: the ``iworkflow-lost`` header (0 when absent)
    lost: int = 0
    #: the ``iworkflow-requeued`` header: a copy put back by a bus
    requeued: bool = False
    #: a broker's own count of earlier deliveries (RabbitMQ quorum queues' ``x-delivery-count``), else None
    broker_count: int | None = None


@dataclass(frozen=True)
class HandOver:
    """Give the message to the handler, saying how often it was delivered and whether it came back."""

    count: int
    redelivered: bool


@dataclass(frozen=True)
class PutBack:
    """Publish these ``(body, lost)`` copies to the queue, then ack the original (at least once)."""

    copies: tuple[tuple[bytes, int], ...]


@dataclass(frozen=True)
class GiveBack:
    """Let the broker requeue the message in place (queues whose broker counts deliveries itself)."""


Decision = HandOver | PutBack | GiveBack


class DeliveryPolicy:
    """The policy of one queue: ``counts`` when the bus counts lost deliveries itself (STOMP queues, RabbitMQ
    classic job queues); ``secret`` lets a lost bundle be verified and split into its jobs."""

    def __init__(self, counts: bool, secret: bytes | None = None):
        self.counts = counts
        self.secret = secret

    def on_arrival(self, arrival: Arrival, active: bool) -> Decision:
        """What to do with a message the broker just handed to a consumer (``active``: not cancelled)."""
        if self.counts:
            if arrival.broker_redelivered:  # its consumer vanished: one more lost delivery
                return self._lost(arrival.body, arrival.lost + 1)
            if not active:
                return PutBack(((arrival.body, arrival.lost),))
            return HandOver(arrival.lost + 1, arrival.requeued)
        if not active:
            return GiveBack()
        if arrival.broker_count is not None:
            count = arrival.broker_count + 1
            if count > 1:
                members = self.bundle_members(arrival.body)
                if members is not None:
                    return self._split(members)
            return HandOver(count, arrival.broker_redelivered)
        return HandOver(0 if arrival.broker_redelivered else 1, arrival.broker_redelivered)

    def on_requeue(self, body: bytes, count: int) -> Decision:
        """A consumer hands a message back unprocessed: it was not lost, its count stays."""
        if self.counts:
            return PutBack(((body, max(0, count - 1)),))
        return GiveBack()

    def _lost(self, body: bytes, lost: int) -> PutBack:
        members = self.bundle_members(body)
        if members is not None:
            return self._split(members)
        return PutBack(((body, lost),))

    @staticmethod
    def _split(members: list[bytes]) -> PutBack:
        logger.warning("splits a redelivered bundle of %d jobs: each goes back to the queue alone", len(members))
        return PutBack(tuple((member, 0) for member in members))

    def bundle_members(self, body: bytes) -> list[bytes] | None:
        """The jobs of a correctly signed bundle, else None (whatever it is, the consumer judges it)."""
        if self.secret is None:
            return None
        try:
            env = decode(body, self.secret)
            if env.kind != "bundle":
                return None
            from ..messages import split_bundle

            return split_bundle(env) or None
        except InvalidMessage:
            return None


class Consumer(Protocol):
    handler: Handler
    active: bool


def call_handler(consumer: Consumer, delivery: Delivery) -> None:
    """Run a consumer's handler; a handler that raises gets its message back once (then dead-lettered)."""
    if not consumer.active:
        delivery.reject(requeue=True)
        return
    try:
        consumer.handler(delivery)
    except Exception:
        logger.exception("bus handler for %s failed; message requeued", delivery.destination)
        delivery.reject(requeue=not delivery.redelivered)


class Dispatcher:
    """The thread that runs handlers, so a handler may publish and wait for the broker without blocking the
    bus's I/O.  ``prepare`` (optional) turns a queued item into ``(consumer, delivery)`` on this thread first,
    or None when the transport has settled it (a STOMP message put back, for one)."""

    def __init__(self, name: str, prepare: Callable[[Any], tuple[Consumer, Delivery] | None] | None = None):
        self._items: _queue.SimpleQueue = _queue.SimpleQueue()
        self._prepare = prepare
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: Any) -> None:
        self._items.put(item)

    def _run(self) -> None:
        while True:
            item = self._items.get()
            if item is None:
                return
            if self._prepare is not None:
                try:
                    item = self._prepare(item)
                except Exception:  # noqa: BLE001 - one bad frame must not end the dispatcher
                    logger.exception("bus could not take a message; the broker keeps it")
                    continue
                if item is None:
                    continue
            call_handler(*item)

    def stop(self) -> None:
        self._items.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)


# --- bundles: one message, many jobs, settled together --------------------------------------------------
class Bundle:
    """A bundle message run as separate jobs: once every job is settled, the jobs handed back are re-sent
    alone, the bad ones dead-lettered, and then the bundle is acked (if re-sending fails, the broker gets
    the whole bundle back instead)."""

    def __init__(self, bus: Bus, delivery: Delivery, size: int, queue: str, dead_letters: str,
                 on_settled: Callable[[Future], None] | None = None):
        self.bus = bus
        self.delivery = delivery
        self.queue = queue
        self.dead_letters = dead_letters
        self.remaining = size
        self.back: list[bytes] = []
        self.dead: list[bytes] = []
        self.on_settled = on_settled
        self._lock = threading.Lock()

    def members(self, bodies: list[bytes]) -> list[BundleMember]:
        return [BundleMember(self, body) for body in bodies]

    def settle(self, body: bytes, outcome: str) -> None:
        with self._lock:
            if outcome == "back":
                self.back.append(body)
            elif outcome == "dead":
                self.dead.append(body)
            self.remaining -= 1
            last = self.remaining == 0
        if last:
            self._finish()

    def _finish(self) -> None:
        done: Future = Future()
        if self.on_settled is not None:
            done.add_done_callback(self.on_settled)
        if not self.back and not self.dead:
            self.delivery.ack()
            done.set_result(None)
            return
        sends = []
        for destination, bodies in ((self.queue, self.back), (self.dead_letters, self.dead)):
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
                self.delivery.reject(requeue=True)
            else:
                self.delivery.ack()
            done.set_result(None)

        for f in sends:
            f.add_done_callback(sent)


class BundleMember(Delivery):
    """One job of a bundle: acking it marks it done, rejecting it hands it back alone (or dead-letters it)."""

    def __init__(self, bundle: Bundle, body: bytes):
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


__all__ = ["LOST", "REQUEUED", "Arrival", "Bundle", "BundleMember", "DeliveryPolicy", "Dispatcher", "GiveBack",
           "HandOver", "PutBack", "call_handler"]
