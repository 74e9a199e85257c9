"""cloudpickle-based serialization of functions, arguments and results.

Functions from the user's own modules are shipped by value, so workers never re-import (and
re-run the top level of) the driver's modules just to find a function.
"""
from __future__ import annotations

import json
import os
import sys
import sysconfig
import types
from typing import Any

import cloudpickle

PROTOCOL = 5
LIBRARY_ROOTS = tuple(
    os.path.realpath(p)
    for p in {sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    if p
)
_by_value: set[str] = set()


def dumps(obj: Any) -> bytes:
    return cloudpickle.dumps(obj, protocol=PROTOCOL)


def loads(data: bytes) -> Any:
    return cloudpickle.loads(data)


def jsonable(value: Any) -> Any:
    """The value itself when JSON can hold it, else its (shortened) repr: for events and stored records."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)[:200]


def is_user_module(module: types.ModuleType) -> bool:
    """A module of the user's own code: not the standard library, an installed package, iworkflow or cloudpickle."""
    path = getattr(module, "__file__", None)
    if not path or module.__name__ in ("__main__", "__mp_main__"):
        return False
    real = os.path.realpath(path)
    if any(real.startswith(root + os.sep) for root in LIBRARY_ROOTS):
        return False
    return not module.__name__.startswith(("iworkflow", "cloudpickle"))


def dumps_function(func: Any) -> bytes:
    """Pickle a job's function by value when it lives in the user's own code (not an installed library)."""
    module = sys.modules.get(getattr(func, "__module__", None) or "")
    if module is not None and module.__name__ not in _by_value and is_user_module(module):
        cloudpickle.register_pickle_by_value(module)
        _by_value.add(module.__name__)
    return dumps(func)


def describe_unpicklable(name: str, value: Any, err: Exception) -> str:
    return (
        f"argument {name!r} of type {type(value).__name__} cannot be serialized ({err}); "
        "pass data that cloudpickle can serialize (for example the path of a file, or plain arrays) "
        "and open handles, sockets or locks inside the job instead"
    )
