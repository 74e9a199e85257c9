"""The physical ceiling of the broker path: raw publish + consume, no framework, same broker, same run.

    python benchmarks/raw_broker.py rabbitmq|activemq --messages 10000 --size 700

One process publishes persistent messages of ``--size`` bytes (an iworkflow no-op job message is about
that big) to a durable queue (RabbitMQ: a classic queue, iworkflow's default job queue type) without
waiting per message; a second process consumes them with manual acks (prefetch 200).  Rate = messages / (first
publish -> last message consumed).  Prints ``BENCH-JSON {...}``.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import threading
import time
import uuid
from urllib.parse import urlsplit

RABBITMQ = os.environ.get("BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
ACTIVEMQ = os.environ.get("BENCH_STOMP", "stomp://admin:admin@127.0.0.1:61613")
PREFETCH = 200


def _amqp_consume(queue: str, n: int, ready, done) -> None:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(RABBITMQ))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    ch.basic_qos(prefetch_count=PREFETCH)
    seen = 0
    ready.set()
    for method, _props, _body in ch.consume(queue):
        ch.basic_ack(method.delivery_tag)
        seen += 1
        if seen == n:
            break
    done.put(time.time())
    ch.cancel()
    ch.queue_delete(queue)
    conn.close()


def rabbitmq(n: int, size: int) -> float:
    import pika

    queue = f"bench-raw-{uuid.uuid4().hex[:8]}"
    ready, done = mp.Event(), mp.Queue()
    consumer = mp.Process(target=_amqp_consume, args=(queue, n, ready, done))
    consumer.start()
    ready.wait(30)
    conn = pika.BlockingConnection(pika.URLParameters(RABBITMQ))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    body, props = os.urandom(size), pika.BasicProperties(delivery_mode=2)
    start = time.time()
    for _ in range(n):
        ch.basic_publish("", queue, body, props)
    end = done.get(timeout=600)
    conn.close()
    consumer.join(30)
    return n / (end - start)


def _stomp_connect():
    import stomp

    url = urlsplit(ACTIVEMQ)
    conn = stomp.Connection12([(url.hostname, url.port or 61613)], auto_decode=False)
    conn.connect(url.username, url.password, wait=True)
    return conn


def _stomp_consume(dest: str, n: int, ready, done) -> None:
    import stomp

    conn = _stomp_connect()
    finished = threading.Event()
    seen = [0]

    class Listener(stomp.ConnectionListener):
        def on_message(self, frame) -> None:
            conn.ack(frame.headers["ack"])
            seen[0] += 1
            if seen[0] == n:
                finished.set()

    conn.set_listener("bench", Listener())
    conn.subscribe(dest, id="1", ack="client-individual", headers={"activemq.prefetchSize": str(PREFETCH)})
    ready.set()
    finished.wait(600)
    done.put(time.time())
    conn.disconnect()


def activemq(n: int, size: int) -> float:
    dest = f"/queue/bench-raw-{uuid.uuid4().hex[:8]}"
    ready, done = mp.Event(), mp.Queue()
    consumer = mp.Process(target=_stomp_consume, args=(dest, n, ready, done))
    consumer.start()
    ready.wait(30)
    conn = _stomp_connect()
    body = os.urandom(size)
    start = time.time()
    for _ in range(n):
        conn.send(dest, body, headers={"persistent": "true"})
    end = done.get(timeout=600)
    conn.disconnect()
    consumer.join(30)
    return n / (end - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("broker", choices=["rabbitmq", "activemq"])
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--size", type=int, default=700)
    args = parser.parse_args()
    rate = (rabbitmq if args.broker == "rabbitmq" else activemq)(args.messages, args.size)
    print("BENCH-JSON " + json.dumps({"name": f"raw {args.broker}", "rate": rate}), flush=True)


if __name__ == "__main__":
    main()
