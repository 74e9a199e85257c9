"""The driver's progress bars: one rich bar per work while the driver waits for its results.

Shown only on a terminal (``progress = "auto"``, the default), so logs and CI stay quiet; ``"on"`` forces
them, ``"off"`` hides them.  A wait shorter than ``DELAY`` seconds never draws anything.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Protocol

from .errors import ConfigurationError

logger = logging.getLogger(__name__)

#: seconds a wait lasts before its bar appears (short waits draw nothing)
DELAY = 0.5
#: seconds between two looks at the results
POLL = 0.25
MODES = ("auto", "on", "off")


class Watched(Protocol):
    """What a bar reads: how many results are needed and the outcomes in so far (an ``AsyncResult``)."""

    name: str | None
    wait_num: int

    @property
    def outcomes(self) -> dict: ...


def enabled(mode: str, stream=None) -> bool:
    """Whether bars are drawn for this ``progress`` setting on ``stream`` (stderr by default)."""
    mode = (mode or "auto").lower()
    if mode not in MODES:
        raise ConfigurationError(f"setting progress={mode!r} must be one of {', '.join(MODES)} (IWORKFLOW_PROGRESS)")
    if mode != "auto":
        return mode == "on"
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Board:
    """One live display shared by every work being waited on; a thread redraws it from the results."""

    def __init__(self, stream=None):
        self._stream = stream
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[Watched, float, int | None]] = {}
        self._progress = None
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watching(self, result: Watched) -> Iterator[None]:
        """Show ``result``'s bar (after ``DELAY``) for as long as the ``with`` block runs."""
        key = id(result)
        with self._lock:
            fresh = key not in self._watched
            if fresh:
                self._watched[key] = (result, time.monotonic(), None)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="iworkflow-progress", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            if fresh:
                self._finish(key)

    def _finish(self, key: int) -> None:
        with self._lock:
            result, _, task = self._watched.pop(key)
            if task is not None and self._progress is not None:
                self._draw(result, task)
                self._progress.stop_task(task)
            if not self._watched and self._progress is not None:
                self._progress.stop()
                self._progress = None

    def _draw(self, result: Watched, task: int) -> None:
        outcomes = result.outcomes
        failed = sum(1 for o in outcomes.values() if not getattr(o, "ok", True))
        self._progress.update(task, completed=len(outcomes), total=max(result.wait_num, 1),
                              failed=f"[red]{failed} failed[/]" if failed else "")

    def _start_display(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(file=self._stream or sys.stderr)
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[failed]}"), TimeElapsedColumn(), console=console,
                            transient=False, auto_refresh=True, refresh_per_second=5)
        progress.start()
        return progress

    def _loop(self) -> None:
        while True:
            time.sleep(POLL)
            with self._lock:
                if not self._watched:
                    self._thread = None
                    return
                now = time.monotonic()
                for key, (result, since, task) in list(self._watched.items()):
                    if task is None and now - since >= DELAY:
                        if self._progress is None:
                            self._progress = self._start_display()
                        task = self._progress.add_task(result.name or "work", total=max(result.wait_num, 1),
                                                       failed="")
                        self._watched[key] = (result, since, task)
                    if task is not None:
                        self._draw(result, task)


_board: Board | None = None
_board_lock = threading.Lock()


def watching(result: Watched, mode: str) -> contextlib.AbstractContextManager:
    """The context a driver waits in: a progress bar for ``result`` when ``mode`` allows one here."""
    global _board
    if not enabled(mode):
        return contextlib.nullcontext()
    with _board_lock:
        if _board is None:
            _board = Board()
    return _board.watching(result)
