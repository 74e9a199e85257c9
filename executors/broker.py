"""The broker executor: jobs go to ``jobs.<queue>`` on the bus; ``iworkflow worker`` processes run them."""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import Future

from iworkflow.messages import Job, jobs_destination

from .base import Executor

logger = logging.getLogger(__name__)


class BrokerExecutor(Executor):
    """Publishes job messages; a Future completes once the broker has confirmed its message.

    Workers publish the results themselves, so nothing here waits for a job to run.  ``address``
    (``broker://<queue>``) overrides the queue the jobs name.
    """

    ships_source = True

    def __init__(self, settings, bus, address: str | None = None):
        super().__init__(settings, bus, address)
        self.queue = address or None
        self._closed = False

    def submit(self, job: Job) -> Future:
        return self.submit_many([job])[0]

    def submit_many(self, jobs: Iterable[Job]) -> list[Future]:
        if self._closed:
            raise RuntimeError("cannot submit: the broker executor has been shut down")
        jobs = list(jobs)
        futures = [Future() for _ in jobs]
        for future in futures:  # handed to the broker: no longer cancellable here, as before the confirm
            future.set_running_or_notify_cancel()
        by_queue: dict[str, list[int]] = defaultdict(list)
        for i, job in enumerate(jobs):
            by_queue[self.queue or job.queue].append(i)
        for queue, indexes in by_queue.items():
            try:
                sent = self.bus.publish_many_async(jobs_destination(queue), [jobs[i].data for i in indexes])
            except Exception as err:  # noqa: BLE001 - the Work turns a failed Future into a failure result
                sent = Future()
                sent.set_exception(err)
            sent.add_done_callback(lambda f, q=queue, ix=indexes: self._confirmed(f, q, [futures[i] for i in ix]))
        return futures

    @staticmethod
    def _confirmed(sent: Future, queue: str, futures: list[Future]) -> None:
        """The broker has the jobs (or refused them): complete their Futures, failing them on refusal."""
        err = sent.exception()
        if err is not None:
            logger.error("could not publish %d job(s) to %s: %s", len(futures), jobs_destination(queue), err)
        for future in futures:
            if err is not None:
                future.set_exception(err)
            else:
                future.set_result(None)

    def shutdown(self, wait: bool = True) -> None:
        self._closed = True
