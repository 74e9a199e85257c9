"""Versioned artifacts with lineage: keep what a job made (a model, a file, a folder) and how it was made.

``save(name, obj_or_path, metadata)`` inside a job or a driver stores the bytes content-addressed and records
them as the next version of ``name``, with the job's workflow, work, job key, call identity, executor and
worker.  ``load(name, version)`` gives it back anywhere.  Versions never change; tags (``promote``) move.

Where: the server (``server_url`` set: its blob store and database, so jobs on other machines share one
catalog), else ``<IWORKFLOW_HOME>/artifacts`` (a blob directory and a SQLite catalog).
"""
from __future__ import annotations

import builtins
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from . import serialization
from .artifact_catalog import (
    ArtifactName,
    ArtifactNotFound,
    ArtifactVersion,
    Catalog,
    Lineage,
    SqliteConnector,
    check_name,
    parse_ref,
)
from .artifact_store import ArtifactCorrupted, BlobStore, materialize
from .errors import ConfigurationError

logger = logging.getLogger(__name__)

#: ``list`` is left out: ``from iworkflow.artifacts import *`` must not shadow the builtin (use ``artifacts.list``)
__all__ = ["ArtifactCorrupted", "ArtifactName", "ArtifactNotFound", "ArtifactVersion", "Artifacts", "Lineage", "get",
           "lineage", "load", "names", "parse_ref", "promote", "save", "show"]

Ref = str | int | None


class Backend(Protocol):
    """Where artifacts live: blob storage plus a catalog (local directory + SQLite, or the server)."""

    blobs: BlobStore

    def store_object(self, data: bytes) -> tuple[str, int]: ...
    def store_file(self, path: Path) -> tuple[str, int]: ...
    def store_directory(self, path: Path) -> tuple[str, int]: ...
    def add_version(self, name: str, digest: str, size: int, kind: str, filename: str,
                    metadata: dict[str, Any], lineage: Lineage) -> ArtifactVersion: ...
    def get(self, name: str, ref: Ref) -> ArtifactVersion: ...
    def versions(self, name: str) -> builtins.list[ArtifactVersion]: ...
    def names(self) -> builtins.list[ArtifactName]: ...
    def promote(self, name: str, ref: Ref, tag: str) -> ArtifactVersion: ...
    def chunks(self, version: ArtifactVersion) -> Iterator[bytes]: ...


