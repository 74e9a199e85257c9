"""The RabbitMQ bus on pika.

pika connections are not thread-safe, so one I/O thread owns an asynchronous ``SelectConnection``
and every other thread marshals its calls onto that thread's IOLoop.  Handlers run on a separate
dispatcher thread, so a handler may publish (and wait for the confirm) without blocking the I/O.

Layout on the broker (``<p>`` = ``settings.destination_prefix``): queues ``<p><name>`` on the
default exchange, each dead-lettering to ``<p>dlq``; topics are fanout exchanges ``<p><topic>`` with
one exclusive auto-delete queue per subscriber.

Job queues (``jobs.*``) must say how often a message was delivered.  ``job_queue_type = "classic"``
(the default, the lowest latency): the bus counts itself, as the STOMP bus does (the shared policy of
``delivery.py``: lost deliveries in ``iworkflow-lost``, copies put back, lost bundles split).
``"quorum"``: quorum queues (replicated on a cluster) count in ``x-delivery-count``.

A consumer the broker ends (its queue deleted, the consumer cancelled, the channel closed) is
re-established: the queue declared again and consumed again, a few times with backoff, after which the
subscription's ``state`` says ``lost`` and its ``error`` why.  The dead-letter queue is bounded by
``dlq_max_length`` and ``dlq_ttl``.
"""
from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import pika
from pika.adapters.select_connection import IOLoop
from pika.exceptions import AMQPConnectionError, ChannelClosedByBroker, ConnectionClosedByClient
from tenacity import RetryCallState, wait_exponential, wait_random

from ..config import Settings, redact_url
from ..errors import BrokerError, ConfigurationError
from .base import CANCELLED, CONSUMING, LOST, RECOVERING, Bus, Delivery, Handler, Subscription, report_sent
from .delivery import LOST as LOST_HEADER
from .delivery import REQUEUED, Arrival, DeliveryPolicy, Dispatcher, GiveBack, PutBack

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15.0
CONFIRM_TIMEOUT = 60.0
CONSUME_TIMEOUT = 15.0
HEARTBEAT = 20
RECONNECT_WAIT = wait_exponential(multiplier=0.2, max=10.0) + wait_random(0, 0.5)
JOBS_PREFIX = "jobs."
RESULTS_PREFIX = "results."
#: a crashed process's blobs queue (``iworkflow.blob_transfer``) goes away as its results queue does
BLOBS_PREFIX = "blobs."
#: how often (and how patiently) a consumer the broker ended is re-established before it is given up as lost
CONSUMER_RETRIES = 5
CONSUMER_RETRY_WAIT = wait_exponential(multiplier=0.25, max=4.0) + wait_random(0, 0.25)
#: a results queue nobody has consumed for a day belongs to a driver that is gone
RESULTS_QUEUE_EXPIRES_MS = 24 * 3600 * 1000


def _reconnect_delay(attempt: int, wait=RECONNECT_WAIT) -> float:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    return wait(state)


@dataclass(eq=False)
class _Batch:
    """Messages published together and confirmed together: the Future completes on the last confirm."""

    exchange: str
    routing_key: str
    bodies: list[bytes]
    persistent: bool
    future: Future = field(default_factory=Future)
    headers: dict[str, Any] | None = None
    remaining: int = 0


class AmqpDelivery(Delivery):
    """A message from a RabbitMQ queue; ack/reject are marshalled onto the I/O thread."""

    __slots__ = (
        "_channel",
        "_consumer",
        "_settled",
        "_tag",
        "body",
        "delivery_count",
        "destination",
        "redelivered",
    )

    def __init__(self, consumer: _Consumer, channel, tag: int, body: bytes, redelivered: bool, count: int):
        self.body = body
        self.destination = consumer.name
        self.redelivered = redelivered
        self.delivery_count = count
        self._consumer = consumer
        self._channel = channel
        self._tag = tag
        self._settled = consumer.topic

    def ack(self) -> None:
        self._settle(lambda ch: ch.basic_ack(self._tag))

    def reject(self, requeue: bool = False) -> None:
        policy = self._consumer.policy
        decision = policy.on_requeue(self.body, self.delivery_count) if requeue and policy else GiveBack()
        if isinstance(decision, PutBack):  # a copy goes back and the original is acked
            self._settle(lambda ch: self._consumer.bus._put_back(ch, self._tag, self._consumer.name, decision.copies))
            return
        self._settle(lambda ch: ch.basic_reject(self._tag, requeue=requeue))

    def _settle(self, action: Callable[[Any], None]) -> None:
        if self._settled:
            return
        self._settled = True
        self._consumer.bus._call_soon(lambda: self._consumer.settled(self._channel, action))


