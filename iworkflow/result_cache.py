"""Results of finished jobs kept on disk, so a re-run driver does not run completed jobs again.

A result is reused only for the same driver (workflow function name and code), the same work
function code and the same job key.  Functions are assumed to depend only on their arguments:
pass ``cache=False`` (or set ``IWORKFLOW_CACHE=off``) for ones with hidden randomness or side effects.
"""
from __future__ import annotations

import hashlib
import inspect
import logging
import marshal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

logger = logging.getLogger(__name__)

FLUSH_EVERY = 256
FLUSH_SECONDS = 0.5


def code_hash(func: Callable[..., Any]) -> str:
    """A hash of what the function does: its source when available, else its bytecode."""
    func = inspect.unwrap(func)
    h = hashlib.sha256(f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', '')}".encode())
    try:
        h.update(inspect.getsource(func).encode())
    except (OSError, TypeError):
        code = getattr(func, "__code__", None)
        h.update(marshal.dumps(code) if code is not None else repr(func).encode())
    return h.hexdigest()


class ResultCache:
    """An SQLite table ``(scope, job_key) -> pickled ResultPayload``, written in batches."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS results (scope TEXT, job_key TEXT, payload BLOB, "
                         "created REAL, PRIMARY KEY (scope, job_key))")
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
                    f"SELECT job_key, payload FROM results WHERE scope = ? AND job_key IN ({marks})", [scope, *chunk])
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
                self._db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?)", self._pending)
            self._pending.clear()
        self._last_flush = time.monotonic()

    def clear(self, scope: str | None = None) -> None:
        with self._lock:
            self._pending.clear()
            if scope is None:
                self._db.execute("DELETE FROM results")
            else:
                self._db.execute("DELETE FROM results WHERE scope = ?", (scope,))

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._db.close()
            self._db = None
