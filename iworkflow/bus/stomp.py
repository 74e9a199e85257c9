"""The ActiveMQ bus on stomp.py (STOMP 1.1).

One STOMP connection per bus: sends are serialised by stomp.py's socket lock, every SEND carries a
receipt (a batch is pipelined and waited for once), handlers run on a dispatcher thread, and a
supervisor thread reconnects with backoff when the broker drops the connection.

STOMP has no requeue or dead-letter verb that behaves the same on every broker (ActiveMQ's NACK
means "poison"), so putting a message back is a transaction: SEND the copies (back to the queue, or to
``<p>dlq``) and ACK the original.  Which copies is the shared policy of ``delivery.py``: ActiveMQ only
says ``redelivered:true`` when it hands out again a message whose consumer vanished, and the copy then
carries ``iworkflow-lost`` incremented (``delivery_count``); a lost bundle goes back one job per message.
Dead letters expire after ``dlq_ttl`` (ActiveMQ's ``expires`` header: when, in ms since the epoch).  STOMP cannot delete a queue: ``delete_queue``
drains it, and ActiveMQ garbage-collects the empty destination (see .ci/activemq.sh).
"""
from __future__ import annotations

import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import stomp
from stomp.exception import StompException
from tenacity import Retrying, retry_if_exception_type, stop_never, wait_exponential, wait_random

from ..config import Settings, redact_url
from ..errors import BrokerError, ConfigurationError
from .base import CANCELLED, CONSUMING, RECOVERING, Bus, Delivery, Handler, Subscription, report_sent
from .delivery import LOST, REQUEUED, Arrival, DeliveryPolicy, Dispatcher, HandOver, PutBack

logger = logging.getLogger(__name__)


