"""How a job's source tree reaches the process that runs it, on this machine or another.

A runner looks for the tree, by digest, in this order: the local source store (``settings.store_path``:
where a worker puts what it fetched from its driver over the bus, and where a driver packs its trees), the
tarball carried in the job itself (a detached driver's job), then the store the driver named (the server's
HTTP source cache, or a directory shared with the driver).  When none holds it, ``SourceUnavailable``
names the three ways to make it work.
"""
from __future__ import annotations

import logging
from pathlib import Path

from .errors import SourceUnavailable
from .messages import SourceRef

logger = logging.getLogger(__name__)


def local_store():
    """This process's own source store (``settings.store_path``)."""
    from .config import load_settings
    from .source_cache import SourceStore

    return SourceStore(load_settings().store_path)


def store_at(location: str):
    """The store a location names: the server's HTTP source cache, or a directory."""
    if location.startswith(("http://", "https://")):
        from .source_http import HttpSourceStore

        return HttpSourceStore(location)
    from .source_cache import SourceStore

    return SourceStore(location)


FETCH_ERRORS = "fetch-errors"


def fetch_failure(store, digest: str, reason: str | None) -> None:
    """Record (or, with None, clear) why the worker could not fetch ``digest`` from its driver, for the error
    its runner reports."""
    path = store.path / FETCH_ERRORS / digest
    if reason is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(reason[:2000])


def how_to_ship(digest: str, store: str) -> str:
    """The error text naming the three deployments in which a worker obtains a source tree."""
    why = ""
    try:
        why = (local_store().path / FETCH_ERRORS / digest).read_text()
    except (OSError, ValueError):
        pass
    fetched = (f"this worker asked its driver over the broker and got: {why}" if why else
               "this job named no driver to ask over the broker, or the worker's log says why it could not")
    return (f"source {digest} is not in this worker's store nor reachable at {store} ({fetched}); a worker "
            "obtains a workflow's source tree in one of three ways: (1) over the broker from its driver, which "
            "serves it while it runs (the driver must still be running and reach the same broker with the same "
            "IWORKFLOW_SECRET); (2) from the iworkflow server's source cache: set server_url (IWORKFLOW_SERVER_URL) "
            "on the driver and the workers; (3) from a directory both see: set source_store "
            "(IWORKFLOW_SOURCE_STORE) to a shared file system path")


def read(ref: SourceRef) -> bytes:
    """The tarball of ``ref``: from the local store, the job itself, or the store the driver named."""
    local = local_store()
    if local.has(ref.digest):
        return local.get(ref.digest)
    if ref.data is not None:
        local.put(ref.digest, ref.data)  # checks the digest
        return ref.data
    try:
        return store_at(ref.store).get(ref.digest)
    except (FileNotFoundError, OSError) as err:
        raise SourceUnavailable(f"{how_to_ship(ref.digest, ref.store)} ({err})") from None


def unpacked(ref: SourceRef) -> Path:
    """The unpacked tree of ``ref``, unpacked once per digest under the local store."""
    local = local_store()
    if (local.path / "unpacked" / ref.digest).is_dir():
        return local.path / "unpacked" / ref.digest
    if local.has(ref.digest) or ref.data is not None:
        return local.unpacked(ref.digest, fetch=lambda _d: read(ref))
    if not ref.store.startswith(("http://", "https://")) and not Path(ref.store).expanduser().is_dir():
        raise SourceUnavailable(how_to_ship(ref.digest, ref.store))
    try:
        return store_at(ref.store).unpacked(ref.digest)
    except FileNotFoundError as err:
        raise SourceUnavailable(f"{how_to_ship(ref.digest, ref.store)} ({err})") from None


def with_tarball(ref: SourceRef) -> SourceRef:
    """``ref`` carrying its tarball, for a job whose submitter may be gone before it runs."""
    if ref.data is not None:
        return ref
    from dataclasses import replace

    return replace(ref, data=store_at(ref.store).get(ref.digest))