class LocalBackend:
    """The embedded default: ``<root>/blobs`` and the SQLite catalog ``<root>/catalog.db``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        self.blobs = BlobStore(self.root / "blobs")
        self.catalog = Catalog(SqliteConnector(self.root / "catalog.db"))

    @property
    def location(self) -> str:
        return str(self.root)

    def store_object(self, data: bytes) -> tuple[str, int]:
        return self.blobs.put_chunks([data])

    def store_file(self, path: Path) -> tuple[str, int]:
        return self.blobs.put_file(path)

    def store_directory(self, path: Path) -> tuple[str, int]:
        return self.blobs.put_directory(path)

    def add_version(self, name, digest, size, kind, filename, metadata, lineage) -> ArtifactVersion:
        if not self.blobs.has(digest):
            raise FileNotFoundError(f"artifact blob {digest} is not in {self.blobs.root}: store it first")
        return self.catalog.add_version(name, digest, size, kind, filename, metadata, lineage)

    def get(self, name: str, ref: Ref) -> ArtifactVersion:
        return self.catalog.get(name, ref)

    def versions(self, name: str) -> builtins.list[ArtifactVersion]:
        return self.catalog.versions(name)

    def names(self) -> builtins.list[ArtifactName]:
        return self.catalog.names()

    def promote(self, name: str, ref: Ref, tag: str) -> ArtifactVersion:
        return self.catalog.promote(name, ref, tag)

    def chunks(self, version: ArtifactVersion) -> Iterator[bytes]:
        return self.blobs.chunks(version.digest)


def current_lineage() -> Lineage:
    """Who is saving: the running job (see ``iworkflow.job_context``), else this driver process."""
    from .job_context import current_job, process_role
    from .runner import WORKER_NAME

    now = time.time()
    job = current_job()
    if job is None and process_role() != "driver":
        raise ConfigurationError(
            f"artifacts.save() was called in worker process {WORKER_NAME} outside the thread of any job, so "
            "the job that made the artifact is not known: save from the job function's own thread (for a thread "
            "you start, run it with contextvars.copy_context() taken inside the job)")
    if job is not None:
        return Lineage(workflow_id=job.workflow_id, work_id=job.work_id, work_name=job.work_name,
                       job_key=job.job_key, attempt=job.attempt, call_identity=job.call_identity,
                       func_digest=job.func_digest, source_digest=job.source_digest, args_digest=job.args_digest,
                       executor=job.executor, worker=job.worker, created_at=now)
    from .context import current_workflow

    wf = current_workflow()
    return Lineage(workflow_id=getattr(wf, "internal_id", None) if wf is not None else None,
                   executor="driver", worker=WORKER_NAME, created_at=now)


def _metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise ConfigurationError(f"artifact metadata must be a dict, got {type(metadata).__name__}")
    try:
        return json.loads(json.dumps(metadata))
    except (TypeError, ValueError) as err:
        raise ConfigurationError(f"artifact metadata must be JSON (numbers, strings, lists, dicts): {err}; convert "
                                 "values such as numpy scalars with float()/int() first") from None


class Artifacts:
    """The artifact operations over one backend; the module functions use the configured one."""

    def __init__(self, backend: Backend, cache_dir: str | os.PathLike):
        self.backend = backend
        #: where file and directory artifacts are unpacked for ``load`` (one folder per digest)
        self.cache_dir = Path(cache_dir).expanduser()

    def save(self, name: str, obj_or_path: Any, metadata: dict[str, Any] | None = None,
             kind: str | None = None) -> ArtifactVersion:
        """Store ``obj_or_path`` as the next version of ``name``: a ``pathlib.Path`` as the file or folder it
        names, anything else as its cloudpickle (``kind="object"`` pickles a Path, ``kind="path"`` reads a str)."""
        check_name(name)
        meta = _metadata(metadata)
        if kind not in (None, "object", "path"):
            raise ConfigurationError(f"kind={kind!r}: use 'object' (pickle the value) or 'path' (store the file "
                                     "or folder it names)")
        as_path = kind == "path" or (kind is None and isinstance(obj_or_path, os.PathLike))
        if kind is None and isinstance(obj_or_path, str) and os.path.exists(obj_or_path):
            raise ConfigurationError(
                f"save({name!r}, {obj_or_path!r}): this str names an existing path; pass pathlib.Path(...) (or "
                "kind='path') to store that file or folder, or kind='object' to store the string itself")
        lineage = current_lineage()
        if as_path:
            path = Path(os.fspath(obj_or_path)).expanduser()
            if path.is_dir():
                digest, size = self.backend.store_directory(path)
                stored_kind = "directory"
            elif path.is_file():
                digest, size = self.backend.store_file(path)
                stored_kind = "file"
            else:
                raise FileNotFoundError(f"save({name!r}, ...): {path} is neither a file nor a folder")
            filename = path.resolve().name
        else:
            try:
                data = serialization.dumps(obj_or_path)
            except Exception as err:
                raise ConfigurationError(f"save({name!r}, ...): the {type(obj_or_path).__name__} cannot be pickled "
                                         f"with cloudpickle ({err}); save a file of it instead") from None
            digest, size = self.backend.store_object(data)
            stored_kind, filename = "object", ""
        version = self.backend.add_version(name, digest, size, stored_kind, filename, meta, lineage)
        logger.info("saved artifact %s (%s, %d bytes, %s)", version.ref, stored_kind, size, digest[:12])
        return version

    def show(self, name: str, version: Ref = "latest") -> ArtifactVersion:
        """The record of one version: digest, size, kind, metadata, tags and lineage."""
        return self.backend.get(check_name(name), version)

    def load(self, name: str, version: Ref = "latest") -> Any:
        """An object artifact's value; a file or folder artifact's local copy (a Path).  The bytes are checked
        against their digest first: ``ArtifactCorrupted`` if they changed."""
        record = self.show(name, version)
        if record.kind == "object":
            data = b"".join(self.backend.chunks(record))  # raises ArtifactCorrupted before anything is unpickled
            return serialization.loads(data)
        dest = self.cache_dir / record.digest / (record.filename or record.name)
        if dest.exists():
            for _chunk in self.backend.chunks(record):  # still the bytes it was saved as
                pass
            return dest
        try:
            return materialize(self.backend.chunks(record), record.kind, record.filename, record.digest, dest)
        except FileExistsError:
            if dest.exists():  # another process unpacked the same digest meanwhile
                return dest
            raise

    def get(self, name: str, version: Ref, dest: str | os.PathLike) -> Path:
        """Write one version to ``dest`` (a new path): a file or folder as saved, an object as its pickle."""
        record = self.show(name, version)
        return materialize(self.backend.chunks(record), record.kind, record.filename, record.digest, Path(dest))

    def list(self, name: str) -> builtins.list[ArtifactVersion]:
        """Every version of ``name``, oldest first."""
        return self.backend.versions(check_name(name))

    def names(self) -> builtins.list[ArtifactName]:
        return self.backend.names()

    def lineage(self, name: str, version: Ref = "latest") -> Lineage:
        return self.show(name, version).lineage

    def promote(self, name: str, version: Ref, tag: str) -> ArtifactVersion:
        """Point ``tag`` (e.g. "production") at a version; ``load(name, tag)`` then gives that version."""
        record = self.backend.promote(check_name(name), version, tag)
        logger.info("artifact tag %s:%s -> version %d", name, tag, record.version)
        return record


_defaults: dict[tuple[str, str], Artifacts] = {}
_defaults_lock = threading.Lock()


def configured(settings=None) -> Artifacts:
    """The artifacts of the configured store: the server when ``server_url`` is set, else the local home."""
    if settings is None:
        from .runtime import get_runtime

        settings = get_runtime().settings
    key = (settings.server_url, settings.home if not settings.server_url else settings.token)
    with _defaults_lock:
        found = _defaults.get(key)
        if found is None:
            cache = Path(settings.home) / "artifacts"
            if settings.server_url:
                from .artifact_http import HttpBackend

                backend: Backend = HttpBackend(settings.server_url, settings.token, cache / "cache")
            else:
                backend = LocalBackend(cache)
            found = _defaults[key] = Artifacts(backend, cache / "files")
        return found


def save(name: str, obj_or_path: Any, metadata: dict[str, Any] | None = None,
         kind: str | None = None) -> ArtifactVersion:
    """Store ``obj_or_path`` as the next version of ``name``, with the lineage of the job (or driver) saving it."""
    return configured().save(name, obj_or_path, metadata, kind)


def load(name: str, version: Ref = "latest") -> Any:
    """Version ``version`` ("latest", a number, a digest or a tag) of ``name``: the object, or a Path to the file."""
    return configured().load(name, version)


def show(name: str, version: Ref = "latest") -> ArtifactVersion:
    return configured().show(name, version)


def get(name: str, version: Ref, dest: str | os.PathLike) -> Path:
    return configured().get(name, version, dest)


def names() -> builtins.list[ArtifactName]:
    return configured().names()


def lineage(name: str, version: Ref = "latest") -> Lineage:
    """How that version was made: workflow, work, job key, call identity, executor, worker, time."""
    return configured().lineage(name, version)


def promote(name: str, version: Ref, tag: str) -> ArtifactVersion:
    """Move ``tag`` to ``version`` of ``name``; versions themselves never change."""
    return configured().promote(name, version, tag)


def _list(name: str) -> builtins.list[ArtifactVersion]:
    """Every version of ``name``, oldest first."""
    return configured().list(name)


list = _list
list.__name__ = "list"