class _HidePasscode(logging.Filter):
    """stomp.py logs whole frames at DEBUG, the CONNECT frame's passcode included: redact it."""

    _PASSCODE = re.compile(r"(passcode['\"]?\s*[:=]\s*['\"]?)[^\\'\"\s,}]+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "passcode" in message:
            record.msg, record.args = self._PASSCODE.sub(r"\1***", message), ()
        return True


logging.getLogger("stomp.py").addFilter(_HidePasscode())

CONNECT_TIMEOUT = 10.0
RECEIPT_TIMEOUT = 60.0
HEARTBEATS = (10000, 10000)
UNBOUNDED_PREFETCH = 65535
DRAIN_TIMEOUT = 5.0
#: ActiveMQ's STOMP header for a message's JMSExpiration (ms since the epoch; "expiration" is not read)
EXPIRES = "expires"


class StompDelivery(Delivery):
    """A message from an ActiveMQ queue, acked on the connection (generation) that received it."""

    __slots__ = (
        "_consumer",
        "_gen",
        "_lost",
        "_message_id",
        "_settled",
        "body",
        "delivery_count",
        "destination",
        "redelivered",
    )

    def __init__(self, consumer: _Consumer, gen: int, message_id: str, body: bytes, redelivered: bool,
                 lost: int):
        self.body = body
        self.destination = consumer.name
        self.redelivered = redelivered
        self.delivery_count = lost + 1
        self._consumer = consumer
        self._gen = gen
        self._message_id = message_id
        self._lost = lost
        self._settled = consumer.topic

    def ack(self) -> None:
        if not self._settled:
            self._settled = True
            self._consumer.bus._ack(self)
            self._consumer.settled()

    def reject(self, requeue: bool = False) -> None:
        if not self._settled:
            self._settled = True
            bus = self._consumer.bus
            if requeue:
                decision = self._consumer.policy.on_requeue(self.body, self.delivery_count)
                assert isinstance(decision, PutBack)  # STOMP queues always count: never the broker's requeue
                bus._put_back(self, decision.copies)
            else:
                bus._move(self, [(bus._dest(bus.dead_letter_queue), self.body, bus._dead_letter_headers(self._lost))])
            self._consumer.settled()


@dataclass(eq=False)
class _Consumer(Subscription):
    """One consume() or subscribe(); re-subscribed on every new connection until cancelled."""

    bus: StompBus
    name: str
    destination: str
    handler: Handler
    prefetch: int
    topic: bool
    policy: DeliveryPolicy | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    unsettled: int = 0
    active: bool = True
    state: str = CONSUMING
    lock: threading.Lock = field(default_factory=threading.Lock)

    def cancel(self) -> None:
        """Stop handing out new messages; ones already handed to the handler may still be settled."""
        with self.lock:
            if not self.active:
                return
            self.active = False
            self.state = CANCELLED
            idle = self.unsettled <= 0
        if idle or self.topic:
            self.bus._unsubscribe(self)

    def settled(self) -> None:
        with self.lock:
            self.unsettled -= 1
            done = not self.active and self.unsettled <= 0
        if done:
            self.bus._unsubscribe(self)


class _Listener(stomp.ConnectionListener):
    """Routes one connection's frames to the bus, tagged with the connection's generation."""

    def __init__(self, bus: StompBus, gen: int):
        self.bus = bus
        self.gen = gen

    def on_message(self, frame) -> None:
        self.bus._dispatcher.put((self.gen, frame))

    def on_receipt(self, frame) -> None:
        self.bus._receipt(frame.headers.get("receipt-id", ""), None)

    def on_error(self, frame) -> None:
        message = frame.headers.get("message", "")
        rid = frame.headers.get("receipt-id")
        logger.error("broker %s sent an error: %s", redact_url(self.bus.url), message)
        if rid:
            self.bus._receipt(rid, BrokerError(f"broker {redact_url(self.bus.url)} refused a frame: {message}"))

    def on_disconnected(self) -> None:
        self.bus._on_disconnected(self.gen)


@dataclass
class _Pending:
    destination: str
    body: bytes
    headers: dict[str, str]
    future: Future = field(default_factory=Future)


class StompBus(Bus):
    """Durable queues, persistent receipted sends, topics; reconnects with backoff."""

    def __init__(self, url: str, settings: Settings | None = None):
        from ..config import load_settings

        self.url = url
        self.settings = settings or load_settings()
        self.prefix = self.settings.destination_prefix
        self.dead_letter_queue = "dlq"
        parts = urlsplit(url)
        try:
            self._address = (parts.hostname or "127.0.0.1", parts.port or 61613)
        except ValueError as err:
            raise ConfigurationError(f"broker URL {redact_url(url)!r} is not a valid STOMP URL: {err}") from None
        self._login = unquote(parts.username or "")
        self._passcode = unquote(parts.password or "")
        self._ssl = parts.scheme.lower() == "stomp+ssl"
        self._lock = threading.RLock()
        self._conn: stomp.Connection11 | None = None
        self._gen = 0
        self._connected = threading.Event()
        self._closing = False
        self._consumers: dict[str, _Consumer] = {}
        self._pending: dict[str, _Pending] = {}
        self._dispatcher = Dispatcher("iworkflow-stomp-dispatch", prepare=self._take)
        self._lost = threading.Event()
        try:
            self._open()
        except Exception as err:  # noqa: BLE001 - any failure to connect is reported with the URL
            self._dispatcher.stop()
            raise BrokerError(f"cannot connect to broker {redact_url(url)}: {self._cause(err)}") from None
        self._supervisor = threading.Thread(target=self._supervise, name="iworkflow-stomp-reconnect", daemon=True)
        self._supervisor.start()

    def _cause(self, err: BaseException) -> str:
        """stomp.py's ConnectFailedException carries no reason: probe the socket to name the cause."""
        try:
            socket.create_connection(self._address, timeout=5).close()
        except OSError as os_err:
            return f"{self._address[0]}:{self._address[1]}: {os_err.strerror or os_err}"
        return f"{_describe(err)} (the port answers: check the login, the protocol and the broker log)"

    def _dest(self, name: str, topic: bool = False) -> str:
        if topic:  # a virtual topic: durable subscribers read queues Consumer.<name>.VirtualTopic.<topic>
            return f"/topic/VirtualTopic.{self.prefix}{name}"
        return f"/queue/{self.prefix}{name}"

    # --- connection lifecycle ------------------------------------------------------------------
    def _open(self) -> None:
        conn = stomp.Connection11([self._address], auto_decode=False, reconnect_attempts_max=1,
                                  heartbeats=HEARTBEATS, timeout=CONNECT_TIMEOUT)
        if self._ssl:
            conn.set_ssl(for_hosts=[self._address])
        with self._lock:
            gen = self._gen + 1
        conn.set_listener("iworkflow", _Listener(self, gen))
        conn.connect(self._login, self._passcode, wait=True, headers={"host": self._address[0]})
        sock = getattr(conn.transport, "socket", None)
        if sock is not None:  # small frames, request/response: Nagle would add 40 ms stalls
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._gen = gen
            self._conn = conn
            self._connected.set()
            consumers = list(self._consumers.values())
            pending = list(self._pending.items())
        for consumer in consumers:
            self._send_subscribe(conn, consumer)
            if consumer.state == RECOVERING:
                consumer.state = CONSUMING
                logger.warning("consuming %s again", consumer.destination)
        for rid, item in pending:  # unconfirmed sends go out again (at-least-once)
            if item.destination:
                conn.send(item.destination, item.body, headers={**item.headers, "receipt": rid})

    def _on_disconnected(self, gen: int) -> None:
        with self._lock:
            if gen != self._gen or self._closing:
                return
            self._connected.clear()
            self._conn = None
            for consumer in self._consumers.values():
                with consumer.lock:
                    consumer.unsettled = 0
                    consumer.state = RECOVERING
        logger.warning("lost broker %s; reconnecting", redact_url(self.url))
        self._lost.set()

    def _supervise(self) -> None:
        while True:
            self._lost.wait()
            if self._closing:
                return
            self._lost.clear()
            retrying = Retrying(retry=retry_if_exception_type(Exception), stop=stop_never,
                                wait=wait_exponential(multiplier=0.2, max=10.0) + wait_random(0, 0.5), reraise=True,
                                before_sleep=self._log_retry)
            try:
                for attempt in retrying:
                    with attempt:
                        if self._closing:
                            return
                        self._open()
                logger.warning("reconnected to broker %s", redact_url(self.url))
            except Exception:  # pragma: no cover - stop_never only ends when the bus closes
                logger.exception("giving up on broker %s", redact_url(self.url))

    def _log_retry(self, state) -> None:
        logger.warning("broker %s still unreachable (%s); retrying (attempt %d)", redact_url(self.url),
                       _describe(state.outcome.exception()), state.attempt_number)

    def _connection(self) -> tuple[Any, int]:
        if self._closing:
            raise BrokerError(f"the bus to {redact_url(self.url)} is closed")
        if not self._connected.wait(RECEIPT_TIMEOUT):
            raise BrokerError(f"broker {redact_url(self.url)} unreachable for {RECEIPT_TIMEOUT:.0f}s")
        with self._lock:
            if self._conn is None:
                raise BrokerError(f"broker {redact_url(self.url)} connection lost")
            return self._conn, self._gen

    # --- sending with receipts -----------------------------------------------------------------
    def _receipt(self, rid: str, error: BaseException | None) -> None:
        with self._lock:
            item = self._pending.pop(rid, None)
        if item is None or item.future.done():
            return
        if error is None:
            item.future.set_result(None)
        else:
            item.future.set_exception(error)

    def _send_all(self, destination: str, bodies: list[bytes], headers: dict[str, str], wait: bool = True) -> Future:
        """Send a batch; ActiveMQ handles a connection's frames in order, so only the last carries a receipt.

        With ``wait=False`` the returned Future completes on that receipt; until then the batch is resent
        after a reconnect, as a waited-for one is.
        """
        items = [(uuid.uuid4().hex, _Pending(destination, bytes(b), headers)) for b in bodies]
        with self._lock:
            self._pending.update(items)
        if not wait:
            items[-1][1].future.add_done_callback(lambda _f: self._forget(items))
        try:
            conn, _gen = self._connection()
            last = len(items) - 1
            for i, (rid, item) in enumerate(items):
                conn.send(destination, item.body, headers={**headers, "receipt": rid} if i == last else headers)
        except StompException as err:
            logger.warning("send to %s interrupted (%s); it is resent after reconnecting", destination, err)
        except BrokerError:
            self._forget(items)
            raise
        if not wait:
            return items[-1][1].future
        try:
            items[-1][1].future.result(RECEIPT_TIMEOUT)
        except FutureTimeout:
            raise BrokerError(f"broker {redact_url(self.url)} did not acknowledge {len(items)} message(s) "
                              f"to {destination} within {RECEIPT_TIMEOUT:.0f}s") from None
        finally:
            self._forget(items)
        return items[-1][1].future

    def _forget(self, items: list[tuple[str, _Pending]]) -> None:
        with self._lock:
            for rid, _ in items:
                self._pending.pop(rid, None)

    def _send_frame(self, frame: str, **kwargs: Any) -> None:
        """A frame whose receipt we wait for (subscribe, commit): resent by nobody if the connection drops."""
        conn, _gen = self._connection()
        rid = uuid.uuid4().hex
        item = _Pending("", b"", {})
        with self._lock:
            self._pending[rid] = item
        headers = dict(kwargs.pop("headers", {}) or {})
        headers["receipt"] = rid
        getattr(conn, frame)(headers=headers, **kwargs)
        try:
            item.future.result(RECEIPT_TIMEOUT)
        except FutureTimeout:
            with self._lock:
                self._pending.pop(rid, None)
            raise BrokerError(f"broker {redact_url(self.url)} did not answer {frame} in {RECEIPT_TIMEOUT:.0f}s") \
                from None

    # --- consuming -----------------------------------------------------------------------------
    @staticmethod
    def _subscribe_args(consumer: _Consumer) -> dict[str, Any]:
        headers = {}
        if not consumer.topic:
            headers["activemq.prefetchSize"] = str(consumer.prefetch if consumer.prefetch > 0 else UNBOUNDED_PREFETCH)
        return dict(destination=consumer.destination, id=consumer.id, headers=headers,
                    ack="auto" if consumer.topic else "client-individual")

    def _send_subscribe(self, conn, consumer: _Consumer) -> None:
        conn.subscribe(**self._subscribe_args(consumer))

    def _unsubscribe(self, consumer: _Consumer) -> None:
        with self._lock:
            known = self._consumers.pop(consumer.id, None) is not None
            conn = self._conn
        if conn is not None and known:
            try:
                conn.unsubscribe(id=consumer.id)
            except StompException as err:
                logger.debug("unsubscribe %s: %s", consumer.destination, err)

    def _ack(self, delivery: StompDelivery) -> None:
        with self._lock:
            conn = self._conn if delivery._gen == self._gen else None
        if conn is None:
            return  # that connection is gone: the broker hands the message out again
        try:
            conn.ack(delivery._message_id, delivery._consumer.id)
        except StompException as err:
            logger.warning("ack on %s lost (%s); the broker will redeliver", delivery.destination, err)

    def _dead_letter_headers(self, lost: int) -> dict[str, str]:
        expires = str(int((time.time() + self.settings.dlq_ttl) * 1000))  # the dead letters are bounded by age
        return {LOST: str(lost), REQUEUED: "true", EXPIRES: expires}

    def _put_back(self, delivery: StompDelivery, copies: tuple[tuple[bytes, int], ...]) -> None:
        target = delivery._consumer.destination
        self._move(delivery, [(target, body, {LOST: str(lost), REQUEUED: "true"}) for body, lost in copies])

    def _move(self, delivery: StompDelivery, copies: list[tuple[str, bytes, dict[str, str]]]) -> None:
        """Atomically send the copies and ack the original (requeue, dead-letter, recount, split)."""
        with self._lock:
            conn = self._conn if delivery._gen == self._gen else None
        if conn is None:
            return
        tx = uuid.uuid4().hex
        try:
            conn.begin(transaction=tx)
            for target, body, headers in copies:
                conn.send(target, body, headers={"persistent": "true", "transaction": tx, **headers})
            conn.ack(delivery._message_id, delivery._consumer.id, transaction=tx)
            self._send_frame("commit", transaction=tx)
        except (StompException, BrokerError) as err:
            logger.warning("putting back a message from %s failed (%s); the broker will redeliver it",
                           delivery.destination, err)

    def _take(self, item: tuple[int, Any]) -> tuple[_Consumer, StompDelivery] | None:
        """(dispatcher thread) A frame from the broker: hand it over, or put it back as the policy says."""
        gen, frame = item
        headers = frame.headers
        with self._lock:
            consumer = self._consumers.get(headers.get("subscription", ""))
        if consumer is None:
            return None  # unsubscribed: the broker takes unacked messages back
        body = frame.body if isinstance(frame.body, bytes) else str(frame.body).encode()
        lost = int(headers.get(LOST, 0) or 0)
        if consumer.policy is None:  # a topic: auto-acked
            return consumer, StompDelivery(consumer, gen, headers.get("message-id", ""), body, False, lost)
        arrival = Arrival(body, broker_redelivered=headers.get("redelivered") == "true", lost=lost,
                          requeued=headers.get(REQUEUED) == "true")
        with consumer.lock:
            consumer.unsettled += 1
            active = consumer.active
        decision = consumer.policy.on_arrival(arrival, active)
        delivery = StompDelivery(consumer, gen, headers.get("message-id", ""), body,
                                 isinstance(decision, HandOver) and decision.redelivered, lost)
        if isinstance(decision, PutBack):
            delivery._settled = True
            self._put_back(delivery, decision.copies)
            consumer.settled()
            return None
        return consumer, delivery

    # --- the Bus interface ---------------------------------------------------------------------
    def publish(self, queue: str, body: bytes) -> None:
        self._send_all(self._dest(queue), [body], {"persistent": "true"})

    def publish_many(self, queue: str, bodies: list[bytes]) -> None:
        if bodies:
            self._send_all(self._dest(queue), list(bodies), {"persistent": "true"})

    def publish_many_async(self, queue: str, bodies: list[bytes]) -> Future:
        """Pipelined persistent send; the Future completes on the receipt of the batch's last frame."""
        if not bodies:
            done: Future = Future()
            done.set_result(None)
            return done
        return self._send_all(self._dest(queue), list(bodies), {"persistent": "true"}, wait=False)

    def broadcast(self, topic: str, body: bytes) -> None:
        self._send_all(self._dest(topic, topic=True), [body], self._broadcast_headers())

    def broadcast_async(self, topic: str, body: bytes,
                        on_sent: Callable[[BaseException | None], None] | None = None) -> None:
        """Pipelined broadcast: sent now, its receipt awaited by nobody but ``on_sent``."""
        future = self._send_all(self._dest(topic, topic=True), [body], self._broadcast_headers(), wait=False)
        future.add_done_callback(lambda f: report_sent(f, topic, on_sent))

    def _broadcast_headers(self) -> dict[str, str]:
        expires = str(int((time.time() + self.settings.event_backlog_ttl) * 1000))  # bounds durable backlogs
        return {EXPIRES: expires}

    def consume(self, queue: str, handler: Handler, *, prefetch: int = 1, wait: bool = True) -> Subscription:
        return self._add(_Consumer(self, queue, self._dest(queue), handler, prefetch, topic=False,
                                   policy=self._policy(queue)), wait)

    def _policy(self, queue: str) -> DeliveryPolicy:
        """Every STOMP queue counts lost deliveries; on job queues a lost bundle is split into its jobs."""
        return DeliveryPolicy(True, self.settings.secret_bytes if queue.startswith("jobs.") else None)

    def subscribe(self, topic: str, handler: Handler) -> Subscription:
        return self._add(_Consumer(self, topic, self._dest(topic, topic=True), handler, 0, topic=True))

    def subscribe_durable(self, topic: str, name: str, handler: Handler, *, prefetch: int = 500) -> Subscription:
        """ActiveMQ's virtual topic: queue ``Consumer.<name>.VirtualTopic.<p><topic>`` keeps a copy of every
        broadcast from its first subscription on; the backlog is bounded by the ``expires`` of broadcasts."""
        if not name or "." in name:
            raise ValueError(f"durable subscription name must be one word without dots, got {name!r}")
        destination = f"/queue/Consumer.{name}.VirtualTopic.{self.prefix}{topic}"
        return self._add(_Consumer(self, f"{topic}.{name}", destination, handler, prefetch, topic=False,
                                   policy=self._policy(topic)))

    def _add(self, consumer: _Consumer, wait: bool = True) -> _Consumer:
        with self._lock:
            self._consumers[consumer.id] = consumer
        try:
            if not wait:
                conn, _gen = self._connection()
                try:
                    self._send_subscribe(conn, consumer)
                except StompException as err:
                    logger.warning("subscribe to %s interrupted (%s); it is resent after reconnecting",
                                   consumer.destination, err)
                return consumer
            self._send_frame("subscribe", **self._subscribe_args(consumer))
        except BrokerError:
            with self._lock:
                self._consumers.pop(consumer.id, None)
            raise
        return consumer

    def delete_queue(self, queue: str) -> None:
        """Drop what the queue holds: cancel our consumers of it, then take and ack every message up to a
        sentinel sent behind them (FIFO), so no idle wait is needed to know the queue is empty."""
        destination = self._dest(queue)
        with self._lock:
            ours = [c for c in self._consumers.values() if c.destination == destination and not c.topic]
        for consumer in ours:
            consumer.cancel()
        sentinel = f"iworkflow-drain-{uuid.uuid4().hex}".encode()
        reached = threading.Event()

        def take(delivery: Delivery) -> None:
            delivery.ack()
            if delivery.body == sentinel:
                reached.set()

        self._send_all(destination, [sentinel], {"persistent": "false"})
        sub = self._add(_Consumer(self, queue, destination, take, UNBOUNDED_PREFETCH, topic=False,
                                  policy=DeliveryPolicy(True)))
        if not reached.wait(DRAIN_TIMEOUT):
            logger.warning("draining %s: sentinel not back within %.0fs (another consumer took it?)",
                           destination, DRAIN_TIMEOUT)
        sub.cancel()

    def close(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
            conn = self._conn
            self._conn = None
            self._connected.set()
            pending = list(self._pending.values())
            self._pending.clear()
        for item in pending:
            if not item.future.done():
                item.future.set_exception(BrokerError(f"the bus to {redact_url(self.url)} was closed"))
        if conn is not None:
            try:
                conn.disconnect()
            except StompException:
                pass
        self._lost.set()
        self._dispatcher.stop()
        if self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=5)

    def __repr__(self) -> str:
        return f"<StompBus {redact_url(self.url)} prefix={self.prefix!r}>"


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


__all__ = ["StompBus", "StompDelivery"]
