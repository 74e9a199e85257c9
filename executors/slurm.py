"""Runs jobs as Slurm batch jobs: one array job per batch of alike jobs, one array task per job.

Each job message is written to a spool directory that the compute nodes share with the driver;
array task N runs ``<init_env> python -m iworkflow.runner once < N.job > N.result``.  The executor
scans the spool, publishes each result on the bus, follows the tasks with ``squeue`` (``sacct``
once they leave it) and fails a task that ended without a result, quoting its Slurm log.
"""
from __future__ import annotations

import logging
import math
import os
import shlex
import shutil
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from pathlib import Path

from iworkflow.errors import ConfigurationError, InvalidMessage, JobLostError, WorkCancelled
from iworkflow.messages import EVENTS_TOPIC, Event, Job, decode_payload, encode_event, results_destination
from iworkflow.failures import failure_message
from iworkflow.runner import OUTPUT_TAIL, job_command

from .base import Executor
from .options import flag, number, parse_address

logger = logging.getLogger(__name__)

OPTIONS = {
    "partition": "Slurm partition (also given as slurm://PARTITION; default: the cluster's default)",
    "account": "Slurm account (--account)",
    "qos": "Slurm QOS (--qos)",
    "spool": "directory shared with the compute nodes for job, result and log files (default IWORKFLOW_HOME/slurm)",
    "poll": "seconds between scans of the spool for results (default 0.5)",
    "squeue_every": "seconds between squeue calls (default 3)",
    "grace": "seconds a task may stay ended without a visible result file, for slow shared filesystems (default 10)",
    "max_array": "most tasks in one array job (default 1000; keep below the cluster's MaxArraySize)",
    "keep": "1 to keep the spool directories of finished array jobs",
    "sbatch_args": "extra sbatch arguments, shell-quoted (e.g. '--constraint=haswell --exclusive')",
}
LIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
        "REQUEUE_FED", "RESIZING", "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}
STARTED = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"}
SCRIPT = """#!/bin/bash
# iworkflow array job: task N runs the job message N.job and leaves its signed result in N.result.
i=${{SLURM_ARRAY_TASK_ID:?this script runs as a Slurm array task}}
cd {directory} || exit 1
/bin/bash -c {command} < "$i.job" > "$i.result.part" && mv -f "$i.result.part" "$i.result"
"""


class SlurmError(ConfigurationError):
    """A Slurm command failed; the message names the command and quotes its stderr."""


