"""The catalog of artifact versions: names, immutable numbered versions with lineage, and movable tags.

One set of SQL statements serves SQLite (the embedded default, through ``sqlite3``) and PostgreSQL or SQLite
behind the server (through SQLAlchemy, schema from the Alembic migration ``0005_artifacts``).  A version
number is taken by one ``UPDATE ... RETURNING`` on the name's row, inside the transaction that records the
version, so concurrent saves of one name get consecutive versions: never the same, never a lost one.
"""
from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from .errors import ConfigurationError, IWorkflowError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TAG_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")
HEX = frozenset("0123456789abcdef")
#: how an artifact's bytes are kept: a cloudpickle of an object, a file as-is, a directory as a tar
KINDS = ("object", "file", "directory")
MIN_DIGEST_PREFIX = 8


class ArtifactNotFound(IWorkflowError, LookupError):
    """No artifact of that name, or no version matching the reference asked for."""


@dataclass(frozen=True)
class Lineage:
    """How an artifact version was made: the job (or driver) that saved it and the call identity it ran."""

    workflow_id: str | None = None
    work_id: str | None = None
    work_name: str = ""
    job_key: str | None = None
    attempt: int | None = None
    #: the job's call identity (``iworkflow.identity``) and its parts: function, source tree, arguments
    call_identity: str | None = None
    func_digest: str | None = None
    source_digest: str | None = None
    args_digest: str | None = None
    #: the executor the job ran through; "driver" for a save outside any job
    executor: str = ""
    worker: str = ""
    created_at: float = 0.0


@dataclass(frozen=True)
class ArtifactVersion:
    """One immutable version of a named artifact, the tags now on it and how it was made."""

    name: str
    version: int
    digest: str
    size: int
    kind: str
    filename: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    lineage: Lineage = field(default_factory=Lineage)
    tags: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["tags"] = list(self.tags)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ArtifactVersion:
        data = dict(data)
        data["lineage"] = Lineage(**data.get("lineage") or {})
        data["tags"] = tuple(data.get("tags") or ())
        return cls(**data)


@dataclass(frozen=True)
class ArtifactName:
    """A named artifact: how many versions it has, the latest, its tags."""

    name: str
    latest: int
    versions: int
    updated_at: float
    tags: dict[str, int] = field(default_factory=dict)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigurationError(
            f"artifact name {name!r} is not valid: use 1-128 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (for example 'tth-bdt')")
    return name


def check_tag(tag: str) -> str:
    if not isinstance(tag, str) or not TAG_RE.match(tag) or tag == "latest" or set(tag) <= HEX:
        raise ConfigurationError(
            f"tag {tag!r} is not valid: use 1-64 letters, digits, '.', '_' or '-', starting with a letter, not "
            "'latest' and not only hex digits (those read as a version digest), for example 'production'")
    return tag


def parse_ref(ref: str) -> tuple[str, str | int]:
    """``NAME``, ``NAME@VERSION`` (a number or a digest), ``NAME:TAG`` -> (name, version reference)."""
    if "@" in ref:
        name, _, version = ref.partition("@")
        return check_name(name), int(version) if version.isdigit() else version
    if ":" in ref:
        name, _, tag = ref.partition(":")
        return check_name(name), check_tag(tag)
    return check_name(ref), "latest"


_LINEAGE = [f.name for f in fields(Lineage) if f.name != "created_at"]
_COLUMNS = ["name", "version", "digest", "size", "kind", "filename", "meta", "created_at", *_LINEAGE]

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS iwf_artifact_names (
    name VARCHAR(128) PRIMARY KEY, last_version INTEGER NOT NULL, created_at FLOAT NOT NULL,
    updated_at FLOAT NOT NULL);
CREATE TABLE IF NOT EXISTS iwf_artifact_versions (
    name VARCHAR(128) NOT NULL REFERENCES iwf_artifact_names (name), version INTEGER NOT NULL,
    digest VARCHAR(64) NOT NULL, size BIGINT NOT NULL, kind VARCHAR(16) NOT NULL, filename VARCHAR(255) NOT NULL,
    meta TEXT NOT NULL, created_at FLOAT NOT NULL, workflow_id VARCHAR(64), work_id VARCHAR(64),
    work_name VARCHAR(255) NOT NULL, job_key VARCHAR(255), attempt INTEGER, call_identity VARCHAR(64),
    func_digest VARCHAR(64), source_digest VARCHAR(64), args_digest VARCHAR(64), executor VARCHAR(255) NOT NULL,
    worker VARCHAR(255) NOT NULL, PRIMARY KEY (name, version));
