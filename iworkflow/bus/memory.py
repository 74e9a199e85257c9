"""The in-process bus: the zero-setup default, with the same queue/topic semantics as a broker."""
from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field

from ..errors import BrokerError
from .base import CANCELLED, Bus, Delivery, Handler, Subscription

logger = logging.getLogger(__name__)


class _MemoryDelivery(Delivery):
    __slots__ = ("body", "destination", "redelivered", "_queue", "_consumer", "_settled")

    def __init__(self, body: bytes, queue: "_Queue", consumer: "_Consumer | None", redelivered: bool):
        self.body = body
        self.destination = queue.name
        self.redelivered = redelivered
        self._queue = queue
        self._consumer = consumer
        self._settled = False

    def ack(self) -> None:
        if not self._settled:
            self._settled = True
            self._queue.settle(self._consumer)

    def reject(self, requeue: bool = False) -> None:
        if self._settled:
            return
        self._settled = True
        self._queue.settle(self._consumer)
        if requeue:
            self._queue.bus._enqueue(self._queue.name, self.body, redelivered=True)
        else:
            self._queue.bus._dead_letter(self.body)


@dataclass(eq=False)
class _Consumer(Subscription):
    queue: "_Queue"
    handler: Handler
    prefetch: int
    unacked: int = 0
    active: bool = True

    def cancel(self) -> None:
        self.state = CANCELLED
        self.queue.remove(self)

    def set_prefetch(self, prefetch: int) -> None:
        with self.queue.bus._cond:
            self.prefetch = prefetch
            self.queue.bus._cond.notify_all()


@dataclass(eq=False)
class _Queue:
    bus: "MemoryBus"
    name: str
    messages: deque = field(default_factory=deque)
    consumers: list = field(default_factory=list)
    next_consumer: int = 0

    def settle(self, consumer: "_Consumer | None") -> None:
        with self.bus._cond:
            if consumer is not None and consumer.unacked > 0:
                consumer.unacked -= 1
            self.bus._cond.notify_all()

    def remove(self, consumer: "_Consumer") -> None:
        with self.bus._cond:
            consumer.active = False
            if consumer in self.consumers:
                self.consumers.remove(consumer)

    def pick(self) -> "_Consumer | None":
        n = len(self.consumers)
        for i in range(n):
            c = self.consumers[(self.next_consumer + i) % n]
            if c.prefetch <= 0 or c.unacked < c.prefetch:
                self.next_consumer = (self.next_consumer + i + 1) % n
                return c
        return None


class MemoryBus(Bus):
    """Queues and topics inside one process; one dispatcher thread calls the handlers in order."""

    def __init__(self, url: str = "memory://", dead_letter_queue: str = "dlq", dead_letter_max: int = 100_000):
        self.url = url
        self.dead_letter_queue = dead_letter_queue
        #: the dead letters kept at most (the oldest dropped first), as the brokers' dead-letter queues
        self.dead_letter_max = dead_letter_max
        self._cond = threading.Condition()
        self._queues: dict[str, _Queue] = {}
        self._topics: dict[str, list[_TopicSub]] = {}
        self._ready: deque[tuple[Handler, Delivery]] = deque()
        self._closed = False
        self._thread = threading.Thread(target=self._dispatch, name="iworkflow-memory-bus", daemon=True)
        self._thread.start()

    def _queue(self, name: str) -> _Queue:
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = _Queue(self, name)
        return q

    def _enqueue(self, name: str, body: bytes, redelivered: bool = False) -> None:
        with self._cond:
            self._check_open()
            q = self._queue(name)
            q.messages.append((body, redelivered))
            self._cond.notify_all()

    def _dead_letter(self, body: bytes) -> None:
        logger.warning("message dead-lettered to %s", self.dead_letter_queue)
        if not self._closed:
            self._enqueue(self.dead_letter_queue, body)
            with self._cond:
                dead = self._queue(self.dead_letter_queue).messages
                while len(dead) > self.dead_letter_max:
                    dead.popleft()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the memory bus is closed")

    def publish(self, queue: str, body: bytes) -> None:
        self._enqueue(queue, bytes(body))

    def publish_many(self, queue: str, bodies: list[bytes]) -> None:
        with self._cond:
            self._check_open()
            self._queue(queue).messages.extend((bytes(b), False) for b in bodies)
            self._cond.notify_all()

    def consume(self, queue: str, handler: Handler, *, prefetch: int = 1, wait: bool = True) -> Subscription:
        with self._cond:
            self._check_open()
            consumer = _Consumer(self._queue(queue), handler, prefetch)
            consumer.queue.consumers.append(consumer)
            self._cond.notify_all()
            return consumer

    def broadcast(self, topic: str, body: bytes) -> None:
        with self._cond:
            subs = list(self._topics.get(topic, ()))
            for sub in subs:
                self._ready.append((sub.handler, _TopicDelivery(body, topic)))
            if subs:
                self._cond.notify_all()

    def subscribe(self, topic: str, handler: Handler) -> Subscription:
        with self._cond:
            self._check_open()
            sub = _TopicSub(self, topic, handler)
            self._topics.setdefault(topic, []).append(sub)
            return sub

    def has_subscribers(self, topic: str) -> bool:
        return bool(self._topics.get(topic))

    def delete_queue(self, queue: str) -> None:
        with self._cond:
            q = self._queues.pop(queue, None)
            if q is not None:
                for c in q.consumers:
                    c.active = False
                    c.give_up(BrokerError(f"queue {queue} was deleted"))

    def queue_depth(self, queue: str) -> int:
        with self._cond:
            q = self._queues.get(queue)
            return len(q.messages) if q else 0

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def _collect(self) -> None:
        """Move queued messages to consumers with free prefetch (called with the lock held)."""
        for q in self._queues.values():
            while q.messages and q.consumers:
                consumer = q.pick()
                if consumer is None:
                    break
                body, redelivered = q.messages.popleft()
                consumer.unacked += 1
                self._ready.append((consumer.handler, _MemoryDelivery(body, q, consumer, redelivered)))

    def _return_unhandled(self, delivery: Delivery) -> None:
        """A consumer cancelled before its message was handled: put it back unless the queue is gone."""
        with self._cond:
            if self._closed or delivery.destination not in self._queues:
                return
            self._queues[delivery.destination].messages.appendleft((delivery.body, True))
            self._cond.notify_all()

    def _dispatch(self) -> None:
        while True:
            with self._cond:
                while True:
                    self._collect()
                    if self._ready or self._closed:
                        break
                    self._cond.wait()
                if self._closed and not self._ready:
                    return
                batch = list(self._ready)
                self._ready.clear()
            for handler, delivery in batch:
                consumer = getattr(delivery, "_consumer", None)
                if consumer is not None and not consumer.active:
                    self._return_unhandled(delivery)
                    continue
                try:
                    handler(delivery)
                except Exception:
                    logger.exception("bus handler for %s failed; message requeued", delivery.destination)
                    delivery.reject(requeue=not delivery.redelivered)


class _TopicDelivery(Delivery):
    __slots__ = ("body", "destination", "redelivered")

    def __init__(self, body: bytes, topic: str):
        self.body = body
        self.destination = topic
        self.redelivered = False

    def ack(self) -> None:
        pass

    def reject(self, requeue: bool = False) -> None:
        pass


@dataclass(eq=False)
class _TopicSub(Subscription):
    bus: MemoryBus
    topic: str
    handler: Handler

    def cancel(self) -> None:
        with self.bus._cond:
            subs = self.bus._topics.get(self.topic, [])
            if self in subs:
                subs.remove(self)
