"""Content-addressed blobs (source tarballs, large results) moved over the bus, for processes that share
nothing but the broker.

Each driver and each broker worker owns a queue ``blobs.<name>``.  A process that needs a blob sends a
``BlobRequest`` to the owner's queue; the owner answers on the requester's queue with ``BlobChunk``
messages (``CHUNK_BYTES`` each, every one signed), and the requester checks the SHA-256 of the whole
before anyone uses it.  A driver serves the source trees its works shipped; a worker serves the large
results its jobs stored.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable

from .envelope import decode
from .errors import InvalidMessage
from .messages import BlobChunk, BlobRequest, blobs_destination

if TYPE_CHECKING:
    from .bus.base import Bus, Delivery

logger = logging.getLogger(__name__)

#: bytes per chunk message: well below every broker's message size limit
CHUNK_BYTES = 1 << 20
#: what a process serves: ``what`` -> a function returning a blob's bytes by digest (FileNotFoundError: none)
Getter = Callable[[str], bytes]


class BlobUnavailable(FileNotFoundError):
    """The owner of a blob did not hand it over (gone, timed out, or it does not hold that digest)."""


class _Fetch:
    """The chunks of one request, gathered until all have arrived (or an error or the timeout ends it)."""

    def __init__(self, digest: str):
        self.digest = digest
        self.parts: dict[int, bytes] = {}
        self.count: int | None = None
        self.error = ""
        self.progress = threading.Condition()

    def add(self, chunk: BlobChunk) -> None:
        with self.progress:
            if chunk.error:
                self.error = chunk.error
            elif chunk.digest == self.digest:
                self.count = chunk.count
                self.parts[chunk.index] = chunk.data
            self.progress.notify_all()

    @property
    def done(self) -> bool:
        return bool(self.error) or (self.count is not None and len(self.parts) >= self.count)


class BlobEndpoint:
    """Serves this process's blobs on ``blobs.<name>`` and fetches other processes' blobs through it."""

    def __init__(self, bus: "Bus", secret: bytes, role: str, serve: dict[str, Getter] | None = None):
        self.bus = bus
        self.secret = secret
        self.name = f"{role}-{uuid.uuid4().hex[:16]}"
        self.destination = blobs_destination(self.name)
        self._getters = dict(serve or {})
        self._fetches: dict[str, _Fetch] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="iworkflow-blobs")
        self._subscription = None
        self._closed = False

    def start(self) -> "BlobEndpoint":
        """Consume the queue (before its name is handed to anyone, so no request waits for a consumer)."""
        if self._subscription is None:
            self._subscription = self.bus.consume(self.destination, self._on_delivery, prefetch=16)
        return self

    def serve(self, what: str, getter: Getter) -> None:
        self._getters[what] = getter

    # --- serving ---------------------------------------------------------------------------------
    def _on_delivery(self, delivery: "Delivery") -> None:
        try:
            env = decode(delivery.body, self.secret)
            if env.kind == "blob_chunk":
                chunk = BlobChunk.from_envelope(env)
                with self._lock:
                    fetch = self._fetches.get(chunk.request_id)
                if fetch is not None:
                    fetch.add(chunk)
            else:
                request = BlobRequest.from_envelope(env)
                self._pool.submit(self._answer, request)
        except InvalidMessage as err:
            logger.error("blob endpoint %s dead-letters a message: %s", self.name, err)
            delivery.reject(requeue=False)
            return
        except RuntimeError:  # the pool is shut down: the process is closing
            pass
        delivery.ack()

    def _answer(self, request: BlobRequest) -> None:
        getter = self._getters.get(request.what)
        try:
            if getter is None:
                raise FileNotFoundError(f"{self.name} serves no {request.what} blobs")
            data = getter(request.digest)
            if hashlib.sha256(data).hexdigest() != request.digest:
                raise FileNotFoundError(f"{request.what} {request.digest} held by {self.name} does not match its "
                                        "digest")
        except Exception as err:  # noqa: BLE001 - whatever keeps the blob here, the requester hears it at once
            logger.warning("blob endpoint %s cannot serve %s %s: %s", self.name, request.what, request.digest[:12], err)
            reply = [BlobChunk(request.request_id, request.digest, 0, 1, 0, error=str(err)).encode(self.secret)]
        else:
            count = max(1, -(-len(data) // CHUNK_BYTES))
            reply = [BlobChunk(request.request_id, request.digest, i, count, len(data),
                               data[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES]).encode(self.secret)
                     for i in range(count)]
            logger.info("blob endpoint %s sends %s %s (%d bytes, %d chunks) to %s", self.name, request.what,
                        request.digest[:12], len(data), count, request.reply_to)
        try:
            self.bus.publish_many(request.reply_to, reply)
        except Exception as err:  # noqa: BLE001 - the requester times out and says so
            logger.warning("blob endpoint %s could not answer %s: %s", self.name, request.reply_to, err)

    # --- fetching --------------------------------------------------------------------------------
    def fetch(self, owner: str, what: str, digest: str, timeout: float) -> bytes:
        """The blob ``digest`` from the process serving ``owner`` (a ``blobs.<name>`` queue), checked against its
        digest; raises BlobUnavailable when nothing arrives for ``timeout`` seconds or the owner refuses."""
        self.start()
        request = BlobRequest(what, digest, self.destination, uuid.uuid4().hex)
        fetch = _Fetch(digest)
        with self._lock:
            self._fetches[request.request_id] = fetch
        try:
            self.bus.publish(owner, request.encode(self.secret))
            with fetch.progress:
                while not fetch.done:
                    before = len(fetch.parts)
                    fetch.progress.wait(timeout)
                    if not fetch.done and len(fetch.parts) == before:
                        raise BlobUnavailable(f"no answer from {owner} for {what} {digest} within {timeout:.0f}s "
                                              "(its driver or worker is gone, or cannot reach the broker)")
        finally:
            with self._lock:
                self._fetches.pop(request.request_id, None)
        if fetch.error:
            raise BlobUnavailable(f"{owner} does not hand over {what} {digest}: {fetch.error}")
        data = b"".join(fetch.parts[i] for i in range(fetch.count or 0))
        if hashlib.sha256(data).hexdigest() != digest:
            raise BlobUnavailable(f"{what} {digest} fetched from {owner} does not match its digest")
        return data

    def close(self) -> None:
        """Stop serving and delete the queue: nobody can fetch from this process any more."""
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._subscription is not None:
            self._subscription.cancel()
            try:
                self.bus.forget_queue(self.destination)
            except Exception as err:  # noqa: BLE001 - the broker may already be gone at interpreter exit
                logger.debug("could not delete %s: %s", self.destination, err)