CREATE INDEX IF NOT EXISTS ix_iwf_artifact_versions_digest ON iwf_artifact_versions (digest);
CREATE INDEX IF NOT EXISTS ix_iwf_artifact_versions_workflow ON iwf_artifact_versions (workflow_id);
CREATE TABLE IF NOT EXISTS iwf_artifact_tags (
    name VARCHAR(128) NOT NULL REFERENCES iwf_artifact_names (name), tag VARCHAR(64) NOT NULL,
    version INTEGER NOT NULL, updated_at FLOAT NOT NULL, PRIMARY KEY (name, tag));
"""


class Transaction(Protocol):
    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]: ...


class Connector(Protocol):
    """Opens transactions on the catalog's database: ``write`` ones take the write lock at once."""

    def transaction(self, write: bool) -> contextlib.AbstractContextManager[Transaction]: ...


class SqliteConnector:
    """The embedded catalog: a SQLite file opened with ``sqlite3`` (no extra needed); writers serialize on
    ``BEGIN IMMEDIATE``, readers see the last commit (WAL)."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=60)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=60000")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in SQLITE_SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def transaction(self, write: bool) -> Iterator[Transaction]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield self
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        return [dict(row) for row in self._db.execute(sql, params).fetchall()]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _version(row: dict[str, Any], tags: tuple[str, ...]) -> ArtifactVersion:
    lineage = Lineage(**{k: row[k] for k in _LINEAGE}, created_at=row["created_at"])
    return ArtifactVersion(name=row["name"], version=int(row["version"]), digest=row["digest"], size=int(row["size"]),
                           kind=row["kind"], filename=row["filename"], metadata=json.loads(row["meta"]),
                           lineage=lineage, tags=tags)


class Catalog:
    """Artifact versions and tags over a ``Connector`` (SQLite here, SQLAlchemy on the server)."""

    def __init__(self, connector: Connector):
        self.connector = connector

    def add_version(self, name: str, digest: str, size: int, kind: str, filename: str,
                    metadata: dict[str, Any], lineage: Lineage) -> ArtifactVersion:
        """Record a stored blob as the next version of ``name``."""
        check_name(name)
        if kind not in KINDS:
            raise ConfigurationError(f"artifact kind {kind!r} is not one of {KINDS}")
        if len(digest) != 64 or not set(digest) <= HEX:
            raise ConfigurationError(f"{digest!r} is not a sha256 hex digest")
        meta = json.dumps(metadata, sort_keys=True)
        now = lineage.created_at or time.time()
        with self.connector.transaction(write=True) as tx:
            tx.rows("INSERT INTO iwf_artifact_names (name, last_version, created_at, updated_at) "
                    "VALUES (:name, 0, :now, :now) ON CONFLICT (name) DO NOTHING", name=name, now=now)
            version = tx.rows("UPDATE iwf_artifact_names SET last_version = last_version + 1, updated_at = :now "
                              "WHERE name = :name RETURNING last_version", name=name, now=now)[0]["last_version"]
            values = {k: getattr(lineage, k) for k in _LINEAGE}
            values.update(name=name, version=version, digest=digest, size=size, kind=kind, filename=filename,
                          meta=meta, created_at=now)
            tx.rows(f"INSERT INTO iwf_artifact_versions ({', '.join(_COLUMNS)}) "
                    f"VALUES ({', '.join(':' + c for c in _COLUMNS)})", **values)
        return self.get(name, version)

    def _resolve(self, tx: Transaction, name: str, ref: str | int | None) -> dict[str, Any]:
        select = f"SELECT {', '.join(_COLUMNS)} FROM iwf_artifact_versions WHERE name = :name"
        if not tx.rows("SELECT name FROM iwf_artifact_names WHERE name = :name", name=name):
            raise ArtifactNotFound(f"no artifact named {name!r}: save one with iworkflow.artifacts.save({name!r}, ...)")
        if ref is None or ref == "latest":
            rows = tx.rows(select + " ORDER BY version DESC LIMIT 1", name=name)
            what = "latest version"
        elif isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            rows = tx.rows(select + " AND version = :version", name=name, version=int(ref))
            what = f"version {int(ref)}"
        elif isinstance(ref, str) and len(ref) >= MIN_DIGEST_PREFIX and set(ref) <= HEX:
            rows = tx.rows(select + " AND digest LIKE :prefix ORDER BY version DESC", name=name, prefix=ref + "%")
            if len({r["digest"] for r in rows}) > 1:
                raise ArtifactNotFound(f"digest prefix {ref!r} matches several versions of {name!r}: give more of it")
            what = f"version with digest {ref}"
        elif isinstance(ref, str):
            rows = tx.rows(select + " AND version = (SELECT version FROM iwf_artifact_tags WHERE name = :name "
                                    "AND tag = :tag)", name=name, tag=check_tag(ref))
            what = f"version tagged {ref!r}"
        else:
            raise ConfigurationError(f"artifact version {ref!r} must be 'latest', a number, a digest or a tag")
        if not rows:
            raise ArtifactNotFound(f"artifact {name!r} has no {what}; `iworkflow artifacts list {name}` lists its "
                                   "versions and tags")
        return rows[0]

    def _tags_of(self, tx: Transaction, name: str) -> dict[str, int]:
        rows = tx.rows("SELECT tag, version FROM iwf_artifact_tags WHERE name = :name ORDER BY tag", name=name)
        return {r["tag"]: int(r["version"]) for r in rows}

    def get(self, name: str, ref: str | int | None = "latest") -> ArtifactVersion:
        """The version ``ref`` names: "latest", a number, a digest (or a prefix of 8+ hex digits) or a tag."""
        check_name(name)
        with self.connector.transaction(write=False) as tx:
            row = self._resolve(tx, name, ref)
            tags = self._tags_of(tx, name)
        return _version(row, tuple(t for t, v in tags.items() if v == row["version"]))

    def versions(self, name: str) -> list[ArtifactVersion]:
        """Every version of ``name``, oldest first."""
        check_name(name)
        with self.connector.transaction(write=False) as tx:
            if not tx.rows("SELECT name FROM iwf_artifact_names WHERE name = :name", name=name):
                raise ArtifactNotFound(f"no artifact named {name!r}")
            rows = tx.rows(f"SELECT {', '.join(_COLUMNS)} FROM iwf_artifact_versions WHERE name = :name "
                           "ORDER BY version", name=name)
            tags = self._tags_of(tx, name)
        return [_version(r, tuple(t for t, v in tags.items() if v == r["version"])) for r in rows]

    def names(self) -> list[ArtifactName]:
        """Every artifact name, most recently saved first."""
        with self.connector.transaction(write=False) as tx:
            rows = tx.rows("SELECT n.name AS name, n.updated_at AS updated_at, MAX(v.version) AS latest, "
                           "COUNT(v.version) AS versions FROM iwf_artifact_names n JOIN iwf_artifact_versions v "
                           "ON v.name = n.name GROUP BY n.name, n.updated_at ORDER BY n.updated_at DESC, n.name")
            tags: dict[str, dict[str, int]] = {}
            for r in tx.rows("SELECT name, tag, version FROM iwf_artifact_tags ORDER BY tag"):
                tags.setdefault(r["name"], {})[r["tag"]] = int(r["version"])
        return [ArtifactName(name=r["name"], latest=int(r["latest"]), versions=int(r["versions"]),
                             updated_at=float(r["updated_at"]), tags=tags.get(r["name"], {})) for r in rows]

    def promote(self, name: str, ref: str | int, tag: str) -> ArtifactVersion:
        """Point ``tag`` at the version ``ref`` names (moving it from wherever it was)."""
        check_name(name)
        check_tag(tag)
        with self.connector.transaction(write=True) as tx:
            version = int(self._resolve(tx, name, ref)["version"])
            tx.rows("INSERT INTO iwf_artifact_tags (name, tag, version, updated_at) VALUES (:name, :tag, :version, "
                    ":now) ON CONFLICT (name, tag) DO UPDATE SET version = excluded.version, "
                    "updated_at = excluded.updated_at", name=name, tag=tag, version=version, now=time.time())
        return self.get(name, version)
