"""Process trees of runner processes: what a job starts ends with the job.

A runner process makes itself a *child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``), so a daemon that a
job double-forks (or starts in a new session) is re-parented to the runner instead of init; after every job
the runner ends whatever is left below it (:func:`kill_children`: SIGTERM, a moment, SIGKILL).  Whoever kills a runner kills its whole
tree (:func:`kill_tree`), not only its process group.  Elsewhere (no ``/proc``) only process groups are used.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import time

logger = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
#: rounds of kill-and-reap after a job: each round catches the grandchildren re-parented by the last
KILL_ROUNDS = 20
#: what a job left running gets SIGTERM first, and this long to end before SIGKILL
TERM_GRACE = 1.0


def become_subreaper() -> bool:
    """Adopt this process's orphaned descendants (Linux only); False where the kernel cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def has_children() -> bool:
    """Whether this process has any child, running or exited (one system call: cheap after every job)."""
    if not hasattr(os, "waitid"):
        return False
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (from ``/proc/<pid>/task/*/children``; empty where unavailable)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                found.extend(int(p) for p in fh.read().split())
        except (OSError, ValueError):
            continue
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        below = children(todo.pop())
        out.extend(below)
        todo.extend(below)
    return out


def _signal(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_children(grace: float = TERM_GRACE) -> int:
    """(In a runner, between jobs) End every descendant of this process: SIGTERM, then SIGKILL what is left after
    ``grace`` seconds (a helper finishing on its own, such as a container runtime's monitor, gets to finish);
    reaps them.  Returns how many there were."""
    me = os.getpid()
    below = descendants(me)
    if not below:
        _reap()
        return 0
    killed = set(below)
    for pid in below:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap()
        if not descendants(me):
            return len(killed)
        time.sleep(0.02)
    for _ in range(KILL_ROUNDS):
        below = descendants(me)
        if not below:
            break
        for pid in below:
            _signal(pid, signal.SIGKILL)
        killed.update(below)
        _reap()
    _reap()
    return len(killed)


def _reap() -> None:
    """Collect the exit status of finished children (zombies), never blocking."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_tree(pid: int) -> list[int]:
    """SIGKILL a runner process, its process group and every descendant found under it; returns their pids."""
    below = descendants(pid)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    _signal(pid)
    for child in below:
        _signal(child)
    return [pid, *below]


def wait_gone(pids: list[int], timeout: float) -> bool:
    """Wait until none of these processes exists any more (killed and reaped); False if some outlive ``timeout``."""
    deadline = time.monotonic() + timeout
    while any(os.path.exists(f"/proc/{pid}") for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
