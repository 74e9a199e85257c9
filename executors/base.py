"""The Executor interface, in the spirit of ``concurrent.futures.Executor``."""
from __future__ import annotations

from abc import ABC, abstractmethod
from concurrent.futures import Future
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from iworkflow.bus.base import Bus
    from iworkflow.config import Settings
    from iworkflow.messages import Job


class Executor(ABC):
    """Runs jobs and makes sure each ends with a result message on the bus.

    ``submit`` returns a Future that completes when the job's result has been published (or, for
    executors whose workers publish results themselves, when the job was handed over).  A Future
    that fails means the executor could not take the job; the caller then publishes the failure.
    Cancelling a Future drops a job that has not started.
    """

    #: whether jobs run in other processes, each with the snapshot of the workflow's source tree its run
    #: packed (False: jobs run inside the driver, with the modules it has imported)
    ships_source: bool = True
    #: whether the workers fetch a job's source tree over the bus from its driver when they do not have it
    #: (the job header then names the driver's blobs queue: ``iworkflow.blob_transfer``)
    source_over_bus: bool = False

    def __init__(self, settings: "Settings", bus: "Bus", address: str | None = None):
        self.settings = settings
        self.bus = bus
        self.address = address

    @abstractmethod
    def submit(self, job: "Job") -> Future: ...

    def submit_many(self, jobs: Iterable["Job"]) -> list[Future]:
        return [self.submit(job) for job in jobs]

    def cancel_work(self, work_id: str, reason: str) -> None:
        """Stop this work's jobs the executor holds elsewhere (a broker's workers); each ends with a failure
        result saying why.  Jobs not started are dropped through their Futures by the caller."""

    @abstractmethod
    def shutdown(self, wait: bool = True) -> None:
        """Release the executor; ``wait=False`` (a driver exiting with jobs outstanding) drops the queued jobs
        and stops the running ones within seconds instead of letting them finish."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown(wait=True)
