"""The embedded default: a pool of ``python -m iworkflow.runner serve`` processes on this machine.

Jobs stream to each process over its stdin as frames; results come back on its stdout in order, so
the parent needs no per-job bookkeeping beyond a FIFO.  A dead process fails the job it was running
with an error that says so, requeues the ones queued behind it, and is replaced.  A job running past
its ``max_walltime`` has its process (and everything below it, and the containers it ran in) killed and fails
with ``TimeoutError``.
"""
from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future

from iworkflow import containers, processes
from iworkflow.errors import InvalidMessage, JobLostError, WorkCancelled
from iworkflow.events import EventBatcher
from iworkflow.failures import WORKER_NAME_ENV, failure_message
from iworkflow.messages import Job, encode_bundle, is_inbox, results_destination
from iworkflow.runner import EVENT, INVALID, JOB, QUIT, RESULT, FrameReader, write_frame

from .base import Executor

logger = logging.getLogger(__name__)

MAX_PIPELINE = 128
#: a job message up to this size may be written to an idle process's pipe directly (well under a pipe's 64 KiB)
DIRECT_WRITE_MAX = 32 * 1024
#: how late past its max_walltime a job is killed at most (the watchdog's tick), and the slack given to a
#: runner enforcing the walltime itself (an ``init_env`` subprocess), so that it need not be replaced
WALLTIME_TICK = 0.25
WALLTIME_SLACK = 0.5
#: how long a dead runner's processes may take to be gone before its job's failure is reported anyway
KILL_WAIT = 5.0