@dataclass(eq=False)
class _Consumer(Subscription):
    """One consume() or subscribe(): re-established on every new connection until cancelled."""

    bus: AmqpBus
    name: str
    handler: Handler
    prefetch: int
    topic: bool
    bind: str = ""
    #: how deliveries are counted and put back (None: topics, auto-acked)
    policy: DeliveryPolicy | None = None
    channel: Any = None
    on_message: Any = None
    unsettled: int = 0
    active: bool = True
    started: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    state: str = RECOVERING
    #: re-establishments in a row since the broker last ended this consumer
    retries: int = 0

    def cancel(self) -> None:
        """Stop new deliveries; messages already handed to the handler may still be acked or rejected."""
        if not self.active:
            return
        self.active = False
        self.state = CANCELLED
        self.bus._call_soon(lambda: self.bus._stop_consumer(self))

    def set_prefetch(self, prefetch: int) -> None:
        """Consume again with the new limit: RabbitMQ fixes a consumer's prefetch when it starts, and quorum
        queues have no channel-wide limit to change instead.  Deliveries in flight at the switch return to
        the queue."""
        if self.topic or prefetch == self.prefetch:
            return
        self.prefetch = prefetch
        self.bus._call_soon(lambda: self.bus._reconsume(self))

    def settled(self, channel, action: Callable[[Any], None]) -> None:
        """(I/O thread) ack/reject on the channel that received the message, if it is still open."""
        if channel is not self.channel:
            return  # the channel died: the broker has already requeued the message
        self.unsettled -= 1
        if channel.is_open:
            action(channel)
        if not self.active and self.unsettled <= 0 and channel.is_open:
            channel.close()


