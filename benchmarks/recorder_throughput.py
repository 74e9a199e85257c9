"""Events per second the recorder writes: one work of N jobs, each started (running heartbeat) and finished.

    python benchmarks/recorder_throughput.py [N] [postgres]   # SQLite by default; postgres: a private schema
"""
from __future__ import annotations

import sys
import tempfile
import time
import uuid
from pathlib import Path

from iworkflow.server.db import Database
from iworkflow.server.recorder import Recorder

from iworkflow.messages import Event


class _NoBus:
    url = "none://"


def events(n: int) -> list[Event]:
    wf, work = uuid.uuid4().hex, uuid.uuid4().hex
    out = [Event("workflow_started", wf, data={"name": "bench"}),
           Event("work_submitted", wf, work, data={"name": "w", "executor": "broker", "queue": "q",
                                                   "jobs": [{"key": f"k{i}", "args": {"i": i}} for i in range(n)]})]
    t = time.time()
    for i in range(n):
        out.append(Event("job_heartbeat", wf, work, f"k{i}", 1, t, {"worker": "w1", "running": True, "start": t}))
        out.append(Event("job_finished", wf, work, f"k{i}", 1, t + 1, {"worker": "w1", "start": t, "end": t + 1}))
    out.append(Event("work_finished", wf, work, data={"status": "finished"}))
    out.append(Event("workflow_finished", wf, data={"status": "finished"}))
    return out


def run(url: str, n: int) -> float:
    db = Database(url)
    recorder = Recorder(db, _NoBus(), b"x")
    batch = events(n)
    t0 = time.perf_counter()
    for i in range(0, len(batch), recorder.batch):
        recorder._write(batch[i:i + recorder.batch])
    took = time.perf_counter() - t0
    db.dispose()
    return len(batch) / took


def main(n: int = 5000, backend: str = "sqlite") -> None:
    if backend == "postgres":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from pg_schema import private_schema

        with private_schema("iwf_bench") as url:
            rate = run(url, n)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rate = run(f"sqlite:///{tmp}/bench.db", n)
    print(f"{2 * n + 4} events: {rate:,.0f} events/s ({backend}, batches of 500)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000, sys.argv[2] if len(sys.argv) > 2 else "sqlite")
