"""The broker worker (``iworkflow worker``): a pure state machine (``state.py``) around a thin I/O layer
(``service.py``), as Dask splits its worker state machine from the worker's I/O."""
from __future__ import annotations

from .service import DRIVER_SUFFIX, JOBS_DONE, JOBS_HELD, Worker
from .state import JobInfo, WorkerState

__all__ = ["DRIVER_SUFFIX", "JOBS_DONE", "JOBS_HELD", "JobInfo", "Worker", "WorkerState"]