class AmqpBus(Bus):
    """Durable queues, persistent confirmed publishes, fanout topics; reconnects with backoff."""

    def __init__(self, url: str, settings: Settings | None = None):
        from ..config import load_settings

        self.url = url
        self.settings = settings or load_settings()
        self.prefix = self.settings.destination_prefix
        self.dead_letter_queue = self.prefix + "dlq"
        if self.settings.job_queue_type not in ("classic", "quorum"):
            raise ConfigurationError(f"job_queue_type must be 'classic' or 'quorum', got "
                                     f"{self.settings.job_queue_type!r}")
        self.quorum_jobs = self.settings.job_queue_type == "quorum"
        try:
            self._params = pika.URLParameters(url)
        except Exception as err:  # pika raises plain ValueError/TypeError on bad URLs
            raise ConfigurationError(f"broker URL {redact_url(url)!r} is not a valid AMQP URL: {err}") from None
        self._params.connection_attempts = 1
        self._params.socket_timeout = 5
        self._params.stack_timeout = CONNECT_TIMEOUT - 1
        self._params.heartbeat = HEARTBEAT
        self.connection_name = f"iworkflow {socket.gethostname()}:{os.getpid()} {self.prefix}{uuid.uuid4().hex[:8]}"
        self._params.client_properties = {"connection_name": self.connection_name}
        self._ioloop = IOLoop()
        self._conn: pika.SelectConnection | None = None
        self._pub: Any = None
        self._admin: Any = None
        self._declared: set[str] = set()
        self._pending: dict[int, _Batch] = {}
        self._unsent: list[_Batch] = []
        self._next_tag = 0
        self._consumers: list[_Consumer] = []
        self._closing = False
        self._connected = threading.Event()
        self._first = threading.Event()
        self._first_error: BaseException | None = None
        self._attempt = 0
        self._calls: list[Callable[[], None]] = []
        self._calls_lock = threading.Lock()
        self._wake_pending = False
        self._io = threading.Thread(target=self._ioloop.start, name="iworkflow-amqp-io", daemon=True)
        self._io.start()
        self._dispatcher = Dispatcher("iworkflow-amqp-dispatch")
        self._call_soon(self._connect)
        if not self._first.wait(CONNECT_TIMEOUT + 5) or self._first_error is not None:
            cause = self._first_error or TimeoutError(f"no answer within {CONNECT_TIMEOUT + 5:.0f}s")
            self._closing = True
            self._call_soon(self._ioloop.stop)
            self._shutdown_threads()
            raise BrokerError(f"cannot connect to broker {redact_url(url)}: {_describe(cause)}") from None

    # --- thread plumbing ---------------------------------------------------------------------
    def _call_soon(self, fn: Callable[[], None]) -> None:
        """Queue fn for the I/O thread; a burst of calls (acks, publishes) costs one wake-up of the loop."""
        with self._calls_lock:
            self._calls.append(fn)
            if self._wake_pending:
                return
            self._wake_pending = True
        self._ioloop.add_callback_threadsafe(self._run_calls)

    def _run_calls(self) -> None:
        while True:
            with self._calls_lock:
                if not self._calls:
                    self._wake_pending = False
                    return
                calls, self._calls = self._calls, []
            for fn in calls:
                try:
                    fn()
                except Exception:  # noqa: BLE001 - one failed call must not drop the others queued with it
                    logger.exception("bus I/O call failed")

    def _on_io(self, fn: Callable[[], Any], timeout: float = CONFIRM_TIMEOUT) -> Any:
        """Run fn on the I/O thread and return its result (fn may return a Future to wait on)."""
        done: Future = Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as err:  # noqa: BLE001 - handed back to the calling thread
                done.set_exception(err)

        self._call_soon(run)
        result = done.result(timeout)
        if isinstance(result, Future):
            return result.result(timeout)
        return result

    def _check_open(self) -> None:
        if self._closing:
            raise BrokerError(f"the bus to {redact_url(self.url)} is closed")

    # --- connection lifecycle (I/O thread) ---------------------------------------------------
    def _connect(self) -> None:
        if self._closing:
            return
        self._conn = pika.SelectConnection(
            self._params, on_open_callback=self._on_open, on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_closed, custom_ioloop=self._ioloop)

    def _on_open(self, conn) -> None:
        if conn is not self._conn:
            return
        if self._attempt:
            logger.warning("reconnected to broker %s", redact_url(self.url))
        self._attempt = 0
        self._declared = {self.dead_letter_queue}  # declared (bounded) on a channel of its own
        conn.channel(on_open_callback=self._declare_dead_letters)
        conn.channel(on_open_callback=self._on_pub_channel)
        conn.channel(on_open_callback=self._on_admin_channel)
        for consumer in list(self._consumers):
            self._start_consumer(consumer)

    def _on_pub_channel(self, channel) -> None:
        self._pub = channel
        self._next_tag = 0
        channel.add_on_close_callback(self._on_pub_closed)
        channel.add_on_return_callback(self._on_returned)
        channel.confirm_delivery(self._on_confirm)
        self._connected.set()
        self._first.set()
        unsent, self._unsent = self._unsent, []
        for batch in unsent:
            self._send(batch)

    def _declare_dead_letters(self, channel) -> None:
        """The dead-letter queue, bounded by length and age.  One declared earlier without those bounds cannot
        be changed by a client: say so (once per connection) and keep using it."""

        def closed(_ch, reason: BaseException) -> None:
            if isinstance(reason, ChannelClosedByBroker):
                logger.warning("dead-letter queue %s exists with other arguments and stays unbounded (%s): delete "
                               "it, or bound it with a broker policy (max-length, message-ttl)", self.dead_letter_queue,
                               reason)

        channel.add_on_close_callback(closed)
        channel.queue_declare(self.dead_letter_queue, durable=True, arguments=self._queue_args(self.dead_letter_queue),
                              callback=lambda _f: channel.close())

    def _on_open_error(self, conn, err: BaseException) -> None:
        if not self._first.is_set():
            self._first_error = err
            self._first.set()
            return
        self._schedule_reconnect(err)

    def _on_closed(self, conn, reason: BaseException) -> None:
        self._connected.clear()
        self._pub = None
        self._admin = None
        for consumer in self._consumers:
            consumer.channel = None
            consumer.unsettled = 0
            consumer.state = RECOVERING
        self._requeue_pending()
        if self._closing or isinstance(reason, ConnectionClosedByClient):
            self._fail_all(BrokerError(f"the bus to {redact_url(self.url)} was closed"))
            if self._closing:
                self._ioloop.stop()
            return
        self._schedule_reconnect(reason)

    def _schedule_reconnect(self, err: BaseException) -> None:
        self._attempt += 1
        delay = _reconnect_delay(self._attempt)
        logger.warning("lost broker %s (%s); reconnecting in %.1fs (attempt %d)",
                       redact_url(self.url), _describe(err), delay, self._attempt)
        self._ioloop.call_later(delay, self._connect)

    # --- publishing (I/O thread) -------------------------------------------------------------
    def _queue_args(self, name: str) -> dict[str, Any]:
        if name == self.dead_letter_queue:
            return {"x-max-length": self.settings.dlq_max_length, "x-overflow": "drop-head",
                    "x-message-ttl": int(self.settings.dlq_ttl * 1000)}
        args: dict[str, Any] = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.dead_letter_queue}
        if name.startswith(self.prefix + JOBS_PREFIX) and self.quorum_jobs:
            args["x-queue-type"] = "quorum"
        elif name.startswith((self.prefix + RESULTS_PREFIX, self.prefix + BLOBS_PREFIX)):
            args["x-expires"] = RESULTS_QUEUE_EXPIRES_MS  # a crashed driver's results queue goes away
        return args

    def _declare_queue(self, channel, name: str, callback=None) -> None:
        channel.queue_declare(name, durable=True, arguments=self._queue_args(name), callback=callback)

    def _send(self, batch: _Batch) -> None:
        channel = self._pub
        if channel is None or not channel.is_open:
            self._unsent.append(batch)
            return
        batch.remaining = len(batch.bodies)
        if not batch.bodies:
            batch.future.set_result(None)
            return
        if batch.routing_key not in self._declared and batch.exchange == "":
            self._declare_queue(channel, batch.routing_key)
            self._declared.add(batch.routing_key)
        if batch.exchange and batch.exchange not in self._declared:
            channel.exchange_declare(batch.exchange, exchange_type="fanout", durable=True)
            self._declared.add(batch.exchange)
        props = pika.BasicProperties(delivery_mode=2 if batch.persistent else 1, headers=batch.headers)
        for body in batch.bodies:
            # a message for a queue is mandatory: if the queue was deleted meanwhile, the broker returns it
            channel.basic_publish(batch.exchange, batch.routing_key, body, props, mandatory=not batch.exchange)
            self._next_tag += 1
            self._pending[self._next_tag] = batch

    def _on_returned(self, channel, method, props, body: bytes) -> None:
        """(I/O thread) The broker returned a message: its queue no longer exists (deleted by someone).  Declare
        the queue again and send the message again; its batch completes with the new copy's confirm (the
        broker still acks the returned one, which counts as the copy's place)."""
        if method.exchange or channel is not self._pub:
            return
        batch = next((b for b in self._pending.values() if b.routing_key == method.routing_key and body in b.bodies),
                     None)
        if batch is None or batch.future.done():
            return
        logger.warning("broker %s returned a message for %s (queue deleted?); declaring it and sending again",
                       redact_url(self.url), method.routing_key)
        self._declared.discard(method.routing_key)
        again = _Batch("", method.routing_key, [body], batch.persistent, headers=props.headers)
        batch.remaining += 1

        def resent(f: Future) -> None:
            if batch.future.done():
                return
            if f.exception() is not None:
                batch.future.set_exception(f.exception())
                return
            batch.remaining -= 1
            if batch.remaining <= 0:
                batch.future.set_result(None)

        again.future.add_done_callback(resent)
        self._send(again)

    def _on_confirm(self, frame) -> None:
        method = frame.method
        nack = isinstance(method, pika.spec.Basic.Nack)
        if method.multiple:
            tags = list(itertools.takewhile(lambda t: t <= method.delivery_tag, self._pending))
        else:
            tags = [method.delivery_tag] if method.delivery_tag in self._pending else []
        for tag in tags:
            batch = self._pending.pop(tag)
            if batch.future.done():
                continue
            if nack:
                batch.future.set_exception(BrokerError(
                    f"broker {redact_url(self.url)} refused a message for {batch.routing_key or batch.exchange}"))
                continue
            batch.remaining -= 1
            if batch.remaining <= 0:
                batch.future.set_result(None)

    def _on_pub_closed(self, channel, reason: BaseException) -> None:
        if channel is not self._pub:
            return
        self._pub = None
        if isinstance(reason, ChannelClosedByBroker):
            # a broker-side error (e.g. a queue declared with other arguments): fail, do not resend
            self._fail_pending(BrokerError(f"broker {redact_url(self.url)} closed the publish channel: {reason}"))
            if self._conn is not None and self._conn.is_open:
                self._conn.channel(on_open_callback=self._on_pub_channel)

    def _requeue_pending(self) -> None:
        """Unconfirmed batches go out again on the next connection (at-least-once)."""
        seen: list[_Batch] = []
        for batch in self._pending.values():
            if batch not in seen and not batch.future.done():
                seen.append(batch)
        self._pending.clear()
        self._unsent = seen + self._unsent

    def _fail_pending(self, err: BaseException) -> None:
        for batch in list(self._pending.values()):
            if not batch.future.done():
                batch.future.set_exception(err)
        self._pending.clear()

    def _fail_all(self, err: BaseException) -> None:
        self._fail_pending(err)
        for batch in self._unsent:
            if not batch.future.done():
                batch.future.set_exception(err)
        self._unsent = []

    def _publish(self, batch: _Batch) -> None:
        self._check_open()
        self._call_soon(lambda: self._send(batch))
        try:
            batch.future.result(CONFIRM_TIMEOUT)
        except FutureTimeout:
            raise BrokerError(f"broker {redact_url(self.url)} did not confirm {len(batch.bodies)} message(s) for "
                              f"{batch.routing_key or batch.exchange} within {CONFIRM_TIMEOUT:.0f}s") from None

    # --- consuming (I/O thread) --------------------------------------------------------------
    def _start_consumer(self, consumer: _Consumer) -> None:
        if self._conn is None or not self._conn.is_open or not consumer.active:
            return
        self._conn.channel(on_open_callback=lambda ch: self._on_consumer_channel(consumer, ch))

    def _on_consumer_channel(self, consumer: _Consumer, channel) -> None:
        if not consumer.active:
            channel.close()
            return
        consumer.channel = channel
        consumer.unsettled = 0
        channel.add_on_close_callback(lambda ch, reason: self._on_consumer_closed(consumer, ch, reason))
        channel.add_on_cancel_callback(lambda frame: self._on_consumer_cancelled(consumer, channel))

        def on_message(ch, method, props, body: bytes) -> None:
            self._on_message(consumer, ch, method, props, body)

        consumer.on_message = on_message
        self._consume(consumer, channel)

    def _consume(self, consumer: _Consumer, channel) -> None:
        """(I/O thread) Declare what the consumer reads (its queue, or a topic's exchange and a private queue
        bound to it) and consume it."""
        if consumer.topic:
            channel.exchange_declare(consumer.name, exchange_type="fanout", durable=True)

            def declared(frame) -> None:
                q = frame.method.queue
                channel.queue_bind(q, consumer.name)
                channel.basic_consume(q, consumer.on_message, auto_ack=True,
                                      callback=lambda _f: self._consuming(consumer))

            channel.queue_declare("", exclusive=True, auto_delete=True, callback=declared)
            return
        if consumer.bind:
            self._declare_backlog(channel, consumer)
        else:
            self._declare_queue(channel, consumer.name)
        channel.basic_qos(prefetch_count=max(0, consumer.prefetch))
        channel.basic_consume(consumer.name, consumer.on_message, callback=lambda _f: self._consuming(consumer))

    def _consuming(self, consumer: _Consumer) -> None:
        if consumer.state == RECOVERING and consumer.started.is_set():
            logger.warning("consuming %s again", consumer.name)
        consumer.state = CONSUMING
        consumer.retries = 0
        consumer.error = None
        consumer.started.set()

    def _on_consumer_cancelled(self, consumer: _Consumer, channel) -> None:
        """(I/O thread) The broker cancelled the consumer (its queue was deleted, or an operator cancelled it):
        declare the queue again and consume it again on the same channel."""
        if not consumer.active or channel is not consumer.channel or not channel.is_open:
            return
        consumer.state = RECOVERING
        self._declared.discard(consumer.name)
        logger.warning("broker %s cancelled the consumer of %s (queue deleted?); declaring it and consuming again",
                       redact_url(self.url), consumer.name)
        self._consume(consumer, channel)

    def _on_consumer_closed(self, consumer: _Consumer, channel, reason: BaseException) -> None:
        """(I/O thread) A consumer's channel closed: the broker refused something (first start: the caller gets
        the error) or ended the channel later (re-established with backoff, then given up as lost)."""
        if consumer.channel is channel:
            consumer.channel = None
        if not consumer.active or not isinstance(reason, ChannelClosedByBroker):
            return
        consumer.error = BrokerError(f"broker {redact_url(self.url)} closed the consumer of {consumer.name}: {reason}")
        if not consumer.started.is_set():
            consumer.give_up()
            consumer.started.set()
            return
        consumer.retries += 1
        if consumer.retries > CONSUMER_RETRIES:
            consumer.give_up()
            logger.error("giving up consuming %s after %d attempts: %s", consumer.name, CONSUMER_RETRIES,
                         consumer.error)
            return
        consumer.state = RECOVERING
        delay = _reconnect_delay(consumer.retries, CONSUMER_RETRY_WAIT)
        logger.warning("%s; consuming it again in %.1fs", consumer.error, delay)
        self._ioloop.call_later(delay, lambda: self._start_consumer(consumer))

    def _declare_backlog(self, channel, consumer: _Consumer) -> None:
        """A durable queue bound to a topic's exchange, bounded so an absent consumer cannot fill the broker."""
        channel.exchange_declare(consumer.bind, exchange_type="fanout", durable=True)
        channel.queue_declare(consumer.name, durable=True, arguments={
            "x-max-length": self.settings.event_backlog_max, "x-overflow": "drop-head",
            "x-message-ttl": int(self.settings.event_backlog_ttl * 1000)})
        channel.queue_bind(consumer.name, consumer.bind)

    def _on_message(self, consumer: _Consumer, channel, method, props, body: bytes) -> None:
        if consumer.policy is None:  # a topic: auto-acked
            self._dispatcher.put((consumer, AmqpDelivery(consumer, channel, method.delivery_tag, body, False, 1)))
            return
        headers = props.headers or {}
        count = headers.get("x-delivery-count")
        arrival = Arrival(body, broker_redelivered=bool(method.redelivered), lost=int(headers.get(LOST_HEADER, 0) or 0),
                          requeued=bool(headers.get(REQUEUED)), broker_count=None if count is None else int(count))
        decision = consumer.policy.on_arrival(arrival, consumer.active)
        if isinstance(decision, PutBack):
            self._put_back(channel, method.delivery_tag, consumer.name, decision.copies)
        elif isinstance(decision, GiveBack):
            channel.basic_reject(method.delivery_tag, requeue=True)
        else:
            consumer.unsettled += 1
            self._dispatcher.put((consumer, AmqpDelivery(consumer, channel, method.delivery_tag, body,
                                                         decision.redelivered, decision.count)))

    def _put_back(self, channel, tag: int, queue: str, copies: tuple[tuple[bytes, int], ...]) -> None:
        """(I/O thread) Publish the copies (each with its ``iworkflow-lost``), then ack the original on its channel.
        If a copy is refused or the channel closes first, the broker still holds the original: at least once."""
        left = [len(copies)]
        failed = [False]

        def copied(f: Future) -> None:
            failed[0] = failed[0] or f.exception() is not None
            left[0] -= 1
            if left[0] == 0 and not failed[0] and channel.is_open:
                channel.basic_ack(tag)

        for body, lost in copies:
            batch = _Batch("", queue, [body], persistent=True, headers={LOST_HEADER: lost, REQUEUED: 1})
            batch.future.add_done_callback(copied)
            self._send(batch)

    def _reconsume(self, consumer: _Consumer) -> None:
        channel = consumer.channel
        if channel is None or not channel.is_open or not consumer.active or not channel.consumer_tags:
            return  # a consumer (re)started later uses consumer.prefetch anyway
        for tag in list(channel.consumer_tags):
            channel.basic_cancel(tag)
        channel.basic_qos(prefetch_count=max(0, consumer.prefetch))
        channel.basic_consume(consumer.name, consumer.on_message)

    def _stop_consumer(self, consumer: _Consumer) -> None:
        if consumer in self._consumers:
            self._consumers.remove(consumer)
        channel = consumer.channel
        if channel is None or not channel.is_open:
            return
        if consumer.topic or consumer.unsettled <= 0:
            channel.close()
        else:
            for tag in list(channel.consumer_tags):
                channel.basic_cancel(tag)

    # --- the Bus interface ---------------------------------------------------------------------
    def publish(self, queue: str, body: bytes) -> None:
        self._publish(_Batch("", self.prefix + queue, [bytes(body)], persistent=True))

    def publish_many(self, queue: str, bodies: list[bytes]) -> None:
        self._publish(_Batch("", self.prefix + queue, [bytes(b) for b in bodies], persistent=True))

    def broadcast(self, topic: str, body: bytes) -> None:
        self._publish(_Batch(self.prefix + topic, "", [bytes(body)], persistent=False))

    def publish_many_async(self, queue: str, bodies: list[bytes]) -> Future:
        """Pipelined persistent publish; the Future completes on the broker's last confirm of the batch."""
        self._check_open()
        batch = _Batch("", self.prefix + queue, [bytes(b) for b in bodies], persistent=True)
        self._call_soon(lambda: self._send(batch))
        return batch.future

    def broadcast_async(self, topic: str, body: bytes,
                        on_sent: Callable[[BaseException | None], None] | None = None) -> None:
        """Pipelined broadcast: unconfirmed messages are resent after a reconnect, as for ``broadcast``."""
        self._check_open()
        batch = _Batch(self.prefix + topic, "", [bytes(body)], persistent=False)
        batch.future.add_done_callback(lambda f: report_sent(f, batch.exchange, on_sent))
        self._call_soon(lambda: self._send(batch))

    def consume(self, queue: str, handler: Handler, *, prefetch: int = 1, wait: bool = True) -> Subscription:
        counts = not self.quorum_jobs and queue.startswith(JOBS_PREFIX)
        policy = DeliveryPolicy(counts, self.settings.secret_bytes if queue.startswith(JOBS_PREFIX) else None)
        return self._add_consumer(_Consumer(self, self.prefix + queue, handler, prefetch, topic=False,
                                            policy=policy), wait)

    def subscribe(self, topic: str, handler: Handler) -> Subscription:
        return self._add_consumer(_Consumer(self, self.prefix + topic, handler, 0, topic=True))

    def subscribe_durable(self, topic: str, name: str, handler: Handler, *, prefetch: int = 500) -> Subscription:
        """Queue ``<p><topic>.<name>``, bound to the topic's fanout exchange (see ``_declare_backlog``)."""
        return self._add_consumer(_Consumer(self, f"{self.prefix}{topic}.{name}", handler, prefetch, topic=False,
                                            bind=self.prefix + topic, policy=DeliveryPolicy(False)))

    def _add_consumer(self, consumer: _Consumer, wait: bool = True) -> _Consumer:
        self._check_open()

        def add() -> None:
            self._consumers.append(consumer)
            self._start_consumer(consumer)

        self._call_soon(add)
        if not wait:
            return consumer
        if self._connected.is_set() and not consumer.started.wait(CONSUME_TIMEOUT):
            logger.warning("consumer of %s not confirmed by the broker within %.0fs; it starts when the broker "
                           "answers", consumer.name, CONSUME_TIMEOUT)
        if consumer.error is not None and consumer.state == LOST:
            consumer.cancel()
            raise consumer.error
        return consumer

    def delete_queue(self, queue: str) -> None:
        self._check_open()
        name = self.prefix + queue

        def delete() -> Future:
            done: Future = Future()
            if self._conn is None or not self._conn.is_open:
                done.set_exception(BrokerError(f"not connected to {redact_url(self.url)}"))
                return done

            def on_channel(ch) -> None:
                ch.add_on_close_callback(
                    lambda _c, reason: done.done() or done.set_exception(BrokerError(f"delete {name}: {reason}")))
                ch.queue_delete(name, callback=lambda _f: (done.set_result(None), ch.close()))

            self._conn.channel(on_open_callback=on_channel)
            self._declared.discard(name)
            return done

        self._on_io(delete)

    def forget_queue(self, queue: str) -> None:
        """Delete a finished work's queue without waiting: one pipelined frame on a long-lived channel."""
        if self._closing:
            return
        name = self.prefix + queue

        def delete() -> None:
            self._declared.discard(name)
            admin = self._admin
            if admin is not None and admin.is_open:
                admin.queue_delete(name)
            elif self._conn is not None and self._conn.is_open:
                self._conn.channel(on_open_callback=lambda ch: (self._on_admin_channel(ch), ch.queue_delete(name)))

        self._call_soon(delete)

    def _on_admin_channel(self, channel) -> None:
        self._admin = channel

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True

        def stop() -> None:
            for consumer in self._consumers:
                consumer.active = False
            self._consumers.clear()
            if self._conn is not None and (self._conn.is_open or self._conn.is_opening):
                self._conn.close()
            else:
                self._fail_all(BrokerError(f"the bus to {redact_url(self.url)} was closed"))
                self._ioloop.stop()

        self._call_soon(stop)
        self._shutdown_threads()

    def _shutdown_threads(self) -> None:
        self._closing = True
        if threading.current_thread() is not self._io:
            self._io.join(timeout=5)
            if self._io.is_alive():
                self._call_soon(self._ioloop.stop)
                self._io.join(timeout=2)
        self._dispatcher.stop()

    def __repr__(self) -> str:
        return f"<AmqpBus {redact_url(self.url)} prefix={self.prefix!r}>"


def _describe(err: BaseException) -> str:
    """The innermost cause of a pika connection error (refused, unknown host, bad login...)."""
    seen = 0
    while seen < 5:
        seen += 1
        inner = getattr(err, "exceptions", None) or (err.args if isinstance(err, AMQPConnectionError) else ())
        inner = [e for e in inner if isinstance(e, BaseException)]
        if not inner:
            break
        err = getattr(inner[-1], "exception", None) or inner[-1]
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


__all__ = ["AmqpBus", "AmqpDelivery"]