class _PoolProcess:
    """One runner process, its writer thread (stdin) and reader thread (stdout)."""

    def __init__(self, pool: "LocalExecutor", index: int):
        self.pool = pool
        self.index = index
        self.inflight: deque[tuple[Job, Future]] = deque()
        #: when each in-flight job was written to the process (parallel to ``inflight``)
        self.sent_at: deque[float] = deque()
        self.last_result_at = 0.0
        #: why this process was killed (the job it was running, and the error that job ends with), and whom
        self.killed: tuple[Job, BaseException] | None = None
        self.victims: list[int] = []
        self.outbox: queue.SimpleQueue[list[bytes] | None] = queue.SimpleQueue()
        #: held while frames go to the process's stdin (by the writer thread, or by ``_pump`` directly)
        self.write_lock = threading.Lock()
        env = dict(os.environ)
        env["IWORKFLOW_SECRET"] = pool.settings.secret
        env["IWORKFLOW_POOL_EVENTS"] = ("1" if pool.started_events else "end") if pool.emit_events else "0"
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        if pool.worker_name:
            env[WORKER_NAME_ENV] = pool.worker_name
        #: where the container guards of this process's jobs record their containers, removed if it is killed
        self.container_records = containers.new_records()
        env[containers.RECORDS_ENV] = self.container_records
        env.update(pool.runner_env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "iworkflow.runner", "serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True,
        )
        self.alive = True
        self.writer = threading.Thread(target=self._write_loop, daemon=True, name=f"iworkflow-pool-w{index}")
        self.reader = threading.Thread(target=self._read_loop, daemon=True, name=f"iworkflow-pool-r{index}")
        self.writer.start()
        self.reader.start()

    def _write_loop(self) -> None:
        stdin = self.proc.stdin
        try:
            while True:
                batch = self.outbox.get()
                with self.write_lock:
                    if batch is None:
                        write_frame(stdin, QUIT, b"")
                        stdin.flush()
                        return
                    for data in batch:
                        write_frame(stdin, JOB, data)
                    while True:
                        try:
                            more = self.outbox.get_nowait()
                        except queue.Empty:
                            break
                        if more is None:
                            self.outbox.put(None)
                            break
                        for data in more:
                            write_frame(stdin, JOB, data)
                    stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the reader notices the death and recovers the jobs

    def send(self, batch: list[bytes], idle: bool) -> None:
        """(pool lock held) Queue frames for the writer thread, or, for one small job to an idle process,
        write it here: the process is blocked reading, so the write cannot block, and the job skips a
        thread hand-off (what a single call's round trip is mostly made of)."""
        if idle and len(batch) == 1 and len(batch[0]) < DIRECT_WRITE_MAX and self.write_lock.acquire(blocking=False):
            try:
                write_frame(self.proc.stdin, JOB, batch[0])
                self.proc.stdin.flush()
                return
            except (BrokenPipeError, OSError, ValueError):
                return  # the reader notices the death and recovers the job
            finally:
                self.write_lock.release()
        self.outbox.put(batch)

    def _read_loop(self) -> None:
        """Drain every result already buffered, publish them as one batch, then refill the pipeline."""
        reader = FrameReader(self.proc.stdout.fileno())
        bus = self.pool.bus
        while True:
            frame = reader.read()
            if frame is None:
                break
            done: list[tuple[Job, Future, bytes]] = []
            while frame is not None:
                kind, data = frame
                if kind == EVENT:
                    self.pool.events.add(data)
                elif kind in (RESULT, INVALID):
                    with self.pool._lock:
                        head = self.inflight.popleft() if self.inflight else None
                        if head is not None:
                            self._timed(self.sent_at.popleft())
                        following = self.inflight[0][0] if head is not None and self.inflight else None
                    if following is not None:
                        self.pool._started(following)
                    if head is None:
                        logger.error("runner pid %d answered a job it was not given; replacing it", self.proc.pid)
                        processes.kill_tree(self.proc.pid)
                        break
                    job, future = head
                    if kind == INVALID:  # never ran: the caller dead-letters it or reports the error
                        future.set_exception(InvalidMessage(data.decode(errors="replace")))
                    else:
                        done.append((job, future, data))
                frame = reader.read() if reader.has_frame() else None
            self.pool._pump()  # the process is free: refill it while the results go out
            by_destination: dict[str, list[tuple[Future, bytes]]] = {}
            for job, future, data in done:
                by_destination.setdefault(results_destination(job.work_id, job.reply_to), []).append((future, data))
            for destination, items in by_destination.items():
                self._publish(bus, destination, items, self.pool.settings.secret_bytes)
        self.pool._on_exit(self)

    def running(self) -> tuple[Job, float] | None:
        """(pool lock held) The job the process is running now, and since when."""
        if not self.alive or not self.inflight:
            return None
        return self.inflight[0][0], max(self.sent_at[0], self.last_result_at)

    def kill(self, job: Job, why: BaseException) -> None:
        """(pool lock held) Kill the process tree running ``job``; the job ends with ``why``."""
        if self.killed is None:
            self.killed = (job, why)
        self.victims += processes.kill_tree(self.proc.pid)

    def _timed(self, sent_at: float) -> None:
        """(pool lock held) A job's service time: from when the process could start it to its result."""
        now = time.monotonic()
        self.pool._note_job_seconds(now - max(sent_at, self.last_result_at))
        self.last_result_at = now

    @staticmethod
    def _publish(bus, destination: str, items: list[tuple[Future, bytes]], secret: bytes) -> None:
        """Publish results without waiting for the broker; each job's Future completes on the confirm.

        Not waiting keeps this reader free to feed the process while the broker stores the results; the
        job counts as done (a broker worker acks its message) only once they are confirmed.  Results that
        came back together go to a driver's inbox as one bundle."""
        futures = [future for future, _data in items]
        bodies = [data for _future, data in items]
        if len(bodies) > 1 and is_inbox(destination):
            bodies = [encode_bundle(bodies, secret)]
        try:
            sent = bus.publish_many_async(destination, bodies)
        except Exception as err:  # noqa: BLE001 - the bus is closing: the Futures say why
            sent = Future()
            sent.set_exception(err)

        def confirmed(f: Future) -> None:
            err = f.exception()
            for future in futures:
                if err is not None:
                    future.set_exception(err)
                else:
                    future.set_result(None)

        sent.add_done_callback(confirmed)


