"""AsyncResult gathers a work's results from the bus; MapResult is the keyed view of them."""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from . import context, progress, result_store, serialization
from .bus.base import Delivery
from .envelope import Envelope
from .errors import ConfigurationError, ErrorInfo, InvalidMessage, JobReportedFailure
from .failures import error_info, failure_result
from .futures import JobFuture, JobFutures
from .ids import get_unique_id_for_dict, new_id
from .messages import Control, JobMetrics, ResultPayload, encode_payload, load_payload
from .runtime import get_runtime

if TYPE_CHECKING:
    from .work import Work

#: called with each job's outcome as it lands, and the raw result message it came in (None if none)
OutcomeCallback = Callable[["Outcome", "bytes | None"], None]
ControlHandler = Callable[[Control], None]

logger = logging.getLogger(__name__)

FINISHED, SUBFINISHED, FAILED = "finished", "subfinished", "failed"


def _produced_by(work_id: str | None, value: Any) -> Any:
    """Tell the current workflow that ``value`` came from this work, so passing it on draws the DAG edge."""
    wf = context.current_workflow()
    if work_id and wf is not None and hasattr(wf, "note_result"):
        wf.note_result(value, work_id)
    return value


@dataclass
class Outcome:
    """The terminal state of one job as the caller sees it."""

    key: str
    ok: bool
    value: Any = None
    error: ErrorInfo | None = None
    metrics: JobMetrics = field(default_factory=JobMetrics)
    cached: bool = False

    def details(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "status": FINISHED if self.ok else FAILED,
            "cached": self.cached,
            "error": self.error.summary() if self.error else None,
            "traceback": self.error.traceback if self.error else None,
            "metrics": {"start_time": m.start, "end_time": m.end, "duration": m.duration,
                        "worker": m.worker, "attempts": m.attempt},
        }

    def unwrap(self) -> Any:
        if self.ok:
            return self.value
        assert self.error is not None
        raise self.error.to_exception()


