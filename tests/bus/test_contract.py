"""The Bus contract: every bus (memory, RabbitMQ, ActiveMQ) moves messages with the same semantics."""
from __future__ import annotations

import threading
import time

import pytest

from .conftest import ALL_BUSES, REAL_BROKERS, drop_connection

pytestmark = pytest.mark.timeout(60)
WAIT = 15.0


class Inbox:
    """Collects deliveries from a handler; optionally acks them on arrival."""

    def __init__(self, ack: bool = True):
        self.auto_ack = ack
        self.deliveries = []
        self.cond = threading.Condition()

    def __call__(self, delivery) -> None:
        with self.cond:
            self.deliveries.append(delivery)
            self.cond.notify_all()
        if self.auto_ack:
            delivery.ack()

    @property
    def bodies(self) -> list[bytes]:
        with self.cond:
            return [d.body for d in self.deliveries]

    def wait_for(self, n: int, timeout: float = WAIT) -> list[bytes]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.deliveries) < n and time.monotonic() < deadline:
                self.cond.wait(0.05)
        return self.bodies

    def stays_at(self, n: int, settle: float = 1.0) -> bool:
        """True if exactly n deliveries are here and no more arrive within ``settle`` seconds."""
        time.sleep(settle)
        return len(self.bodies) == n


buses = pytest.mark.parametrize("bus_factory", ALL_BUSES, indirect=True)
brokers = pytest.mark.parametrize("bus_factory", REAL_BROKERS, indirect=True)


@buses
def test_published_message_reaches_a_consumer(bus_factory):
    bus = bus_factory()
    inbox = Inbox()
    bus.consume("jobs.q", inbox)
    bus.publish("jobs.q", b"hello")
    assert inbox.wait_for(1) == [b"hello"]
    assert inbox.deliveries[0].destination.endswith("jobs.q")


@buses
def test_binary_bodies_arrive_byte_for_byte(bus_factory):
    bus = bus_factory()
    body = bytes(range(256)) * 4 + b"\x00\x00end"
    inbox = Inbox()
    bus.consume("jobs.bin", inbox)
    bus.publish("jobs.bin", body)
    assert inbox.wait_for(1) == [body]


@buses
def test_messages_published_before_any_consumer_are_buffered(bus_factory):
    publisher, consumer = bus_factory(), bus_factory()
    publisher.publish_many("jobs.early", [b"1", b"2", b"3"])
    time.sleep(0.2)
    inbox = Inbox()
    consumer.consume("jobs.early", inbox, prefetch=0)
    assert sorted(inbox.wait_for(3)) == [b"1", b"2", b"3"]


@buses
def test_publish_many_keeps_the_order_for_a_single_consumer(bus_factory):
    bus = bus_factory()
    bodies = [str(i).encode() for i in range(500)]
    bus.publish_many("results.order", bodies)
    inbox = Inbox()
    bus.consume("results.order", inbox, prefetch=0)
    assert inbox.wait_for(500) == bodies


@buses
def test_competing_consumers_share_a_queue_each_message_once(bus_factory):
    a_bus, b_bus, publisher = bus_factory(), bus_factory(), bus_factory()
    a, b = Inbox(), Inbox()
    a_bus.consume("jobs.shared", a, prefetch=1)
    b_bus.consume("jobs.shared", b, prefetch=1)
    bodies = [str(i).encode() for i in range(100)]
    publisher.publish_many("jobs.shared", bodies)
    deadline = time.monotonic() + WAIT
    while len(a.bodies) + len(b.bodies) < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    got = a.bodies + b.bodies
    assert sorted(got) == sorted(bodies), "every message exactly once"
    assert a.bodies and b.bodies, "both consumers took part"


@buses
def test_prefetch_bounds_the_unacked_messages_a_consumer_holds(bus_factory):
    bus = bus_factory()
    bus.publish_many("jobs.bounded", [str(i).encode() for i in range(10)])
    held = Inbox(ack=False)
    bus.consume("jobs.bounded", held, prefetch=3)
    held.wait_for(3)
    assert held.stays_at(3)
    held.deliveries[0].ack()
    held.wait_for(4)
    assert held.stays_at(4)


