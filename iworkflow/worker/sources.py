"""A broker worker's side of moving blobs over the bus (``iworkflow.blob_transfer``): it fetches the source trees of
its jobs from their drivers, once per digest, and serves the large results its jobs stored."""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from .. import result_store
from ..blob_transfer import BlobEndpoint
from ..bus.base import Bus
from ..config import Settings
from ..envelope import peek_header
from ..messages import RESULT, SOURCE
from ..source_shipping import fetch_failure

logger = logging.getLogger(__name__)


def worker_blobs(settings: Settings, bus: Bus) -> BlobEndpoint:
    """The worker's blob endpoint, on a broker connection of its own (its handlers never wait on the jobs' bus
    thread); an in-process bus has nobody elsewhere to serve."""
    from ..bus import connect

    own = bus if settings.is_embedded else connect(settings.broker, settings)
    return BlobEndpoint(own, settings.secret_bytes, "worker",
                        {RESULT: lambda digest: result_store.results_store(settings).get(digest)})


class SourceFetcher:
    """Fetches the source trees of jobs from their drivers into this worker's store, once per digest."""

    def __init__(self, blobs: BlobEndpoint, settings: Settings, name: str):
        from ..source_cache import SourceStore

        self.blobs = blobs
        self.settings = settings
        self.name = name
        self.store = SourceStore(settings.store_path)
        self._lock = threading.Lock()
        self._inflight: dict[str, Future] = {}
        #: (digest, driver queue) -> when fetching it last failed: the jobs of a gone driver fail at once
        self._failed: dict[tuple[str, str], float] = {}
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="iworkflow-source-fetch")

    def fetching(self, job_data: bytes) -> Future | None:
        """None when the job can run now (no tree named, it is here already, or its driver failed to hand it
        over moments ago), else the fetch it waits for."""
        header = peek_header(job_data)
        digest, owner = header.get("source"), header.get("source_from")
        if not digest or not owner or self.store.has(digest):
            return None
        with self._lock:
            if self.store.has(digest):  # fetched while this job waited for the lock
                return None
            failed_at = self._failed.get((digest, owner))
            if failed_at is not None and time.monotonic() - failed_at < self.settings.blob_fetch_timeout:
                return None  # its runner fails it at once, with the reason recorded below
            future = self._inflight.get(digest)
            if future is None:
                future = self._inflight[digest] = self._pool.submit(self._fetch, digest, owner)
            return future

    def _fetch(self, digest: str, owner: str) -> None:
        try:
            data = self.blobs.fetch(owner, SOURCE, digest, self.settings.blob_fetch_timeout)
            self.store.put(digest, data)
            fetch_failure(self.store, digest, None)
            logger.info("worker %s fetched source %s (%d bytes) from %s", self.name, digest[:12], len(data), owner)
        except Exception as err:  # noqa: BLE001 - the job then fails in its runner, naming the three ways
            logger.warning("worker %s could not fetch source %s from its driver (%s): %s", self.name, digest[:12],
                           owner, err)
            fetch_failure(self.store, digest, f"{err}")
            with self._lock:
                self._failed[(digest, owner)] = time.monotonic()
        finally:
            with self._lock:
                self._inflight.pop(digest, None)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["SourceFetcher", "worker_blobs"]
