"""Executors run jobs somewhere and publish each job's result on the bus.

Built-ins: ``local`` (pool of runner processes, the default), ``thread``, ``broker``; others come
from the entry-point group ``iworkflow.executors``.  A spec is ``name`` or ``name://address``.
"""
from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from iworkflow.errors import ConfigurationError

from .base import Executor

if TYPE_CHECKING:
    from iworkflow.bus.base import Bus
    from iworkflow.config import Settings

__all__ = ["Executor", "create_executor", "known_executors"]

BUILTINS = {
    "local": "iworkflow.executors.local:LocalExecutor",
    "thread": "iworkflow.executors.thread:ThreadExecutor",
    "broker": "iworkflow.executors.broker:BrokerExecutor",
    "dask": "iworkflow.executors.dask:DaskExecutor",
    "ray": "iworkflow.executors.ray:RayExecutor",
    "slurm": "iworkflow.executors.slurm:SlurmExecutor",
}
GROUP = "iworkflow.executors"


def known_executors() -> dict[str, str]:
    found = dict(BUILTINS)
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def _load(target: str) -> type[Executor]:
    module_name, _, attr = target.partition(":")
    return getattr(import_module(module_name), attr)


def create_executor(spec: str, settings: "Settings", bus: "Bus") -> Executor:
    """Build the executor a spec names (``local``, ``broker``, ``dask://host:8786``...)."""
    name, _, address = spec.partition("://")
    known = known_executors()
    if name not in known:
        raise ConfigurationError(
            f"unknown executor {spec!r}; known executors: {', '.join(sorted(known))} "
            f"(third-party executors register under the entry-point group {GROUP!r})"
        )
    try:
        cls = _load(known[name])
    except ModuleNotFoundError as err:
        raise ConfigurationError(
            f"executor {name!r} needs a package that is not installed ({err.name}): "
            f"pip install 'iworkflow[{name}]'"
        ) from None
    return cls(settings=settings, bus=bus, address=address or None)
