"""Which workflow is current: work calls inside a running workflow belong to it."""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .workflow import Workflow

_current: contextvars.ContextVar["Workflow | None"] = contextvars.ContextVar("iworkflow_current", default=None)
_stack: list["Workflow"] = []


def current_workflow() -> "Workflow | None":
    """The innermost running workflow of this context (or of the process, for threads it started)."""
    wf = _current.get()
    if wf is None and _stack:
        return _stack[-1]
    return wf


def push(wf: "Workflow") -> contextvars.Token:
    _stack.append(wf)
    return _current.set(wf)


def pop(wf: "Workflow", token: contextvars.Token) -> None:
    _current.reset(token)
    if wf in _stack:
        _stack.remove(wf)


_declared: contextvars.ContextVar[tuple] = contextvars.ContextVar("iworkflow_depends_on", default=())


def declared_sources() -> tuple:
    """What the enclosing ``depends_on`` blocks name as the sources of the works called in them."""
    return _declared.get()


@contextlib.contextmanager
def declaring(sources: tuple) -> Iterator[None]:
    token = _declared.set(_declared.get() + tuple(sources))
    try:
        yield
    finally:
        _declared.reset(token)
