"""The broker executor: jobs go to ``jobs.<queue>`` on the bus; ``iworkflow worker`` processes run them."""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import Future

from iworkflow.messages import CANCEL, CONTROL_TOPIC, Control, Job, encode_bundle, jobs_destination

from .base import Executor

logger = logging.getLogger(__name__)


#: a bundle carries about this much work (by the function's measured duration), at most BUNDLE_MAX jobs
BUNDLE_SECONDS = 0.02
BUNDLE_MAX = 64
#: a fan-out is never cut into fewer messages than this, so that it still spreads over many workers
MIN_MESSAGES = 32


def bundle_size(jobs: list[Job]) -> int:
    """How many of these jobs (one work's) go in one message: 1 unless their function is known to be short."""
    expected = jobs[0].expected_seconds
    fanout = max(len(jobs), jobs[0].fanout)  # a work's chunks bundle as its whole fan-out would
    if expected is None or fanout < 2 * MIN_MESSAGES or len(jobs) < 2:
        return 1
    by_time = int(BUNDLE_SECONDS / max(expected, 1e-6))
    return max(1, min(BUNDLE_MAX, by_time, fanout // MIN_MESSAGES))


class BrokerExecutor(Executor):
    """Publishes job messages; a Future completes once the broker has confirmed its message.

    Workers publish the results themselves, so nothing here waits for a job to run.  ``address``
    (``broker://<queue>``) overrides the queue the jobs name.  Jobs of a large fan-out whose function
    has been measured to take less than ``BUNDLE_SECONDS`` travel in bundles (see ``bundle_size``;
    ``settings.bundles = "off"`` sends one message per job).
    """

    ships_source = True
    source_over_bus = True

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
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, job in enumerate(jobs):
            groups[(self.queue or job.queue, job.work_id)].append(i)
        for (queue, _work_id), indexes in groups.items():
            members = [jobs[i] for i in indexes]
            size = bundle_size(members) if self.settings.bundles_enabled else 1
            if size == 1:
                bodies = [job.data for job in members]
            else:
                first = members[0]
                bodies = [encode_bundle([job.data for job in members[k : k + size]], self.settings.secret_bytes,
                                        workflow_id=first.workflow_id or None, work_id=first.work_id,
                                        reply_to=first.reply_to)
                          for k in range(0, len(members), size)]
                logger.debug("%d jobs of work %s go in %d bundles", len(members), first.work_id, len(bodies))
            try:
                sent = self.bus.publish_many_async(jobs_destination(queue), bodies)
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

    def cancel_work(self, work_id: str, reason: str) -> None:
        """Tell every worker: drop this work's queued jobs as they come, stop its running ones."""
        self.bus.broadcast(CONTROL_TOPIC, Control(action=CANCEL, work_id=work_id, reason=reason)
                           .encode(self.settings.secret_bytes))

    def shutdown(self, wait: bool = True) -> None:
        self._closed = True
