"""AsyncResult gathers a work's results from the bus; MapResult is the keyed view of them."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from . import result_store, serialization
from .bus.base import Delivery
from .envelope import Envelope
from .errors import ErrorInfo, InvalidMessage
from .ids import get_unique_id_for_dict
from .messages import Control, JobMetrics, ResultPayload, encode_payload, load_payload

if TYPE_CHECKING:
    from .work import Work

logger = logging.getLogger(__name__)

FINISHED, SUBFINISHED, FAILED = "finished", "subfinished", "failed"


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
    """Results of a fan-out, looked up by the job's kwargs entry (``args``), its key, and optional name."""

    def __init__(self):
        self._entries: dict[str, dict[str, Any]] = {}
        self._by_args: dict[str, str] = {}
        self._work_id: str | None = None

    def _key(self, name: str | None, args: Any, key: str | None) -> str:
        if key is not None:
            return key
        if args is None:
            raise ValueError("give args= (the job's kwargs entry) or key= to look up a result")
        arg_id = get_unique_id_for_dict(args)
        return self._by_args.get(arg_id, arg_id)

    def add_result(self, name=None, args=None, key=None, result=None, details=None) -> None:
        key = self._key(name, args, key)
        if args is not None:
            self._by_args[get_unique_id_for_dict(args)] = key
        self._entries[key] = {"name": name, "args": args, "result": result,
                              "details": details or {"status": FINISHED}}

    set_result = add_result

    def has_result(self, name=None, args=None, key=None) -> bool:
        """True when the job finished successfully (a failed job has details but no result)."""
        entry = self._entries.get(self._key(name, args, key))
        return entry is not None and entry["details"].get("status") == FINISHED

    def get_result(self, name=None, args=None, key=None, with_details=False):
        """The job's value; a failed job raises its remote exception unless ``with_details=True``.

        With ``with_details=True`` returns ``(value_or_None, details)`` and never raises for a failure.
        """
        k = self._key(name, args, key)
        entry = self._entries.get(k)
        if entry is None:
            raise KeyError(f"no job with {'key ' + repr(key) if key else 'args ' + repr(args)} in this "
                           f"MapResult ({len(self._entries)} jobs); look up with the exact kwargs entry")
        if with_details:
            return entry["result"], entry["details"]
        outcome: Outcome | None = entry.get("outcome")
        if outcome is not None and not outcome.ok:
            outcome.unwrap()
        return entry["result"]

    def get_all_results(self) -> list[Any]:
        """Values of the successful jobs, in submission order."""
        return [e["result"] for e in self._entries.values() if e["details"].get("status") == FINISHED]

    def get_dict_results(self) -> dict[str, Any]:
        """``{job key: value}`` for the successful jobs."""
        return {k: e["result"] for k, e in self._entries.items() if e["details"].get("status") == FINISHED}

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

    def __repr__(self) -> str:
        failed = len(self.get_failures())
        return f"<MapResult {len(self._entries)} jobs, {failed} failed>"