class LocalExecutor(Executor):
    """Runs jobs in ``slots`` local runner processes (default: one per core)."""

    ships_source = True
    #: extra environment of the runner processes (``iworkflow worker`` names the queue serving their results)
    runner_env: dict[str, str] = {}

    def __init__(self, settings, bus, address: str | None = None, slots: int | None = None,
                 started_events: bool = True, worker_name: str | None = None,
                 on_start: Callable[[Job, float], None] | None = None):
        super().__init__(settings, bus, address)
        self.started_events = started_events
        #: the name results and events give as the job's worker (a broker worker's name: its runners' pids are no
        #: identity); None: each runner process names itself
        self.worker_name = worker_name
        #: told (job, wall-clock time) when a runner process starts a job: it reaches the head of its pipeline
        self.on_start = on_start
        self.slots = slots or (int(address) if address and address.isdigit() else settings.effective_slots)
        self.emit_events = settings.emits_events
        self.events = EventBatcher(bus, settings.secret_bytes)
        self._lock = threading.RLock()
        self._pending: deque[tuple[Job, Future]] = deque()
        self._procs: list[_PoolProcess] = []
        self._closed = False
        #: works cancelled: their jobs put back after a kill are failed, not run
        self._cancelled: dict[str, str] = {}
        self._spawned = 0
        self._watchdog: threading.Thread | None = None
        #: moving average of how long one job occupies a process (None until a job has run)
        self.job_seconds: float | None = None

    def _started(self, job: Job) -> None:
        """(from a pool thread) A runner process starts ``job`` now: the one ahead of it is done."""
        if self.on_start is not None:
            try:
                self.on_start(job, time.time())
            except Exception:  # a report, never a reason to stop feeding the runners
                logger.exception("on_start hook failed for job %s", job.job_key)

    def _note_job_seconds(self, seconds: float) -> None:
        self.job_seconds = seconds if self.job_seconds is None else 0.9 * self.job_seconds + 0.1 * seconds

    def _ensure_started(self) -> None:
        if not self._procs:
            self._procs = [self._spawn() for _ in range(self.slots)]

    def _spawn(self) -> _PoolProcess:
        self._spawned += 1
        return _PoolProcess(self, self._spawned)

    def submit(self, job: Job) -> Future:
        return self.submit_many([job])[0]

    def submit_many(self, jobs: Iterable[Job]) -> list[Future]:
        items = [(job, Future()) for job in jobs]
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit: the local executor has been shut down")
            self._ensure_started()
            self._pending.extend(items)
            if self._watchdog is None and any(job.max_walltime for job, _ in items):
                self._watchdog = threading.Thread(target=self._watch_walltimes, daemon=True,
                                                  name="iworkflow-pool-walltime")
                self._watchdog.start()
        self._pump()
        return [f for _, f in items]

    def _watch_walltimes(self) -> None:
        """Kill the process of a job running past its ``max_walltime`` (it fails with TimeoutError)."""
        while not self._closed:
            now = time.monotonic()
            with self._lock:
                for proc in self._procs:
                    running = proc.running()
                    if running is None or not running[0].max_walltime:
                        continue
                    job, since = running
                    if now - since > job.max_walltime + WALLTIME_SLACK and proc.killed is None:
                        logger.error("job %s of work %s exceeded max_walltime=%gs; killing runner pid %d",
                                     job.job_key, job.work_id, job.max_walltime, proc.proc.pid)
                        proc.kill(job, TimeoutError(
                            f"job {job.job_key} exceeded max_walltime={job.max_walltime:g}s and was killed "
                            f"(with every process it started)"))
            time.sleep(WALLTIME_TICK)

    def _pump(self) -> None:
        """Hand pending jobs to processes, pipelining deeper while the backlog is long."""
        started: list[Job] = []
        dropped: list[tuple[Job, Future]] = []
        with self._lock:
            self._fill(started, dropped)
        for job, future in dropped:
            self._fail_cancelled(job, future)
        for job in started:
            self._started(job)

    def _fill(self, started: list[Job], dropped: list[tuple[Job, Future]]) -> None:
        """(lock held) Write pending jobs to processes; the first job an idle process gets starts now.  Jobs of a
        cancelled work put back after a kill go to ``dropped`` instead."""
        if not self._pending:
            return
        live = [p for p in self._procs if p.alive]
        if not live:
            return
        depth = max(1, min(MAX_PIPELINE, len(self._pending) // (len(live) * 4)))
        for proc in live:
            idle = not proc.inflight
            room = depth - len(proc.inflight)
            batch: list[bytes] = []
            while room > 0 and self._pending:
                job, future = self._pending.popleft()
                if job.work_id in self._cancelled and not future.cancel():
                    dropped.append((job, future))
                    continue
                if not future.set_running_or_notify_cancel():
                    continue  # the submitter publishes the failure of a cancelled job
                proc.inflight.append((job, future))
                proc.sent_at.append(time.monotonic())
                batch.append(job.data)
                room -= 1
            if batch:
                if idle:
                    started.append(proc.inflight[0][0])
                proc.send(batch, idle)

    def _on_exit(self, proc: _PoolProcess) -> None:
        code = proc.proc.wait()
        # what the job left behind dies with it (its processes, then the containers it ran in), before its failure
        # is reported
        processes.wait_gone(proc.victims + processes.kill_tree(proc.proc.pid)[1:], KILL_WAIT)
        containers.remove_recorded(proc.container_records)
        with self._lock:
            proc.alive = False
            lost = list(proc.inflight)
            proc.inflight.clear()
            proc.sent_at.clear()
            if proc in self._procs:
                self._procs.remove(proc)
            closed = self._closed
            # the first job was running when the process died (unless it was killed for another job that had
            # just finished); the rest never started
            culprit = proc.killed[0] if proc.killed is not None else None
            blamed = bool(lost) and (culprit is None or lost[0][0] is culprit)
            if lost and not closed:
                self._pending.extendleft(reversed(lost[1:] if blamed else lost))
            if (lost or proc.killed is not None) and not closed:
                self._procs.append(self._spawn())
        if lost and (blamed or closed):
            job, future = lost[0]
            exc: BaseException
            if closed:
                exc = JobLostError(f"executor shut down before job {job.job_key} finished")
            elif proc.killed is not None:
                exc = proc.killed[1]
            else:
                exc = JobLostError(f"local runner process pid {proc.proc.pid} exited with code {code} while running "
                                   f"job {job.job_key} (the job killed its interpreter: os._exit, a crash or out of "
                                   "memory)")
            quiet = closed or isinstance(exc, WorkCancelled)  # the runtime or the canceller sums it up
            (logger.debug if quiet else logger.error)("%s", exc)
            data = failure_message(job.data, exc, self.settings.secret_bytes)
            self.bus.publish(results_destination(job.work_id, job.reply_to), data)
            future.set_result(None)
            if closed:
                for job, future in lost[1:]:
                    self.bus.publish(results_destination(job.work_id, job.reply_to), failure_message(
                        job.data, JobLostError("executor shut down before the job ran"), self.settings.secret_bytes))
                    future.set_result(None)
        self._pump()

    def _fail_cancelled(self, job: Job, future: Future) -> None:
        why = WorkCancelled(f"job {job.job_key} was stopped: {self._cancelled[job.work_id]}")
        self.bus.publish(results_destination(job.work_id, job.reply_to),
                         failure_message(job.data, why, self.settings.secret_bytes))
        future.set_result(None)

    def cancel_work(self, work_id: str, reason: str) -> None:
        """Drop the work's queued jobs; kill the runner processes holding its jobs (another work's job
        sharing such a process's pipeline is put back and runs again)."""
        with self._lock:
            self._cancelled[work_id] = reason
            queued = [(job, future) for job, future in self._pending if job.work_id == work_id]
            self._pending = deque(item for item in self._pending if item[0].work_id != work_id)
            for proc in self._procs:
                mine = [job for job, _future in proc.inflight if job.work_id == work_id]
                if proc.alive and mine:
                    proc.kill(mine[0], WorkCancelled(f"job {mine[0].job_key} was stopped: {reason}"))
        for job, future in queued:
            if not future.cancel():
                self._fail_cancelled(job, future)

    def kill_running(self, job_ids: set[str]) -> int:
        """Kill the runner processes now running one of these jobs (each ends as lost); returns how many."""
        with self._lock:
            victims = [p for p in self._procs if p.alive and p.inflight and p.inflight[0][0].id in job_ids]
            for proc in victims:
                job = proc.inflight[0][0]
                proc.kill(job, JobLostError(f"job {job.job_key} was stopped: its work was cancelled"))
        return len(victims)

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._pending)
            self._pending.clear()
            procs = list(self._procs)
        for _job, future in pending:
            future.cancel()
        for proc in procs:
            proc.outbox.put(None)
        for proc in procs:
            try:
                proc.proc.wait(timeout=10 if wait else 0.5)
            except subprocess.TimeoutExpired:
                proc.proc.kill()
                proc.proc.wait()
            proc.reader.join(timeout=5)
        self.events.close()
