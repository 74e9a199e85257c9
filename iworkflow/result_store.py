"""Large job results travel by reference: the value goes to the result store, the message carries its address.

A pickled value larger than ``settings.result_inline_max_mb`` (1 MiB by default, never below
``MIN_SPILL_BYTES``) is written to the result store, content-addressed by its SHA-256:

- the server's blob store (``/api/sources/<sha256>``, the HTTP source cache) when ``server_url`` is set;
- else the directory ``<source store>/results`` (shared by the workers and drivers of one machine or a
  shared file system).

The result message then carries ``REF_MAGIC + "<store location>#<sha256>"`` in place of the pickle, followed
by ``"#<blobs queue>"`` when the process runs under an ``iworkflow worker`` (``BLOBS_ENV``): a driver that
cannot read the store (another machine) fetches the value from that worker over the bus.
Pickles written by iworkflow (protocol 5) start with ``b"\\x80"``, so a reference is never mistaken for
a value.  The reader checks the digest of what it fetched, so a store cannot hand back other bytes.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Callable

from .errors import InvalidMessage

logger = logging.getLogger(__name__)

REF_MAGIC = b"IWFREF1\x00"
MIN_SPILL_BYTES = 16 * 1024
RESULTS_DIR = "results"
#: set by ``iworkflow worker`` for its runners: the bus queue on which it serves the results they stored
BLOBS_ENV = "IWORKFLOW_BLOBS_QUEUE"
Fetch = Callable[[str, str, str], bytes]
#: set in Dask and Ray worker processes: results go back through the engine, whatever their size (the driver
#: moves a large one to its own store)
INLINE_ENV = "IWORKFLOW_RESULTS_VIA_ENGINE"


def _store(location: str, token: str = ""):
    if location.startswith(("http://", "https://")):
        from .source_http import HttpSourceStore

        return HttpSourceStore(location, token=token)
    from .source_cache import SourceStore

    return SourceStore(location)


def spill(data: bytes, settings=None) -> bytes:
    """``data`` itself when it is small enough for the bus, else a reference to its stored copy."""
    if len(data) < MIN_SPILL_BYTES or os.environ.get(INLINE_ENV):
        return data
    if settings is None:
        from .config import load_settings

        settings = load_settings()
    if len(data) <= max(MIN_SPILL_BYTES, settings.result_inline_max_mb * 2**20):
        return data
    digest = hashlib.sha256(data).hexdigest()
    location = settings.server_url or str(Path(settings.store_path) / RESULTS_DIR)
    _store(location, settings.token).put(digest, data)
    logger.info("result of %d bytes stored as %s in %s", len(data), digest[:12], location)
    served_on = "" if settings.server_url else os.environ.get(BLOBS_ENV, "")
    return REF_MAGIC + f"{location}#{digest}".encode() + (f"#{served_on}".encode() if served_on else b"")


def results_store(settings=None):
    """The directory store this process spills results to when no server is configured."""
    if settings is None:
        from .config import load_settings

        settings = load_settings()
    return _store(str(Path(settings.store_path) / RESULTS_DIR))


def is_reference(value: bytes | None) -> bool:
    return value is not None and value[: len(REF_MAGIC)] == REF_MAGIC


def _parse(value: bytes) -> tuple[str, str, str]:
    """(store location, digest, blobs queue or "") of a reference."""
    try:
        text = value[len(REF_MAGIC):].decode()
        location, digest = text.rsplit("#", 1)
        served_on = ""
        if not _is_digest(digest):
            served_on = digest
            location, digest = location.rsplit("#", 1)
    except (UnicodeDecodeError, ValueError):
        raise InvalidMessage(f"malformed result reference {value[:200]!r}") from None
    if not _is_digest(digest):
        raise InvalidMessage(f"malformed result reference {value[:200]!r}")
    return location, digest, served_on


def _is_digest(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def resolve(value: bytes, token: str | None = None, fetch: Fetch | None = None) -> bytes:
    """The pickled value a result message holds: itself, or what its reference points to (read from the store
    it names, else fetched with ``fetch(queue, "result", digest)`` from the worker serving it on the bus)."""
    if not is_reference(value):
        return value
    location, digest, served_on = _parse(value)
    if token is None:
        from .config import load_settings

        token = load_settings().token
    try:
        if served_on and not location.startswith(("http://", "https://")) and not Path(location).is_dir():
            raise FileNotFoundError(f"{location} is not a directory here")
        data = _store(location, token).get(digest)
    except FileNotFoundError as err:
        if not (served_on and fetch):
            raise FileNotFoundError(f"the job's result was stored as {digest} in {location}, but it is not there "
                                    f"(the driver must reach the workers' result store): {err}") from None
        try:
            data = fetch(served_on, "result", digest)
        except FileNotFoundError as fetch_err:
            raise FileNotFoundError(f"the job's result was stored as {digest} in {location} on its worker, which "
                                    f"this driver cannot read, and fetching it over the broker failed: {fetch_err}; "
                                    "keep the worker running until its results are read, or set server_url on "
                                    "drivers and workers") from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise InvalidMessage(f"result {digest} fetched from {location} does not match its digest")
    return data