@buses
def test_prefetch_zero_means_unbounded(bus_factory):
    bus = bus_factory()
    bus.publish_many("results.unbounded", [str(i).encode() for i in range(50)])
    held = Inbox(ack=False)
    bus.consume("results.unbounded", held, prefetch=0)
    assert len(held.wait_for(50)) == 50


@brokers
def test_unacked_message_of_a_closed_consumer_goes_to_another(bus_factory):
    first, second = bus_factory(), bus_factory()
    first.publish("jobs.handover", b"job")
    held = Inbox(ack=False)
    first.consume("jobs.handover", held)
    held.wait_for(1)
    first.close()
    inbox = Inbox()
    second.consume("jobs.handover", inbox)
    assert inbox.wait_for(1) == [b"job"]
    assert inbox.deliveries[0].redelivered


@buses
def test_rejected_with_requeue_is_delivered_again_marked_redelivered(bus_factory):
    bus = bus_factory()
    seen = []

    def once_rejected(delivery):
        seen.append(delivery)
        if len(seen) == 1:
            delivery.reject(requeue=True)
        else:
            delivery.ack()

    bus.consume("jobs.retry", once_rejected)
    bus.publish("jobs.retry", b"again")
    deadline = time.monotonic() + WAIT
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [d.body for d in seen] == [b"again", b"again"]
    assert not seen[0].redelivered and seen[1].redelivered


@buses
def test_rejected_without_requeue_is_dead_lettered(bus_factory):
    bus = bus_factory()
    bus.consume("jobs.poison", lambda d: d.reject(requeue=False))
    dead = Inbox()
    bus.consume("dlq", dead)
    bus.publish("jobs.poison", b"tampered")
    assert dead.wait_for(1) == [b"tampered"]


@buses
def test_a_failing_handler_does_not_lose_the_message(bus_factory):
    bus = bus_factory()
    calls = []

    def flaky(delivery):
        calls.append(delivery.body)
        if len(calls) == 1:
            raise RuntimeError("handler bug")
        delivery.ack()

    bus.consume("jobs.flaky", flaky)
    bus.publish("jobs.flaky", b"m")
    deadline = time.monotonic() + WAIT
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert calls == [b"m", b"m"]


@buses
def test_cancelled_consumer_receives_nothing_more(bus_factory):
    bus = bus_factory()
    inbox = Inbox()
    sub = bus.consume("jobs.cancel", inbox)
    bus.publish("jobs.cancel", b"before")
    inbox.wait_for(1)
    sub.cancel()
    bus.publish("jobs.cancel", b"after")
    assert inbox.stays_at(1, settle=0.5)
    later = Inbox()
    bus.consume("jobs.cancel", later)
    assert later.wait_for(1) == [b"after"]


@buses
def test_broadcast_reaches_every_current_subscriber(bus_factory):
    a_bus, b_bus, sender = bus_factory(), bus_factory(), bus_factory()
    a, b = Inbox(), Inbox()
    a_bus.subscribe("events", a)
    b_bus.subscribe("events", b)
    sender.broadcast("events", b"e1")
    sender.broadcast("events", b"e2")
    assert a.wait_for(2) == [b"e1", b"e2"]
    assert b.wait_for(2) == [b"e1", b"e2"]


@buses
def test_broadcast_is_not_kept_for_later_subscribers(bus_factory):
    bus = bus_factory()
    bus.broadcast("events", b"nobody listens")
    late = Inbox()
    bus.subscribe("events", late)
    bus.broadcast("events", b"heard")
    assert late.wait_for(1) == [b"heard"]
    assert late.stays_at(1, settle=0.3)


@buses
def test_cancelled_subscription_stops_receiving_broadcasts(bus_factory):
    bus = bus_factory()
    inbox = Inbox()
    sub = bus.subscribe("control", inbox)
    bus.broadcast("control", b"one")
    inbox.wait_for(1)
    sub.cancel()
    bus.broadcast("control", b"two")
    assert inbox.stays_at(1, settle=0.5)


@buses
def test_delete_queue_drops_its_messages(bus_factory):
    bus = bus_factory()
    bus.publish_many("results.w1", [b"a", b"b", b"c"])
    time.sleep(0.2)
    bus.delete_queue("results.w1")
    bus.publish("results.w1", b"fresh")
    inbox = Inbox()
    bus.consume("results.w1", inbox, prefetch=0)
    assert inbox.wait_for(1) == [b"fresh"]
    assert inbox.stays_at(1, settle=0.5)