class AsyncResult:
    """Collects one work's results from its results queue: ordered by job, deduplicated by job key."""

    def __init__(self, work_context: "Work", name=None, wait_num=1, wait_keys=(), multi_jobs_kwargs_list=(),
                 map_results=False, wait_percent=1, internal_id=None, timeout=None):
        self._work = work_context
        self.name = name or getattr(work_context, "name", None)
        self.internal_id = internal_id or work_context.internal_id
        self.map_results = map_results
        self.timeout = timeout
        self.wait_percent = wait_percent
        self._keys: list[str] = list(wait_keys) or list(getattr(work_context, "job_keys", []))
        self._keyset = frozenset(self._keys)
        self._args: dict[str, Any] = dict(getattr(work_context, "job_args", {}))
        self.wait_num = max(len(self._keys), wait_num if not self._keys else 0)
        self._multi = bool(multi_jobs_kwargs_list) or bool(getattr(work_context, "is_multi", False))
        self._outcomes: dict[str, Outcome] = {}
        self._extra = 0
        #: results that arrived for a job already ended (redeliveries, retries): counted, never shown twice
        self.duplicates = 0
        self._cond = threading.Condition()
        self._subscribed = False
        self._runtime = work_context.runtime

    # --- receiving -------------------------------------------------------------------------
    @property
    def destination(self) -> str:
        """The queue this work's results arrive on: the driver's results inbox."""
        return self._runtime.inbox.destination

    def subscribe(self) -> None:
        if not self._subscribed:
            self._runtime.inbox.register(self.internal_id, self._on_message)
            self._subscribed = True

    def stop(self) -> None:
        if self._subscribed:
            self._runtime.inbox.unregister(self.internal_id)
            self._subscribed = False

    def _on_message(self, env: Envelope, delivery: Delivery) -> None:
        """A verified message for this work: a job's result, or a retry instruction from the server."""
        try:
            if env.kind == "control":
                self._work._on_control(Control.from_envelope(env))
                delivery.ack()
                return
            payload = load_payload(env, "result")
        except InvalidMessage as err:
            logger.error("dead-lettering an unreadable result on %s: %s", delivery.destination, err)
            delivery.reject(requeue=False)
            return
        self._record(env.job_key or "", payload, raw=env.body)
        delivery.ack()

    def _record(self, key: str, payload: ResultPayload, raw: bytes | None = None, cached: bool = False) -> None:
        with self._cond:
            if key in self._outcomes:
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
                    value = result_store.resolve(value, self._runtime.settings.token)
                outcome.value = serialization.loads(value) if value is not None else None
            except Exception as exc:  # e.g. the result's class is not importable in the driver
                from .runner import error_info

                outcome.ok = False
                outcome.error = error_info(exc)
        with self._cond:
            if key in self._outcomes:
                self.duplicates += 1
                return
            self._outcomes[key] = outcome
            self._cond.notify_all()
        self._work._on_outcome(outcome, raw)

    def publish(self, ret, name=None, key=None, ret_status=True, ret_error=None) -> None:
        """Publish a result for one of this work's jobs (what a job reports, as in iDDS)."""
        if key is None:
            if len(self._keys) != 1:
                raise ValueError("publish() needs key= when the work has more than one job")
            key = self._keys[0]
        error = None
        if not ret_status:
            error = ErrorInfo("iworkflow.errors.RemoteError", str(ret_error or "job reported failure"))
        payload = ResultPayload(ok=bool(ret_status), value=serialization.dumps(ret) if ret_status else None,
                                error=error, metrics=JobMetrics(time.time(), time.time()))
        data = encode_payload("result", payload, self._runtime.secret, workflow_id=self._work.workflow_id,
                              work_id=self.internal_id, job_key=key)
        self._runtime.bus.publish(self.destination, data)

    # --- waiting ---------------------------------------------------------------------------
    def _needed(self) -> int:
        total = self.wait_num
        if self.wait_percent and self.wait_percent < 1:
            return max(1, int(total * self.wait_percent + 0.999999))
        return total

    def _done(self) -> bool:
        return len(self._outcomes) >= self._needed()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the results needed are in; False if the timeout passed first."""
        timeout = self.timeout if timeout is None else timeout
        deadline = None if not timeout else time.monotonic() + timeout
        with self._cond:
            while not self._done():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                error = self._runtime.inbox.error if self._subscribed else None
                if error is not None:
                    raise error
                self._cond.wait(min(remaining, 1.0) if remaining is not None else 1.0)
        return True

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

    def get_results(self):
        """A MapResult (map_results=True), the ordered list (fan-out), or the single value."""
        with self._cond:
            outcomes = dict(self._outcomes)
        if self.map_results:
            mr = MapResult()
            mr._work_id = self.internal_id
            for key in self._keys:
                o = outcomes.get(key)
                if o is not None:
                    mr.add_result(name=self.name, args=self._args.get(key), key=key,
                                  result=o.value if o.ok else None, details=o.details())
                    mr._entries[key]["outcome"] = o
            return mr
        if self._multi:
            failed = [o for k in self._keys if (o := outcomes.get(k)) is not None and not o.ok]
            if failed:
                exc = failed[0].error.to_exception()
                if hasattr(exc, "add_note"):
                    exc.add_note(f"job {failed[0].key} failed ({len(failed)} of {len(self._keys)} jobs failed); "
                                 "use map_results=True to keep the other results")
                raise exc
            return [outcomes[k].value if k in outcomes else None for k in self._keys]
        if not self._keys or self._keys[0] not in outcomes:
            return None
        return outcomes[self._keys[0]].unwrap()

    # --- status ----------------------------------------------------------------------------
    @property
    def results(self):
        return self.get_results()

    @property
    def outcomes(self) -> dict[str, Outcome]:
        with self._cond:
            return dict(self._outcomes)

    def get_results_percentage(self) -> float:
        return len(self._outcomes) / self.wait_num if self.wait_num else 1.0

    @property
    def is_all_results_available(self) -> bool:
        """Every job has a terminal result (outcomes only ever hold this work's own keys)."""
        return bool(self._keys) and len(self._outcomes) >= len(self._keys)

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
        return self.is_all_results_available and 0 < n < len(self._keys)

    @property
    def is_failed(self) -> bool:
        return self.is_all_results_available and self._failed_count() == len(self._keys)

    def is_ok(self) -> bool:
        return self.is_finished