class MapResult:
    """Results of a fan-out, looked up by the job's kwargs entry (``args``) or its ``key``.

    As in iDDS, ``get_result`` returns ``None`` for a job that failed or has no result, so retry loops can
    test for ``None``.  Nothing is hidden: ``get_result(..., with_details=True)`` gives ``(value, details)``
    with the error and traceback, ``get_failures()`` lists the failed jobs, and ``result(...)`` returns the
    value or raises the job's own exception (``LookupError`` for a job this MapResult does not hold).
    """

    def __init__(self):
        self._entries: dict[str, dict[str, Any]] = {}
        self._by_args: dict[str, str] = {}
        self._named: dict[str, str] = {}
        self._work_id: str | None = None

    # --- keys ------------------------------------------------------------------------------
    def _new_key(self, name: str | None, args: Any, key: str | None) -> str:
        if key is not None:
            return key
        if args is None:
            raise ValueError("give args= (the job's kwargs entry) or key= to name a result")
        arg_id = get_unique_id_for_dict(args)
        return self._by_args.get(arg_id, arg_id)

    def _find(self, name: str | None, args: Any, key: str | None) -> str | None:
        """The key of the entry a lookup names, or None.  iDDS ``name:key`` keys are understood too."""
        if key is not None:
            if key in self._entries:
                return key
            if key in self._named:
                return self._named[key]
            plain = key.rsplit(":", 1)[-1]
            return plain if plain in self._entries else None
        if args is None:
            raise ValueError("give args= (the job's kwargs entry) or key= to look up a result")
        arg_id = get_unique_id_for_dict(args)
        if name is not None and f"{name}:{arg_id}" in self._named:
            return self._named[f"{name}:{arg_id}"]
        found = self._by_args.get(arg_id, arg_id)
        return found if found in self._entries else None

    def _describe(self, name: str | None, args: Any, key: str | None) -> str:
        what = f"key {key!r}" if key is not None else f"args {args!r}"
        return (f"no result for {what} in this MapResult ({len(self._entries)} jobs); "
                "look up with the exact kwargs entry")

    # --- filling ---------------------------------------------------------------------------
    def add_result(self, name=None, args=None, key=None, result=None, details=None) -> None:
        """Record a job's value (as iDDS); ``details`` default to a finished job's."""
        key = self._new_key(name, args, key)
        if args is not None:
            self._by_args[get_unique_id_for_dict(args)] = key
        if name is not None:
            self._named[f"{name}:{key}"] = key
        self._entries[key] = {"name": name, "args": args, "result": result,
                              "details": details or {"status": FINISHED}}

    def set_result(self, name=None, args=None, key=None, value=None, verbose=False, details=None) -> None:
        """Set the value of one job (iDDS signature); ``verbose=True`` logs it."""
        if verbose:
            logger.info("set_result: name %s, args %s, key %s, value %r", name, args, key, value)
        self.add_result(name=name, args=args, key=key, result=value, details=details)

    def set_from_dict_results(self, results: dict[str, Any]) -> None:
        """Load what ``get_dict_results()`` returned (iDDS)."""
        self._entries.clear()
        self._by_args.clear()
        self._named.clear()
        for key, value in (results.get("results") or {}).items():
            self.add_result(key=key, result=value)
        for name_key, value in (results.get("name_results") or {}).items():
            name, _, key = name_key.rpartition(":")
            if key not in self._entries:
                self.add_result(name=name or None, key=key, result=value)
            elif name:
                self._named[name_key] = key

    # --- reading ---------------------------------------------------------------------------
    def has_result(self, name=None, args=None, key=None) -> bool:
        """True when the job finished successfully (a failed job has details but no result)."""
        k = self._find(name, args, key)
        return k is not None and self._entries[k]["details"].get("status") == FINISHED

    def get_result(self, name=None, args=None, key=None, verbose=False, with_details=False):
        """The job's value, or ``None`` when it failed or is not here (iDDS semantics).

        ``with_details=True`` returns ``(value_or_None, details)``: ``status`` (finished, failed or missing),
        ``error``, ``traceback``, ``metrics`` (start/end time, worker, attempts) and ``cached``.
        ``verbose=True`` logs the lookup at INFO, as iDDS does.  To have a failure raised, use ``result()``.
        """
        k = self._find(name, args, key)
        entry = self._entries.get(k) if k is not None else None
        if verbose:
            logger.info("get_result: name %s, args %s, key %s -> job %s, status %s", name, args, key, k,
                        entry["details"].get("status") if entry else "missing")
        if with_details:
            if entry is None:
                return None, {"status": "missing", "cached": False, "error": self._describe(name, args, key),
                              "traceback": None, "metrics": None}
            return entry["result"], entry["details"]
        return entry["result"] if entry is not None else None

    def result(self, name=None, args=None, key=None):
        """The job's value; raises the job's own exception if it failed, ``LookupError`` if it is not here."""
        k = self._find(name, args, key)
        if k is None:
            raise LookupError(self._describe(name, args, key))
        entry = self._entries[k]
        outcome: Outcome | None = entry.get("outcome")
        if outcome is not None:
            return outcome.unwrap()
        details = entry["details"]
        if details.get("status") == FAILED:
            from .errors import RemoteError

            raise RemoteError("job failure", str(details.get("error")), details.get("traceback") or "")
        return entry["result"]

    def get_all_results(self) -> dict[str, Any]:
        """``{job key: value}`` of the successful jobs, in submission order (iDDS returns this dict)."""
        return _produced_by(getattr(self, "_work_id", None),
                            {k: e["result"] for k, e in self._entries.items() if e["details"].get("status") == FINISHED})

    def get_dict_results(self) -> dict[str, dict[str, Any]]:
        """iDDS's shape: ``{'results': {key: value}, 'name_results': {'name:key': value}}``, successful jobs."""
        results = self.get_all_results()
        named = {name_key: results[k] for name_key, k in self._named.items() if k in results}
        return {"results": results, "name_results": named}

    def get_failures(self) -> dict[str, dict[str, Any]]:
        """``{job key: details}`` of the failed jobs (status, error, traceback, metrics)."""
        return {k: e["details"] for k, e in self._entries.items() if e["details"].get("status") == FAILED}

    def items(self) -> Iterable[tuple[Any, Any]]:
        """(args, value) pairs of the successful jobs."""
        return [(e["args"], e["result"]) for e in self._entries.values() if e["details"].get("status") == FINISHED]

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, args: Any) -> bool:
        return self.has_result(args=args)

    def __str__(self) -> str:
        return str(self.get_all_results())

    def __repr__(self) -> str:
        failed = len(self.get_failures())
        return f"<MapResult {len(self._entries)} jobs, {failed} failed>"


