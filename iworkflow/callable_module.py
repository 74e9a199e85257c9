"""Modules that can be called: ``iworkflow.workflow`` is both a module and the ``@workflow`` decorator.

iDDS users write ``from idds.iworkflow.workflow import workflow``; ours also write ``from iworkflow import
workflow``.  If the package rebound its ``workflow`` attribute to the decorator, ``import iworkflow.workflow
as m`` would hand out the function instead of the module.  Instead the module itself is callable and
forwards calls to the function of the same name, so both spellings hold.
"""
from __future__ import annotations

import importlib
import inspect
import sys
import types
from typing import Any


class CallableModule(types.ModuleType):
    """A module whose calls go to its function of the same name (``__call_target__``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__call_target__(*args, **kwargs)

    def __reduce__(self):
        # pickled by name, as (cloud)pickle does plain modules: a driver shipped by value may refer to `work`
        return importlib.import_module, (self.__name__,)


def make_callable(module_name: str, target: Any) -> None:
    """Let calling module ``module_name`` call ``target``; ``inspect.signature`` shows the target's."""
    module = sys.modules[module_name]
    module.__call_target__ = target  # type: ignore[attr-defined]
    module.__signature__ = inspect.signature(target)  # type: ignore[attr-defined]
    module.__class__ = CallableModule
