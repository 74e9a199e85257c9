"""Which source tree a long-lived process's imports resolve to: exactly the one of the job it runs.

A runner process (local pool, broker worker, Dask or Ray worker) serves jobs of many workflow runs.
Each job names its source tree by digest; before it runs, that tree is the only unpacked tree on
``sys.path``, and no module imported from another version is left in ``sys.modules``:

- modules loaded from the previous tree's directory are dropped, and the directory leaves ``sys.path``
  (so ``sys.path`` never grows with versions);
- user modules (not from the standard library or installed packages) whose top-level name the new tree
  provides are dropped too, so a module imported earlier from elsewhere cannot shadow the tree's own;
- ``generation`` changes, so function caches keyed by it never serve a function bound to old modules.

Jobs of different versions never overlap in one process: a job waits until the running jobs of
another version have finished.  A job without a tree (a work called outside a workflow) switches the
process back to no tree when nothing else is running, and otherwise runs beside the active one.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import threading
from typing import Iterator

from .messages import SourceRef
from .serialization import LIBRARY_ROOTS, is_user_module

logger = logging.getLogger(__name__)

_cond = threading.Condition()
_active: tuple[str, str] | None = None  # (digest, directory on sys.path)
_running = 0
_generation = 0


def generation() -> int:
    """Changes whenever the active tree does: a key for caches of objects loaded under one version."""
    return _generation


def active_path() -> str | None:
    """The unpacked tree now on ``sys.path`` (None when no job's tree is active)."""
    return _active[1] if _active is not None else None


def _unpacked(ref: SourceRef) -> str:
    from .source_shipping import unpacked

    return str(unpacked(ref))


def _locations(module) -> list[str]:
    file = getattr(module, "__file__", None)
    if file:
        return [file]
    return [p for p in (getattr(module, "__path__", None) or []) if isinstance(p, str)]


def _top_level_names(path: str) -> set[str]:
    """Module and package names a tree provides at its top (``x.py``, ``x/``, ``x.cpython-311-....so``)."""
    names = set()
    for entry in os.listdir(path):
        full = os.path.join(path, entry)
        if os.path.isdir(full):
            names.add(entry)
        elif entry.endswith((".py", ".pyc", ".so", ".pyd")):
            names.add(entry.split(".", 1)[0])
    return names


def _is_users(module) -> bool:
    """User code, counting namespace packages (no ``__file__``) by where their folders are."""
    if getattr(module, "__file__", None):
        return is_user_module(module)
    paths = _locations(module)
    return bool(paths) and not module.__name__.startswith("iworkflow") and not any(
        os.path.realpath(p).startswith(root + os.sep) for p in paths for root in LIBRARY_ROOTS)


def _purge(should_go) -> list[str]:
    gone = [name for name, module in list(sys.modules.items())
            if module is not None and name not in ("__main__", "__mp_main__") and should_go(name, module)]
    for name in gone:
        sys.modules.pop(name, None)
    return gone


def _switch(ref: SourceRef | None) -> None:
    """(lock held, nothing running) Make ``ref``'s tree the only one importable; a fetch failure changes nothing."""
    global _active, _generation
    path = _unpacked(ref) if ref is not None else None
    if _active is not None:
        old = _active[1]
        prefix = old.rstrip(os.sep) + os.sep
        gone = _purge(lambda _name, m: any(loc.startswith(prefix) for loc in _locations(m)))
        sys.path[:] = [p for p in sys.path if p != old]
        sys.path_importer_cache.pop(old, None)
        logger.debug("source %s left: %d modules dropped", _active[0][:12], len(gone))
    if path is not None:
        provided = _top_level_names(path)
        _purge(lambda name, m: name.partition(".")[0] in provided and _is_users(m))
        sys.path.insert(0, path)
    importlib.invalidate_caches()
    _active = (ref.digest, path) if ref is not None and path is not None else None
    _generation += 1


@contextlib.contextmanager
def using(ref: SourceRef | None) -> Iterator[None]:
    """Run the body with exactly ``ref``'s source tree importable (see the module docstring)."""
    global _running
    digest = ref.digest if ref is not None else None
    with _cond:
        if ref is None:
            if _active is not None and _running == 0:
                _switch(None)
        else:
            while _running and (_active is None or _active[0] != digest):
                _cond.wait()
            if _active is None or _active[0] != digest:
                _switch(ref)
        _running += 1
    try:
        yield
    finally:
        with _cond:
            _running -= 1
            _cond.notify_all()


def importable_elsewhere() -> list[str]:
    """``sys.path`` without the active tree: the path a child process starts from (it activates its own)."""
    path = active_path()
    return [p for p in sys.path if p and p != path]
