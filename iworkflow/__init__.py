"""iworkflow: run plain Python functions as distributed jobs, iDDS iWorkflow compatible."""
from __future__ import annotations

# ``work`` and ``workflow`` are the submodules themselves, callable as the decorators (callable_module.py):
# ``from iworkflow import workflow`` decorates, ``import iworkflow.workflow as m`` still gives the module.
from . import artifacts, work, workflow
from .asyncresult import AsyncResult, MapResult
from .config import Settings, load_settings
from .context import current_workflow
from .errors import (ConfigurationError, IWorkflowError, JobLostError, JobTooOld, RemoteError, SourceUnavailable,
                     WorkCancelled)
from .futures import JobFuture, JobFutures, as_completed
from .ids import get_unique_id_for_dict
from .runtime import configure, get_runtime, shutdown
from .work import Work
from .workflow import Workflow, depends_on

__version__ = "0.1.0"

__all__ = [
    "AsyncResult",
    "artifacts",
    "ConfigurationError",
    "IWorkflowError",
    "JobFuture",
    "JobFutures",
    "JobLostError",
    "JobTooOld",
    "MapResult",
    "RemoteError",
    "Settings",
    "SourceUnavailable",
    "Work",
    "WorkCancelled",
    "Workflow",
    "as_completed",
    "configure",
    "current_workflow",
    "depends_on",
    "get_runtime",
    "get_unique_id_for_dict",
    "load_settings",
    "shutdown",
    "work",
    "workflow",
]
