"""Finished jobs' results kept on disk by call identity (``iworkflow.identity``), for a resume or a memo.

Nothing is reused unless asked for: a plain re-run of a script runs every job again.
- Every run (one driver process) records its results under its run id and each call's occurrence in the
  run, so that ``IWORKFLOW_RESUME=last`` (or ``iworkflow run --resume``) can continue a crashed run: a
  call reuses a result only if the earlier run made a call with exactly the same identity, as often.
- ``@work(cache=True)`` (or ``IWORKFLOW_CACHE=on``) memoizes across runs by call identity alone: for
  functions whose result depends only on their code, sources and arguments.
Failures are never recorded.  Older runs of a driver are pruned past ``resume_runs`` of them.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable

from .errors import ConfigurationError
from .identity import occurrence_key
from .ids import new_id

logger = logging.getLogger(__name__)

FLUSH_EVERY = 256
FLUSH_SECONDS = 0.5
#: the scope of ``cache=True`` results, shared by all runs
MEMO = "memo"


class ResultCache:
    """SQLite tables ``call_results (scope, key) -> pickled ResultPayload`` and ``runs``, written in batches."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # the former table keyed results by job key alone, which is no call identity: never trust it again
        self._db.execute("DROP TABLE IF EXISTS results")
        self._db.execute("CREATE TABLE IF NOT EXISTS call_results (scope TEXT, key TEXT, payload BLOB, "
                         "created REAL, PRIMARY KEY (scope, key))")
        self._db.execute("CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, program TEXT, started REAL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS runs_program ON runs (program, started)")
        self._pending: list[tuple[str, str, bytes, float]] = []
        self._last_flush = time.monotonic()
        self._timer: threading.Timer | None = None

    def get_many(self, scope: str, keys: Iterable[str]) -> dict[str, bytes]:
        keys = list(keys)
        found: dict[str, bytes] = {}
        with self._lock:
            if self._db is None:
                return found
            self._flush_locked()
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, payload FROM call_results WHERE scope = ? AND key IN ({marks})", [scope, *chunk])
                found.update(rows.fetchall())
        return found

    def put(self, scope: str, key: str, payload: bytes) -> None:
        with self._lock:
            self._pending.append((scope, key, payload, time.time()))
            if len(self._pending) >= FLUSH_EVERY or time.monotonic() - self._last_flush > FLUSH_SECONDS:
                self._flush_locked()
            elif self._timer is None:
                self._timer = threading.Timer(FLUSH_SECONDS, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending and self._db is not None:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR REPLACE INTO call_results VALUES (?, ?, ?, ?)", self._pending)
            self._pending.clear()
        self._last_flush = time.monotonic()

    # --- runs ------------------------------------------------------------------------------
    def last_run(self, program: str) -> str | None:
        """The most recent recorded run of this driver."""
        with self._lock:
            row = self._db.execute("SELECT id FROM runs WHERE program = ? ORDER BY started DESC LIMIT 1",
                                   (program,)).fetchone()
        return row[0] if row else None

    def has_run(self, run_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is not None

    def start_run(self, run_id: str, program: str, keep: int, protect: str | None = None) -> None:
        """Register a run, and forget the results of this driver's runs older than its ``keep`` newest."""
        with self._lock:
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute("INSERT INTO runs VALUES (?, ?, ?)", (run_id, program, time.time()))
                old = [r[0] for r in self._db.execute(
                    "SELECT id FROM runs WHERE program = ? ORDER BY started DESC LIMIT -1 OFFSET ?",
                    (program, keep)) if r[0] != protect]
                for rid in old:
                    self._db.execute("DELETE FROM call_results WHERE scope = ?", (rid,))
                    self._db.execute("DELETE FROM runs WHERE id = ?", (rid,))

    def clear(self, scope: str | None = None) -> None:
        with self._lock:
            self._pending.clear()
            if scope is None:
                self._db.execute("DELETE FROM call_results")
                self._db.execute("DELETE FROM runs")
            else:
                self._db.execute("DELETE FROM call_results WHERE scope = ?", (scope,))

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._db.close()
            self._db = None


class Run:
    """This driver process's run: numbers each call identity's occurrences, records results under them,
    and, when resuming, names the earlier run whose results exact matches may reuse."""

    def __init__(self, cache: ResultCache, program: str, resume: str = "", keep: int = 5):
        self.id = new_id()
        self.program = program
        self.recording = keep > 0
        self.resumed_from: str | None = None
        self._seen: dict[str, int] = {}
        self._missed = False
        self._lock = threading.Lock()
        if resume:
            if resume == "last":
                self.resumed_from = cache.last_run(program)
                if self.resumed_from is None:
                    logger.warning("resume=last: no earlier run of %s is recorded in %s; every job runs",
                                   program, cache.path)
            elif cache.has_run(resume):
                self.resumed_from = resume
            else:
                raise ConfigurationError(
                    f"resume={resume!r}: no such run in {cache.path}; use resume=last for the latest run of "
                    "this driver, or unset IWORKFLOW_RESUME to run everything")
            if self.resumed_from is not None:
                logger.warning("run %s resumes run %s of %s: a call reuses its result only when that run made "
                               "exactly the same call (same function, sources and arguments)",
                               self.id, self.resumed_from, program)
        if self.recording:
            cache.start_run(self.id, program, keep, protect=self.resumed_from)

    def first_miss(self) -> bool:
        """True the first time a work of this resumed run finds nothing to reuse (to explain why, once)."""
        with self._lock:
            first, self._missed = not self._missed, True
        return first

    def occurrences(self, identities: Iterable[str]) -> list[str]:
        """Record keys for these calls: each identity with the number of times it was called before."""
        keys = []
        with self._lock:
            seen = self._seen
            for identity in identities:
                n = seen.get(identity, 0)
                seen[identity] = n + 1
                keys.append(occurrence_key(identity, n))
        return keys