@buses
def test_a_message_published_after_someone_else_deleted_its_queue_is_not_lost(bus_factory):
    """The publisher declared the queue once and remembers it; deleted behind its back, the next message would be
    unroutable: the broker returns it and the bus declares the queue and sends it again."""
    publisher, other = bus_factory(), bus_factory()
    publisher.publish("jobs.gone", b"before")
    other.delete_queue("jobs.gone")
    publisher.publish("jobs.gone", b"after")
    inbox = Inbox()
    other.consume("jobs.gone", inbox)
    assert inbox.wait_for(1) == [b"after"]


@buses
def test_results_queues_of_different_works_are_isolated(bus_factory):
    driver_a, driver_b, worker = bus_factory(), bus_factory(), bus_factory()
    a, b = Inbox(), Inbox()
    driver_a.consume("results.work-a", a, prefetch=0)
    driver_b.consume("results.work-b", b, prefetch=0)
    for i in range(20):
        worker.publish("results.work-a", b"a%d" % i)
        worker.publish("results.work-b", b"b%d" % i)
    assert a.wait_for(20) == [b"a%d" % i for i in range(20)]
    assert b.wait_for(20) == [b"b%d" % i for i in range(20)]


@buses
def test_publishing_from_many_threads_is_safe(bus_factory):
    bus = bus_factory()
    inbox = Inbox()
    bus.consume("results.threads", inbox, prefetch=0)

    def send(t):
        for i in range(25):
            bus.publish("results.threads", f"{t}-{i}".encode())

    threads = [threading.Thread(target=send, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = sorted(f"{t}-{i}".encode() for t in range(8) for i in range(25))
    assert sorted(inbox.wait_for(200)) == expected


@brokers
def test_handler_may_publish_and_wait_for_the_confirm(bus_factory):
    bus = bus_factory()
    replies = Inbox()
    bus.consume("results.replies", replies)

    def answer(delivery):
        bus.publish("results.replies", b"re:" + delivery.body)
        delivery.ack()

    bus.consume("jobs.ask", answer)
    bus.publish_many("jobs.ask", [b"1", b"2"])
    assert sorted(replies.wait_for(2)) == [b"re:1", b"re:2"]


@brokers
def test_a_redelivered_job_tells_how_often_it_was_delivered(bus_factory):
    first, second = bus_factory(), bus_factory()
    first.publish("jobs.count", b"job")
    held = Inbox(ack=False)
    first.consume("jobs.count", held)
    held.wait_for(1)
    assert held.deliveries[0].delivery_count == 1
    first.close()
    inbox = Inbox()
    second.consume("jobs.count", inbox)
    inbox.wait_for(1)
    assert inbox.deliveries[0].delivery_count == 2


@brokers
def test_bus_reconnects_after_the_broker_drops_the_connection(bus_factory):
    bus = bus_factory()
    inbox = Inbox()
    bus.consume("jobs.reconnect", inbox)
    topic = Inbox()
    bus.subscribe("events", topic)
    bus.publish("jobs.reconnect", b"before")
    inbox.wait_for(1)
    drop_connection(bus)
    bus.publish("jobs.reconnect", b"after")
    assert inbox.wait_for(2) == [b"before", b"after"]
    deadline = time.monotonic() + WAIT
    while not topic.bodies and time.monotonic() < deadline:
        bus.broadcast("events", b"still subscribed")
        time.sleep(0.2)
    assert topic.bodies and topic.bodies[0] == b"still subscribed"


@brokers
def test_wrong_broker_url_fails_fast_naming_the_url_without_password(bus_factory):
    from iworkflow.bus import connect
    from iworkflow.config import load_settings
    from iworkflow.errors import BrokerError

    url = {"rabbitmq": "amqp://guest:s3cret@127.0.0.1:1/", "rabbitmq-quorum": "amqp://guest:s3cret@127.0.0.1:1/",
           "activemq": "stomp://admin:s3cret@127.0.0.1:1"}[bus_factory.kind]
    start = time.monotonic()
    with pytest.raises(BrokerError) as err:
        connect(url, load_settings(broker=url))
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert url.replace("s3cret", "***") in message
    assert "s3cret" not in message
    assert "refused" in message.lower()