def slurm(args: list[str], env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a Slurm client command; a missing command or (with ``check``) a failure raises SlurmError."""
    try:
        proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, check=False)
    except FileNotFoundError:
        raise SlurmError(f"`{args[0]}` is not on PATH: install the Slurm client (Debian: slurm-client) "
                         f"on the driver's machine, or run .ci/slurm.sh for a single-node test cluster") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"`{shlex.join(args)}` did not answer within 120 s: is slurmctld reachable?") from None
    if check and proc.returncode != 0:
        raise SlurmError(f"`{shlex.join(args)}` failed with exit code {proc.returncode}: "
                         f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


@dataclass
class _Task:
    job: Job
    future: Future
    index: int
    started: bool = False
    ended_at: float | None = None


@dataclass
class _Batch:
    directory: Path
    tasks: dict[int, _Task]
    slurm_id: str = ""
    done: set[int] = field(default_factory=set)

    def task_id(self, index: int) -> str:
        return f"{self.slurm_id}_{index}"


class SlurmExecutor(Executor):
    """Submits jobs with ``sbatch --array``, picks their results up from the spool and publishes them."""

    ships_source = True

    def __init__(self, settings, bus, address: str | None = None):
        super().__init__(settings, bus, address)
        location, options = parse_address("slurm", address, OPTIONS)
        self.partition = options.get("partition") or location or None
        self.account = options.get("account")
        self.qos = options.get("qos")
        self.spool = Path(options.get("spool") or os.path.join(settings.home, "slurm")).expanduser()
        self.poll = number(options, "poll", 0.5)
        self.squeue_every = number(options, "squeue_every", 3.0)
        self.grace = number(options, "grace", 10.0)
        self.max_array = int(number(options, "max_array", 1000))
        self.keep = flag(options, "keep")
        self.extra_args = shlex.split(options.get("sbatch_args", ""))
        self._check_cluster()
        self.spool.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._batches: list[_Batch] = []
        self._stop = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._last_squeue = 0.0

    def _check_cluster(self) -> None:
        """Fail early with the command and its stderr when Slurm is unreachable or the partition unknown."""
        out = slurm(["sinfo", "--noheader", "--format=%P"]).stdout.split()
        partitions = [p.rstrip("*") for p in out]
        if self.partition and self.partition not in partitions:
            raise ConfigurationError(f"Slurm partition {self.partition!r} does not exist; sinfo lists "
                                     f"{', '.join(partitions) or 'no partitions'}")

    # --- submission ------------------------------------------------------------------------
    def submit(self, job: Job) -> Future:
        return self.submit_many([job])[0]

    def submit_many(self, jobs: Iterable[Job]) -> list[Future]:
        if self._closed:
            raise RuntimeError("cannot submit: the slurm executor has been shut down")
        secret = self.settings.secret_bytes
        futures: list[Future] = []
        groups: dict[tuple, list[_Task]] = defaultdict(list)
        for job in jobs:
            future: Future = Future()
            futures.append(future)
            try:
                _env, payload = decode_payload(job.data, secret, "job")
                command = job_command(payload)[-1]
            except (InvalidMessage, ConfigurationError) as err:
                future.set_exception(err)
                continue
            shape = (job.core_count, job.total_memory, job.max_walltime, command)
            groups[shape].append(_Task(job, future, len(groups[shape])))
        for (cores, memory, walltime, command), tasks in groups.items():
            for start in range(0, len(tasks), self.max_array):
                chunk = tasks[start:start + self.max_array]
                for i, task in enumerate(chunk):
                    task.index = i
                self._submit_array(chunk, cores, memory, walltime, command)
        return futures

    def _submit_array(self, tasks: list[_Task], cores: int, memory: int, walltime: float | None,
                      command: str) -> None:
        work_id = tasks[0].job.work_id
        directory = self.spool / f"{work_id[:8]}-{uuid.uuid4().hex[:8]}"
        directory.mkdir(mode=0o700, parents=True)
        for task in tasks:
            (directory / f"{task.index}.job").write_bytes(task.job.data)
        script = directory / "run.sh"
        script.write_text(SCRIPT.format(directory=shlex.quote(str(directory)), command=shlex.quote(command)))
        args = ["sbatch", "--parsable", f"--array=0-{len(tasks) - 1}", f"--job-name=iw-{work_id[:8]}",
                f"--output={directory}/%a.log", f"--chdir={directory}", "--ntasks=1",
                f"--cpus-per-task={cores}", f"--mem={memory}M", "--export=ALL"]
        if walltime:
            args.append(f"--time={max(1, math.ceil(walltime / 60))}")
        for name, value in (("partition", self.partition), ("account", self.account), ("qos", self.qos)):
            if value:
                args.append(f"--{name}={value}")
        args += [*self.extra_args, str(script)]
        env = dict(os.environ, IWORKFLOW_SECRET=self.settings.secret, IWORKFLOW_HOME=self.settings.home)
        try:
            out = slurm(args, env=env).stdout.strip()
        except SlurmError as err:
            shutil.rmtree(directory, ignore_errors=True)
            for task in tasks:
                task.future.set_exception(err)
            return
        batch = _Batch(directory, {t.index: t for t in tasks}, slurm_id=out.split(";")[0])
        logger.info("submitted Slurm array job %s (%d tasks) for work %s", batch.slurm_id, len(tasks), work_id)
        for task in tasks:
            task.future.add_done_callback(lambda f, b=batch, t=task: self._on_future_done(b, t, f))
        with self._lock:
            self._batches.append(batch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True, name="iworkflow-slurm")
                self._thread.start()

    def _on_future_done(self, batch: _Batch, task: _Task, future: Future) -> None:
        if future.cancelled():
            logger.info("cancelling Slurm task %s", batch.task_id(task.index))
            proc = slurm(["scancel", batch.task_id(task.index)], check=False)
            if proc.returncode != 0:
                logger.warning("scancel %s failed: %s", batch.task_id(task.index), proc.stderr.strip())
            with self._idle:
                batch.done.add(task.index)
                self._idle.notify_all()

    # --- following jobs --------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._scan_results()
                if time.monotonic() - self._last_squeue >= self.squeue_every:
                    self._last_squeue = time.monotonic()
                    self._check_states()
                self._reap()
            except Exception:
                logger.exception("slurm executor poll failed")
            self._stop.wait(self.poll)

    def _open_batches(self) -> list[_Batch]:
        with self._lock:
            return [b for b in self._batches if len(b.done) < len(b.tasks)]

    def _scan_results(self) -> None:
        for batch in self._open_batches():
            try:
                names = os.listdir(batch.directory)
            except FileNotFoundError:
                continue
            for name in names:
                if name.endswith(".result"):
                    index = int(name.split(".", 1)[0])
                    if index not in batch.done:
                        self._resolve_with_file(batch, batch.tasks[index])

    def _resolve_with_file(self, batch: _Batch, task: _Task) -> bool:
        """Publish the task's result file if it is there; True when it was."""
        try:
            data = (batch.directory / f"{task.index}.result").read_bytes()
        except FileNotFoundError:
            return False
        self._emit_result_event(task, data)
        self._finish(batch, task, data)
        return True

    def _finish(self, batch: _Batch, task: _Task, data: bytes | None, error: BaseException | None = None) -> None:
        if not task.future.cancelled():
            try:
                if data is None:
                    data = failure_message(task.job.data, error or JobLostError("lost"), self.settings.secret_bytes)
                self.bus.publish(results_destination(task.job.work_id, task.job.reply_to), data)
                task.future.set_result(None)
            except InvalidStateError:
                pass
            except Exception as err:  # noqa: BLE001 - the Future carries it, the core publishes the failure
                try:
                    task.future.set_exception(err)
                except InvalidStateError:
                    pass
        with self._idle:
            batch.done.add(task.index)
            self._idle.notify_all()

    def _check_states(self) -> None:
        batches = [b for b in self._open_batches()]
        if not batches:
            return
        ids = ",".join(b.slurm_id for b in batches)
        args = ["squeue", "--noheader", "--array", "--states=all", f"--jobs={ids}", "--format=%i|%T|%r|%N"]
        proc = slurm(args, check=False)
        seen: dict[str, tuple[str, str, str]] = {}
        if proc.returncode == 0:
            for line in proc.stdout.splitlines():
                parts = line.strip().split("|")
                if len(parts) == 4:
                    seen[parts[0]] = (parts[1], parts[2], parts[3])
        elif "Invalid job id" not in proc.stderr:
            logger.warning("`%s` failed (exit %d): %s", shlex.join(args), proc.returncode, proc.stderr.strip())
            return
        for batch in batches:
            for index, task in list(batch.tasks.items()):
                if index in batch.done:
                    continue
                tid = batch.task_id(index)
                # tasks never split off the array record show under the bare array job id
                state, reason, node = seen.get(tid) or seen.get(batch.slurm_id) or self._sacct_state(tid)
                self._follow(batch, task, state, reason, node)

    def _sacct_state(self, task_id: str) -> tuple[str, str, str]:
        """The state of a task that left squeue, from sacct (``GONE`` when accounting is off)."""
        proc = slurm(["sacct", "--noheader", "--parsable2", "--allocations", f"--jobs={task_id}",
                      "--format=State,ExitCode,NodeList"], check=False)
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        if proc.returncode != 0 or not lines:
            return "GONE", f"not in squeue, and sacct says: {(proc.stderr or proc.stdout).strip() or 'nothing'}", ""
        state, exit_code, node = (lines[0].split("|") + ["", "", ""])[:3]
        return state.split()[0], f"exit code {exit_code}", node

    def _follow(self, batch: _Batch, task: _Task, state: str, reason: str, node: str) -> None:
        if state in STARTED and not task.started:
            task.started = True
            if not task.future.set_running_or_notify_cancel():
                return
            self._emit(task, "job_started", worker=node)
        if state in LIVE:
            return
        if self._resolve_with_file(batch, task):
            return
        now = time.monotonic()
        if task.ended_at is None:
            task.ended_at = now
        if now - task.ended_at < self.grace:
            return  # the result file may still be on its way through a shared filesystem
        tid = batch.task_id(task.index)
        tail = self._log_tail(batch, task)
        why = f"Slurm job {tid} ended {state} ({reason}) without a result"
        if state == "TIMEOUT":
            error: BaseException = TimeoutError(f"{why}: it exceeded max_walltime={task.job.max_walltime}s; "
                                                f"job log tail:\n{tail}")
        elif state == "CANCELLED":
            error = WorkCancelled(f"{why}: it was cancelled (scancel); job log tail:\n{tail}")
        else:
            error = JobLostError(f"{why}; its Slurm log ends with:\n{tail}")
        logger.error("%s", why)
        self._emit(task, "job_failed", worker=node, error=f"{type(error).__name__}: {why}")
        self._finish(batch, task, None, error)

    @staticmethod
    def _log_tail(batch: _Batch, task: _Task) -> str:
        try:
            return (batch.directory / f"{task.index}.log").read_text(errors="replace")[-OUTPUT_TAIL:]
        except FileNotFoundError:
            return "(no log file)"

    def _reap(self) -> None:
        with self._lock:
            finished = [b for b in self._batches if len(b.done) >= len(b.tasks)]
            self._batches = [b for b in self._batches if b not in finished]
        if not self.keep:
            for batch in finished:
                shutil.rmtree(batch.directory, ignore_errors=True)

    # --- events ----------------------------------------------------------------------------
    def _emit(self, task: _Task, type_: str, **data) -> None:
        if not self.settings.emits_events:
            return
        job = task.job
        event = Event(type_, job.workflow_id or None, job.work_id, job.job_key, job.attempt, data=data)
        self.bus.broadcast(EVENTS_TOPIC, encode_event(event, self.settings.secret_bytes))

    def _emit_result_event(self, task: _Task, data: bytes) -> None:
        if not self.settings.emits_events:
            return
        try:
            _env, result = decode_payload(data, self.settings.secret_bytes, "result")
        except InvalidMessage:
            return
        m = result.metrics
        if result.ok:
            self._emit(task, "job_finished", worker=m.worker, start=m.start, end=m.end)
        else:
            self._emit(task, "job_failed", worker=m.worker, start=m.start, end=m.end,
                       error=result.error.summary() if result.error else "")

    def cancel_work(self, work_id: str, reason: str) -> None:
        """``scancel`` the work's array jobs; each task ends as cancelled once Slurm reports it."""
        with self._lock:
            ids = [b.slurm_id for b in self._batches
                   if len(b.done) < len(b.tasks) and next(iter(b.tasks.values())).job.work_id == work_id]
        if ids:
            logger.info("cancelling Slurm jobs %s of work %s: %s", ", ".join(ids), work_id, reason)
            proc = slurm(["scancel", *ids], check=False)
            if proc.returncode != 0:
                logger.warning("scancel %s failed: %s", " ".join(ids), proc.stderr.strip())

    # --- shutdown --------------------------------------------------------------------------
    def shutdown(self, wait: bool = True) -> None:
        """``wait``: let the submitted Slurm jobs finish; otherwise scancel them and fail their jobs."""
        if self._closed:
            return
        self._closed = True
        if not wait:
            for batch in self._open_batches():
                slurm(["scancel", batch.slurm_id], check=False)
                for index, task in batch.tasks.items():
                    if index not in batch.done and not task.future.cancel():
                        self._finish(batch, task, None, JobLostError(
                            f"the slurm executor shut down; Slurm job {batch.task_id(index)} was cancelled"))
        with self._idle:
            self._idle.wait_for(lambda: all(len(b.done) >= len(b.tasks) for b in self._batches))
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._reap()
