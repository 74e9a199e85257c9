"""The Bus interface: point-to-point queues for jobs and results, a broadcast topic for events.

Every bus (in-process memory, AMQP, STOMP) carries opaque signed envelopes as bytes, so the core
never depends on which one is configured.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from concurrent.futures import Future
from typing import Callable


class Delivery(ABC):
    """One message taken from a queue; the consumer acks it once it is done with it."""

    body: bytes
    destination: str
    redelivered: bool = False
    #: how many times the broker has delivered this message, this time included (0: the broker does not say)
    delivery_count: int = 0

    @abstractmethod
    def ack(self) -> None: ...

    @abstractmethod
    def reject(self, requeue: bool = False) -> None:
        """Give the message back (requeue=True) or drop it to the dead-letter destination."""


Handler = Callable[[Delivery], None]


#: states of a subscription: taking messages; being re-established (connection lost, queue deleted, consumer
#: cancelled by the broker); given up (see ``error``); cancelled by its owner
CONSUMING, RECOVERING, LOST, CANCELLED = "consuming", "recovering", "lost", "cancelled"


class Subscription(ABC):
    #: why the broker ended this subscription (set when it refused or closed it), else None
    error: BaseException | None = None
    #: one of CONSUMING, RECOVERING, LOST, CANCELLED (health endpoints report it)
    state: str = CONSUMING

    @abstractmethod
    def cancel(self) -> None: ...

    def add_lost_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the bus gives this subscription up (state LOST); at once if it has."""
        self.__dict__.setdefault("_lost_callbacks", []).append(callback)
        if self.state == LOST:
            callback()

    def give_up(self, error: BaseException | None = None) -> None:
        """(bus implementations) Mark the subscription lost, with why, and tell whoever asked."""
        if error is not None:
            self.error = error
        self.state = LOST
        for callback in list(self.__dict__.get("_lost_callbacks", ())):
            try:
                callback()
            except Exception:  # noqa: BLE001 - a watcher's error must not stop the bus thread
                logging.getLogger(__name__).exception("lost-subscription callback %r failed", callback)

    def set_prefetch(self, prefetch: int) -> None:
        """Change how many unsettled messages the broker hands this consumer (buses that cannot: no-op)."""


class Bus(ABC):
    """Moves bytes between drivers, workers and the server.

    ``publish``/``consume``: a durable queue, each message to one consumer, buffered while nobody
    listens.  ``broadcast``/``subscribe``: a topic, each message to every current subscriber.
    Handlers run on a bus thread and must not block for long.
    """

    url: str

    @abstractmethod
    def publish(self, queue: str, body: bytes) -> None: ...

    @abstractmethod
    def consume(self, queue: str, handler: Handler, *, prefetch: int = 1, wait: bool = True) -> Subscription:
        """Consume a queue; ``wait=False`` returns before the broker confirms (an error then shows on
        the subscription's ``error``), for a consumer whose queue the publishers declare anyway."""

    @abstractmethod
    def broadcast(self, topic: str, body: bytes) -> None: ...

    @abstractmethod
    def subscribe(self, topic: str, handler: Handler) -> Subscription: ...

    def subscribe_durable(self, topic: str, name: str, handler: Handler, *, prefetch: int = 500) -> Subscription:
        """Consume the named durable queue that gets a copy of everything broadcast on ``topic``.

        Unlike ``subscribe``, what is broadcast while the consumer is away waits for it (brokers bound the
        backlog by ``settings.event_backlog_max``/``event_backlog_ttl``), and the handler acks.  The queue
        exists from the first call on.  In-process buses have nobody to wait for: a plain subscription.
        """
        return self.subscribe(topic, handler)

    @abstractmethod
    def delete_queue(self, queue: str) -> None:
        """Drop a queue and its messages (results queues of finished works)."""

    @abstractmethod
    def close(self) -> None: ...

    def broadcast_async(self, topic: str, body: bytes,
                        on_sent: Callable[[BaseException | None], None] | None = None) -> None:
        """Broadcast without waiting for the broker; ``on_sent(error or None)`` runs once it has the message."""
        try:
            self.broadcast(topic, body)
        except Exception as err:  # noqa: BLE001 - reported to on_sent, as a broker would
            if on_sent is None:
                raise
            on_sent(err)
            return
        if on_sent is not None:
            on_sent(None)

    def publish_many_async(self, queue: str, bodies: list[bytes]) -> Future:
        """Publish a batch without waiting; the Future completes once the broker has confirmed all of it."""
        done: Future = Future()
        try:
            self.publish_many(queue, bodies)
        except Exception as err:  # noqa: BLE001 - handed to whoever waits on the Future
            done.set_exception(err)
        else:
            done.set_result(None)
        return done

    def forget_queue(self, queue: str) -> None:
        """Delete a queue nobody needs any more (a finished work's results) without waiting for the broker."""
        self.delete_queue(queue)

    def publish_many(self, queue: str, bodies: list[bytes]) -> None:
        """Publish a batch; brokers override this to confirm the batch once rather than per message."""
        for body in bodies:
            self.publish(queue, body)

    def __enter__(self) -> "Bus":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def report_sent(future, destination: str, on_sent: Callable[[BaseException | None], None] | None) -> None:
    """Done-callback of an asynchronous broadcast: hand the outcome to ``on_sent``, or log a failure."""
    err = future.exception()
    if on_sent is not None:
        on_sent(err)
    elif err is not None:
        logging.getLogger(__name__).warning("broadcast to %s not confirmed by the broker: %s", destination, err)
