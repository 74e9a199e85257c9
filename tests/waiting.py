"""Wait on a condition, not a sleep: poll until a value is good, fail with the last one seen."""
from __future__ import annotations

import time
from typing import Any, Callable


def wait_until(fetch: Callable[[], Any], ok: Callable[[Any], bool] = bool, timeout: float = 20.0,
               what: str = "the condition", interval: float = 0.2) -> Any:
    """Call ``fetch`` until ``ok(value)``; returns that value, or fails naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"{what}: still {value!r} after {timeout} s"
        time.sleep(interval)