class AsyncResult:
    """Collects one work's results from its results queue: ordered by job, deduplicated by job key.

    Built on a Work it gathers that work's jobs.  Built on any other context (a Workflow, as iDDS's own
    tests and ``pre_run()`` do) it is a plain results channel with a fresh ``internal_id``: ``publish()``
    on an AsyncResult with the same ``internal_id`` delivers to it, ``wait_num`` results complete it."""

    def __init__(self, work_context: "Work", name=None, wait_num=1, wait_keys=(), multi_jobs_kwargs_list=(),
                 current_job_kwargs=None, map_results=False, wait_percent=1, internal_id=None, timeout=None,
                 on_control: ControlHandler | None = None):
        self._work = work_context
        self._on_control = on_control
        is_work = hasattr(work_context, "job_keys")
        self.name = name or getattr(work_context, "name", None)
        self.internal_id = internal_id or (work_context.internal_id if is_work else new_id())
        self.map_results = map_results
        self.timeout = timeout
        self.wait_percent = wait_percent
        self.current_job_kwargs = current_job_kwargs
        entries = list(multi_jobs_kwargs_list or ())
        self._args: dict[str, Any] = dict(getattr(work_context, "job_args", {}))
        if not self._args and entries:
            self._args = {get_unique_id_for_dict(e): e for e in entries}
        self._keys: list[str] = (list(wait_keys) or list(getattr(work_context, "job_keys", []))
                                 or list(self._args))
        self._keyset = frozenset(self._keys)
        self.wait_num = max(len(self._keys), (wait_num or 1) if not self._keys else 0)
        self._multi = bool(entries) or bool(getattr(work_context, "is_multi", False))
        #: one record per finished job, in completion order; nothing is kept for a pending one
        self._outcomes: dict[str, Outcome] = {}
        self._finished: list[Outcome] = []
        self._callbacks: list[OutcomeCallback] = []
        self._futures: dict[str, JobFuture] | None = None
        #: results that arrived for a job already ended (redeliveries, retries): counted, never shown twice
        self.duplicates = 0
        #: job key -> the attempt a user's retry of its failure started; results of older attempts are stale
        self._floor: dict[str, int] = {}
        #: set once a wait ended with every result needed (iDDS's attribute)
        self.waiting_result_terminated = False
        self._cond = threading.Condition()
        self._subscribed = False
        self._inbox = None
        runtime = getattr(work_context, "runtime", None)
        self._runtime = runtime if runtime is not None else get_runtime()

    @property
    def wait_keys(self) -> set[str]:
        """The job keys this result waits for (iDDS)."""
        return set(self._keys)

    @property
    def is_stop(self) -> bool:
        """True once not (or no longer) subscribed (iDDS)."""
        return not self._subscribed

    def _workflow_id(self) -> str | None:
        wf_id = getattr(self._work, "workflow_id", None)
        return wf_id if wf_id is not None else getattr(self._work, "internal_id", None)

    # --- receiving -------------------------------------------------------------------------
    @property
    def destination(self) -> str:
        """The queue this work's results arrive on: the driver's results inbox."""
        return self._runtime.inbox.destination

    def subscribe(self, force: bool = False) -> None:
        """Start receiving (``force`` is iDDS's and changes nothing here)."""
        if not self._subscribed:
            self._inbox = self._runtime.inbox
            self._inbox.register(self.internal_id, self._on_message, self.wake)
            self._subscribed = True

    def stop(self) -> None:
        if self._subscribed:
            self._inbox.unregister(self.internal_id)
            self._subscribed = False

    def _on_message(self, env: Envelope, delivery: Delivery) -> None:
        """A verified message for this work: a job's result, or a retry instruction from the server."""
        try:
            if env.kind == "control":
                if self._on_control is not None:
                    self._on_control(Control.from_envelope(env))
                delivery.ack()
                return
            payload = load_payload(env, "result")
        except InvalidMessage as err:
            logger.error("dead-lettering an unreadable result on %s: %s", delivery.destination, err)
            delivery.reject(requeue=False)
            return
        self.deliver(env.job_key or "", payload, raw=env.body)
        delivery.ack()

    def has_outcome(self, key: str) -> bool:
        """Whether job ``key`` has ended (with a value or a failure)."""
        with self._cond:
            return key in self._outcomes

    def reopen(self, key: str, attempt: int) -> str | None:
        """Drop job ``key``'s failure so that ``attempt`` may replace it; None if done, else why it cannot be.

        Only while the work still runs (not every result in): once all are in, callers hold the outcomes.
        A future already done keeps its failure; ``futures()`` asked later gives a pending one."""
        with self._cond:
            outcome = self._outcomes.get(key)
            if outcome is None:
                return f"job {key} has not ended"
            if outcome.ok:
                return f"job {key} succeeded; only failed jobs are retried"
            if self._done():
                return ("its work had ended (every result in and handed to the caller); "
                        "resubmit the workflow to run failed jobs again")
            del self._outcomes[key]
            self._floor[key] = attempt
            if self._futures is not None and key in self._futures and self._futures[key].done():
                self._futures[key] = JobFuture(key, self._args.get(key))
            return None

    def add_outcome_callback(self, callback: OutcomeCallback) -> None:
        """Call ``callback(outcome, raw_message)`` for each job as its result lands (on the receiving thread)."""
        self._callbacks.append(callback)

    def deliver(self, key: str, payload: ResultPayload, raw: bytes | None = None, cached: bool = False) -> None:
        """Record job ``key``'s result (from the inbox, the result cache or a failed dispatch); a second
        result for the same job is counted in ``duplicates`` and otherwise ignored."""
        with self._cond:
            if key in self._outcomes or payload.metrics.attempt < self._floor.get(key, 0):
                self.duplicates += 1
                logger.debug("duplicate result for job %s ignored", key)
                return
            if self._keyset and key not in self._keyset:
                logger.warning("result for unknown job key %s on work %s ignored", key, self.internal_id)
                return
        outcome = Outcome(key, payload.ok, error=payload.error, metrics=payload.metrics, cached=cached)
        if payload.ok:
            try:
                value = payload.value
                if result_store.is_reference(value):
                    value = result_store.resolve(value, self._runtime.settings.token, self._runtime.fetch_blob)
                outcome.value = serialization.loads(value) if value is not None else None
            except Exception as exc:  # e.g. the result's class is not importable in the driver
                outcome.ok = False
                outcome.error = error_info(exc)
        with self._cond:
            if key in self._outcomes:
                self.duplicates += 1
                return
            self._outcomes[key] = outcome
            self._finished.append(outcome)
            future = self._futures.get(key) if self._futures is not None else None
            self._cond.notify_all()
        for callback in self._callbacks:  # first: a caller woken by the future finds the result cached
            try:
                callback(outcome, raw)
            except Exception:  # noqa: BLE001 - one hook's error must not lose the result for the others
                logger.exception("outcome callback %r failed for job %s", callback, key)
        if future is not None:
            future.complete(outcome)

    def publish(self, ret, name=None, key=None, force=False, ret_status=True, ret_error=None) -> None:
        """Publish a result for one of this work's jobs (what a job reports, as in iDDS).

        Without ``key``: the key of ``current_job_kwargs`` if given, the only job's key, or (for a plain
        results channel) a fresh key.  ``force`` is iDDS's (publish without a request id) and not needed here.
        """
        if key is None:
            if self.current_job_kwargs is not None:
                key = get_unique_id_for_dict(self.current_job_kwargs)
            elif len(self._keys) == 1:
                key = self._keys[0]
            elif not self._keys:
                key = new_id()
            else:
                raise ValueError("publish() needs key= when the work has more than one job")
        if ret_status:
            now = time.time()
            payload = ResultPayload(ok=True, value=serialization.dumps(ret), metrics=JobMetrics(now, now))
        else:
            payload = failure_result(JobReportedFailure(str(ret_error or "job reported failure")))
        data = encode_payload("result", payload, self._runtime.secret, workflow_id=self._workflow_id(),
                              work_id=self.internal_id, job_key=key)
        self._runtime.bus.publish(self.destination, data)

    # --- waiting ---------------------------------------------------------------------------
    def _needed(self, fraction: float | None = None) -> int:
        total = self.wait_num
        fraction = self.wait_percent if fraction is None else fraction
        if fraction and fraction < 1:
            return max(1, math.ceil(total * fraction - 1e-9))
        return total

    def _done(self) -> bool:
        return len(self._outcomes) >= self._needed()

    def _wait_for(self, count: int, deadline: float | None) -> bool:
        """(holding ``_cond``) Block until ``count`` results are in, the inbox fails (raised) or the deadline."""
        while len(self._outcomes) < count:
            error = self._inbox.error if self._subscribed else None
            if error is not None:
                raise error
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._cond.wait(remaining)
        return True

    def wait(self, timeout: float | None = None, fraction: float | None = None) -> bool:
        """Block until the results needed are in (``fraction`` of the jobs if given, else ``wait_percent``);
        False if the timeout passed first.  Results that land later are still collected."""
        if fraction is not None and not 0 < fraction <= 1:
            raise ConfigurationError(f"fraction={fraction!r}: give the share of jobs to wait for, in (0, 1]")
        timeout = self.timeout if timeout is None else timeout
        deadline = None if not timeout else time.monotonic() + timeout
        with progress.watching(self, self._runtime.settings.progress), self._cond:
            if not self._wait_for(self._needed(fraction), deadline):
                return False
        if fraction is None or fraction >= 1:
            self.waiting_result_terminated = True
        return True

    def wake(self) -> None:
        """Wake every waiter to look again (the inbox calls it when the broker ends its consumer)."""
        with self._cond:
            self._cond.notify_all()

    def completed(self, timeout: float | None = None) -> Iterator[tuple["Outcome", Any]]:
        """``(outcome, args)`` of each job in the order the jobs finished, blocking for those still running
        (a failed job retried while the work runs appears again with its new outcome)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = 0
        while True:
            with self._cond:
                while seen >= len(self._finished) and len(self._outcomes) < self.wait_num:
                    error = self._inbox.error if self._subscribed else None
                    if error is not None:
                        raise error
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        missing = self.wait_num - len(self._outcomes)
                        raise TimeoutError(f"{missing} (of {self.wait_num}) jobs of "
                                           f"{self.name or self.internal_id} unfinished after {timeout}s")
                    self._cond.wait(remaining)
                batch = self._finished[seen:]
            if not batch:
                return
            for outcome in batch:
                yield outcome, self._args.get(outcome.key)
            seen += len(batch)

    def futures(self) -> JobFutures:
        """A ``concurrent.futures.Future`` per job (made on this first call), in submission order; finished jobs'
        are done already.  ``concurrent.futures.wait``/``as_completed`` accept them."""
        with self._cond:
            if self._futures is None:
                self._futures = {}
                for key in self._keys:
                    future = self._futures[key] = JobFuture(key, self._args.get(key))
                    outcome = self._outcomes.get(key)
                    if outcome is not None:
                        future.complete(outcome)
            return JobFutures(self._futures)

    def wait_results(self, timeout: float | None = None, force_return_results: bool = False):
        """Wait for every job; raises TimeoutError naming what is missing, or the first job failure."""
        if not self.wait(timeout):
            if force_return_results:
                return self.get_results()
            missing = self.wait_num - len(self._outcomes)
            raise TimeoutError(
                f"work {self.name or self.internal_id}: {missing} of {self.wait_num} job results still "
                f"missing after {timeout if timeout is not None else self.timeout}s"
            )
        return self.get_results()

    wait_result = wait_results

    def get_results(self, nologs: bool = True):
        """A MapResult (map_results=True), the ordered list (fan-out), or the single value.

        ``nologs`` is iDDS's switch for its debug logs; results are never logged here."""
        with self._cond:
            outcomes = dict(self._outcomes)
        keys = self._keys or list(outcomes)
        if self.map_results:
            mr = MapResult()
            mr._work_id = self.internal_id
            for key in keys:
                o = outcomes.get(key)
                if o is not None:
                    mr.add_result(name=self.name, args=self._args.get(key), key=key,
                                  result=o.value if o.ok else None, details=o.details())
                    mr._entries[key]["outcome"] = o
            return mr
        if self._multi or (not self._keys and self.wait_num > 1):
            failed = [o for k in keys if (o := outcomes.get(k)) is not None and not o.ok]
            if failed:
                exc = failed[0].error.to_exception()
                if hasattr(exc, "add_note"):
                    exc.add_note(f"job {failed[0].key} failed ({len(failed)} of {len(keys)} jobs failed); "
                                 "use map_results=True to keep the other results")
                raise exc
            return _produced_by(self.internal_id, [outcomes[k].value if k in outcomes else None for k in keys])
        if not keys or keys[0] not in outcomes:
            return None
        return outcomes[keys[0]].unwrap()

    # --- status ----------------------------------------------------------------------------
    @property
    def results(self):
        return self.get_results()

    @property
    def outcomes(self) -> dict[str, Outcome]:
        with self._cond:
            return dict(self._outcomes)

    @property
    def done_count(self) -> int:
        """How many jobs have ended (with a value or a failure)."""
        return len(self._outcomes)

    def get_results_percentage(self) -> float:
        return len(self._outcomes) / self.wait_num if self.wait_num else 1.0

    @property
    def is_all_results_available(self) -> bool:
        """Every result needed is in (``wait_percent`` of ``wait_num``); outcomes hold only this work's keys."""
        return self._done()

    def _failed_count(self) -> int:
        return sum(1 for o in self.outcomes.values() if not o.ok)

    @property
    def is_terminated(self) -> bool:
        return self.is_all_results_available

    @property
    def is_finished(self) -> bool:
        return self.is_all_results_available and self._failed_count() == 0

    @property
    def is_subfinished(self) -> bool:
        n = self._failed_count()
        return self.is_all_results_available and 0 < n < len(self._outcomes)

    @property
    def is_failed(self) -> bool:
        n = self._failed_count()
        return self.is_all_results_available and n > 0 and n == len(self._outcomes)

    def is_ok(self) -> bool:
        """Whether results reach this driver: publish a probe value and read it back (iDDS's health check).

        The probe travels on its own channel (a fresh ``internal_id``), never among this work's results."""
        channel = SimpleNamespace(runtime=self._runtime, name=f"{self.name or self.internal_id} probe")
        probe = AsyncResult(channel, wait_num=1, timeout=self.timeout or 30)
        try:
            probe.subscribe()
            token = new_id()
            probe.publish(token)
            return probe.wait_results(force_return_results=True) == token
        except Exception as err:  # noqa: BLE001 - a health check reports, it does not raise
            logger.error("the results path of %s does not work: %s", self.name or self.internal_id, err)
            return False
        finally:
            probe.stop()
