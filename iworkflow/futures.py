"""A Future per job, made only when asked for, and ``as_completed`` over a work's results.

A work keeps one compact record per finished job (its ``Outcome``) and nothing per pending one, so a
million-job fan-out stays cheap.  ``futures()`` turns its jobs into ``concurrent.futures.Future`` objects on
demand: ``concurrent.futures.wait``/``as_completed`` accept them, mixed with any other executor's.
"""
from __future__ import annotations

import concurrent.futures
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError
from .ids import get_unique_id_for_dict

if TYPE_CHECKING:
    from .asyncresult import AsyncResult, Outcome


class JobFuture(concurrent.futures.Future):
    """One job's Future: running from the start (the job is submitted), done when its result lands.

    ``args`` is the job's kwargs entry (what ``get_result(args=...)`` takes), ``key`` its job key.  To stop
    jobs, cancel their work (``Work.cancel()``); this Future's ``cancel()`` returns False, as for any running one.
    """

    def __init__(self, key: str, args: Any):
        super().__init__()
        self.key = key
        self.args = args
        self.set_running_or_notify_cancel()

    def complete(self, outcome: "Outcome") -> None:
        """Set the job's value or (rebuilt) exception."""
        if outcome.ok:
            self.set_result(outcome.value)
        else:
            assert outcome.error is not None
            self.set_exception(outcome.error.to_exception())

    def __repr__(self) -> str:
        return f"<JobFuture {self.key[:12]} state={self._state}>"


class JobFutures(Sequence[JobFuture]):
    """A work's job futures in submission order; ``get(args=...)`` finds one as ``get_result(args=...)`` does."""

    def __init__(self, futures: dict[str, JobFuture]):
        self._futures = futures
        self._order = list(futures.values())
        self._by_args: dict[str, str] | None = None

    def __getitem__(self, index):  # type: ignore[override]
        return self._order[index]

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[JobFuture]:
        return iter(self._order)

    def keys(self) -> list[str]:
        return list(self._futures)

    def get(self, args: Any = None, key: str | None = None) -> JobFuture:
        """The future of the job with this kwargs entry (or job ``key``); ``LookupError`` if there is none."""
        if key is None and args is None:
            raise ConfigurationError("give args= (the job's kwargs entry) or key= to find a job's future")
        if key is None:
            if self._by_args is None:
                self._by_args = {get_unique_id_for_dict(f.args): k for k, f in self._futures.items()}
            key = self._by_args.get(get_unique_id_for_dict(args), get_unique_id_for_dict(args))
        found = self._futures.get(key)
        if found is None:
            what = f"key {key!r}" if args is None else f"args {args!r}"
            raise LookupError(f"no job with {what} among these {len(self)} futures; look up with the exact "
                              "kwargs entry the work was called with")
        return found


def _result_source(results: Any) -> "AsyncResult":
    from .asyncresult import AsyncResult

    if isinstance(results, AsyncResult):
        return results
    source = getattr(results, "async_result", None)
    if isinstance(source, AsyncResult):
        return source
    raise ConfigurationError(
        f"as_completed() takes a submitted Work, its AsyncResult or job futures, got {type(results).__name__}; "
        "create the work with return_work=True and call submit() first")


def as_completed(results: Any, timeout: float | None = None) -> Iterator[tuple[Any, Any]]:
    """Yield ``(args, value_or_exception)`` for each job of a work as it finishes, in completion order.

    ``results``: a submitted ``Work``, its ``AsyncResult``, or an iterable of job futures.  A failed job yields
    its exception (not raised).  Raises ``TimeoutError`` if jobs are still missing ``timeout`` seconds on."""
    if isinstance(results, Iterable) and not hasattr(results, "completed"):
        futures = list(results)
        if all(isinstance(f, JobFuture) for f in futures):
            for future in concurrent.futures.as_completed(futures, timeout=timeout):
                exc = future.exception()
                yield future.args, (exc if exc is not None else future.result())
            return
    for outcome, args in _result_source(results).completed(timeout=timeout):
        yield args, (outcome.value if outcome.ok else outcome.error.to_exception())
