"""The helpers iDDS iWorkflow code imports next to the decorators (``idds.iworkflow.utils`` and the few
``idds.common.utils`` functions its users call)."""
from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

from .ids import get_unique_id_for_dict

__all__ = ["get_unique_id_for_dict", "json_dumps", "json_loads", "perform_workflow", "setup_logging",
           "show_relation_map"]


def perform_workflow(workflow) -> Any:
    """Load a stored workflow's context and run it here (iDDS); returns the driver's value."""
    workflow.load()
    return workflow.run()


def show_relation_map(relation_map: list, level: int = 0) -> None:
    """Print a relation map of works (iDDS's format: dicts with ``work`` and ``next_works``) as a tree."""
    prefix = " " * level * 4
    for item in relation_map:
        if isinstance(item, dict):
            print(f"{prefix}{item['work']['workload_id']}")
            show_relation_map(item.get("next_works") or [], level=level + 1)
        elif isinstance(item, list):
            print(f"{prefix}subworkflow:")
            show_relation_map(item, level=level + 1)


def setup_logging(name: str | None = None, stream=None, loglevel: str | int | None = None) -> None:
    """Configure the root logger as iDDS's ``setup_logging`` does (``IDDS_LOG_LEVEL``, ``IDDS_LOG_FILE``)."""
    level = loglevel or os.environ.get("IDDS_LOG_LEVEL") or logging.INFO
    if isinstance(level, str):
        level = getattr(logging, level.upper(), logging.INFO)
    fmt = "%(asctime)s\t%(threadName)s\t%(name)s\t%(levelname)s\t%(message)s"
    log_file = os.environ.get("IDDS_LOG_FILE") if stream is None else None
    if log_file:
        logging.basicConfig(filename=log_file, level=level, format=fmt)
    else:
        logging.basicConfig(stream=stream or sys.stdout, level=level, format=fmt)


def _encode(obj: Any) -> Any:
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def json_dumps(obj: Any, indent: int | None = None, sort_keys: bool = False) -> str:
    """JSON of plain data and of Workflow/Work objects (their ``to_dict()``)."""
    return json.dumps(obj, indent=indent, sort_keys=sort_keys, default=_encode)


def json_loads(text: str) -> Any:
    """Parse JSON; a Workflow/Work comes back as its description dict, not as a live object."""
    return json.loads(text)
