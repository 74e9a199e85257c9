"""Large job results travel by reference: the value goes to the result store, the message carries its address.

A pickled value larger than ``settings.result_inline_max_mb`` (1 MiB by default, never below
``MIN_SPILL_BYTES``) is written to the result store, content-addressed by its SHA-256:

- the server's blob store (``/api/sources/<sha256>``, the HTTP source cache) when ``server_url`` is set;
- else the directory ``<source store>/results`` (shared by the workers and drivers of one machine or a
  shared file system).

The result message then carries ``REF_MAGIC + "<store location>#<sha256>"`` in place of the pickle.
Pickles written by iworkflow (protocol 5) start with ``b"\\x80"``, so a reference is never mistaken for
a value.  The reader checks the digest of what it fetched, so a store cannot hand back other bytes.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from .errors import InvalidMessage

logger = logging.getLogger(__name__)

REF_MAGIC = b"IWFREF1\x00"
MIN_SPILL_BYTES = 16 * 1024
RESULTS_DIR = "results"


def _store(location: str, token: str = ""):
    if location.startswith(("http://", "https://")):
        from .source_http import HttpSourceStore

        return HttpSourceStore(location, token=token)
    from .source_cache import SourceStore

    return SourceStore(location)


def spill(data: bytes, settings=None) -> bytes:
    """``data`` itself when it is small enough for the bus, else a reference to its stored copy."""
    if len(data) < MIN_SPILL_BYTES:
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
    return REF_MAGIC + f"{location}#{digest}".encode()


def is_reference(value: bytes | None) -> bool:
    return value is not None and value[: len(REF_MAGIC)] == REF_MAGIC


def resolve(value: bytes, token: str | None = None) -> bytes:
    """The pickled value a result message holds: itself, or what its reference points to."""
    if not is_reference(value):
        return value
    try:
        location, digest = value[len(REF_MAGIC):].decode().rsplit("#", 1)
    except (UnicodeDecodeError, ValueError):
        raise InvalidMessage(f"malformed result reference {value[:200]!r}") from None
    if token is None:
        from .config import load_settings

        token = load_settings().token
    try:
        data = _store(location, token).get(digest)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"the job's result was stored as {digest} in {location}, but it is not there "
                                f"(the driver must reach the workers' result store): {err}") from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise InvalidMessage(f"result {digest} fetched from {location} does not match its digest")
    return data
