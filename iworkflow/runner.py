"""The job runner: verify a job message, set up its source tree and environment, call it, report.

Every executor runs jobs through here, in-process (``run_encoded``), as a one-shot subprocess
(``python -m iworkflow.runner once``, used for ``init_env`` prefixes) or as a long-lived pool
process speaking length-prefixed frames on stdin/stdout (``python -m iworkflow.runner serve``).
"""
from __future__ import annotations

import io
import logging
import os
import shlex
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any, BinaryIO, Callable

from . import containers, job_context, processes, result_store, serialization, source_version
from .envelope import Envelope
from .errors import InvalidMessage
from .failures import WORKER_NAME, failure_result, result_message
from .job_context import JobContext
from .messages import Event, JobMetrics, JobPayload, ResultPayload, decode_payload

logger = logging.getLogger(__name__)

Emit = Callable[[Event], None]
OUTPUT_TAIL = 4096
#: how long the pipes of a killed job command are read for, in case a process that escaped the kill holds them
KILLED_PIPES_WAIT = 5.0
_functions: dict[tuple[int, str], Callable[..., Any]] = {}
#: the captured output tail of the last job run with ``capture`` (reported with its success too)
_last_output = ""
#: how often a pool process reports the output of the job it runs (a live tail), when it printed something new
LIVE_OUTPUT_SECONDS = 2.0
#: the job running now with ``capture`` and its output tails (stdout, stderr), for the live tail
_live: tuple[Envelope, _Tail, _Tail] | None = None


def _secret() -> bytes:
    from .config import load_settings

    return load_settings().secret_bytes


def load_function(payload: JobPayload) -> Callable[..., Any]:
    """The job's function, unpickled once per source version (``source_version.generation``)."""
    key = (source_version.generation(), payload.func_digest)
    func = _functions.get(key)
    if func is None:
        func = serialization.loads(payload.func)
        # A work function pickled by reference resolves to its decorator wrapper: call the plain function.
        while getattr(func, "__iworkflow_work__", None) is not None and hasattr(func, "__wrapped__"):
            func = func.__wrapped__
        if len(_functions) > 256:
            _functions.clear()
        _functions[key] = func
    return func


class _Tail(io.TextIOBase):
    """Passes writes through and keeps the last few KiB, for the error report of a failed job."""

    def __init__(self, passthrough):
        self._passthrough = passthrough
        self._chunks: deque[str] = deque()
        self._size = 0
        #: how many writes it took (the live tail reports only when this moved)
        self.writes = 0

    def write(self, s: str) -> int:
        if self._passthrough is not None:
            self._passthrough.write(s)
        self._chunks.append(s)
        self._size += len(s)
        self.writes += 1
        while self._size > OUTPUT_TAIL and len(self._chunks) > 1:
            self._size -= len(self._chunks.popleft())
        return len(s)

    def flush(self) -> None:
        if self._passthrough is not None:
            self._passthrough.flush()

    def text(self) -> str:
        return "".join(self._chunks)[-OUTPUT_TAIL:]


def execute(env: Envelope, payload: JobPayload, capture: bool = False) -> ResultPayload:
    """Call the job's function in this process and capture its value or its exception."""
    global _last_output, _live
    start = time.time()
    _last_output = ""
    tail = None
    old_out, old_err = sys.stdout, sys.stderr
    if capture:
        tail = _Tail(old_out)
        sys.stdout = tail
        sys.stderr = _Tail(old_err)
        _live = (env, tail, sys.stderr)
    try:
        with source_version.using(payload.source), job_context.running(JobContext.of(env, payload, WORKER_NAME)):
            func = load_function(payload)
            args, kwargs = serialization.loads(payload.args)
            try:
                value = func(*args, **kwargs)
            finally:
                _end_forked_child()
            data = result_store.spill(serialization.dumps(value))  # large values go by reference
        return ResultPayload(ok=True, value=data, metrics=JobMetrics(start, time.time(), WORKER_NAME, env.attempt))
    except BaseException as exc:  # noqa: BLE001 - a job's failure of any kind becomes its result
        if isinstance(exc, (KeyboardInterrupt, SystemExit)) and not capture:
            raise
        output = ""
        if tail is not None:
            output = tail.text() + sys.stderr.text()  # type: ignore[union-attr]
        return failure_result(exc, attempt=env.attempt, start=start, output_tail=output)
    finally:
        if tail is not None:
            _last_output = tail.text() + sys.stderr.text()  # type: ignore[union-attr]
            _live = None
        sys.stdout, sys.stderr = old_out, old_err


def _event(type_: str, env: Envelope, **data: Any) -> Event:
    return Event(type=type_, workflow_id=env.workflow_id, work_id=env.work_id, job_key=env.job_key,
                 attempt=env.attempt, data=data)


def run_encoded(data: bytes, secret: bytes | None = None, emit: Emit | None = None,
                capture: bool = False) -> bytes:
    """Run one signed job message and return its signed result message.

    Raises InvalidMessage for a message that must be dead-lettered (bad signature, malformed); any
    failure after the message is trusted becomes a failure result instead.
    """
    secret = _secret() if secret is None else secret
    env, payload = decode_payload(data, secret, "job")
    if emit is not None:
        emit(_event("job_started", env, worker=WORKER_NAME))
    if payload.init_env or payload.container_options:
        result = run_in_subprocess(data, env, payload, secret)
    else:
        result = execute(env, payload, capture=capture)
    if emit is not None:
        m = result.metrics
        if result.ok:
            emit(_event("job_finished", env, worker=m.worker, start=m.start, end=m.end,
                        output=_last_output[-OUTPUT_TAIL:]))
        else:
            emit(_event("job_failed", env, worker=m.worker, start=m.start, end=m.end,
                        error=result.error.summary() if result.error else "",
                        traceback=result.error.traceback[-4000:] if result.error else "",
                        output=result.error.output_tail[-4000:] if result.error else ""))
    return result_message(env.header(), result, secret)


def job_command(payload: JobPayload) -> list[str]:
    """The command line running a job in a subprocess: ``<init_env> <python> -m iworkflow.runner once``,
    or that inside ``container_options['container_image']`` (see ``iworkflow.containers``)."""
    if payload.container_options:
        from .containers import container_command

        # exec: the container's guard must be the runner's own child, to notice when the runner dies
        return ["/bin/bash", "-c",
                "exec " + container_command(payload.container_options, payload.init_env, payload.source)]
    inner = f"{shlex.quote(sys.executable)} -m iworkflow.runner once"
    if payload.init_env:
        inner = f"{payload.init_env.rstrip()} {inner}"
    return ["/bin/bash", "-c", inner]


def run_in_subprocess(data: bytes, env: Envelope, payload: JobPayload, secret: bytes | None = None) -> ResultPayload:
    """Run the job behind its ``init_env`` prefix or in its container; past ``max_walltime`` its process tree is
    killed.  Either way, its result or failure is returned only once the containers it ran in are removed."""
    start = time.time()
    cmd = job_command(payload)
    child_env = dict(os.environ)
    child_env["PYTHONPATH"] = os.pathsep.join(source_version.importable_elsewhere())
    if secret:
        child_env["IWORKFLOW_SECRET"] = secret.decode()  # the job's command (or container) verifies with it
    records = containers.new_records(os.environ.get(containers.RECORDS_ENV))
    child_env[containers.RECORDS_ENV] = records
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=child_env, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(data, timeout=payload.max_walltime or None)
        except subprocess.TimeoutExpired:
            processes.kill_tree(proc.pid)  # a shell prefix, a daemon of the job: everything below it
            _reap_killed(proc)
            return failure_result(TimeoutError(
                f"job exceeded max_walltime={payload.max_walltime}s in `{' '.join(cmd)}` and was killed"),
                attempt=env.attempt, start=start)
    finally:
        containers.remove_recorded(records)
    stderr_tail = stderr.decode(errors="replace")[-OUTPUT_TAIL:]
    if proc.returncode != 0 or not stdout:
        return failure_result(RuntimeError(
            f"job command `{cmd[-1]}` exited with code {proc.returncode} before reporting a result; "
            f"stderr tail:\n{stderr_tail}"), attempt=env.attempt, start=start)
    try:
        _env, result = decode_payload(stdout, secret or _secret(), "result")
    except InvalidMessage as err:
        return failure_result(RuntimeError(f"job subprocess returned an unreadable result: {err}"),
                              attempt=env.attempt, start=start)
    return result


def _reap_killed(proc: subprocess.Popen) -> None:
    """Collect a killed job command; a process that escaped the kill may hold its pipes open: stop reading them."""
    try:
        proc.communicate(timeout=KILLED_PIPES_WAIT)
    except subprocess.TimeoutExpired:
        for pipe in (proc.stdout, proc.stderr):
            pipe.close()
        proc.wait()


# --- frames for the local pool protocol -------------------------------------------------------
FRAME = struct.Struct(">cI")
#: INVALID answers a job message that must be dead-lettered (its payload: why), instead of a RESULT
JOB, RESULT, EVENT, QUIT, INVALID = b"J", b"R", b"E", b"Q", b"X"
#: the pid of a pool process serving frames; a process forked by a job is not it and never serves
_serving_pid: int | None = None


def _end_forked_child() -> None:
    """A process forked by a job that returns into the runner exits here: it never reports or serves."""
    if _serving_pid is not None and os.getpid() != _serving_pid:
        os._exit(0)


def _guard_protocol(fds: tuple[int, int]) -> None:
    """Processes forked by a job get /dev/null in place of the protocol pipes: they cannot write a frame or
    keep the result pipe open (exec'd children never inherit them: Python's fds are not inheritable)."""

    def in_child() -> None:
        for fd, mode in zip(fds, (os.O_RDONLY, os.O_WRONLY)):
            try:
                null = os.open(os.devnull, mode)
                os.dup2(null, fd, inheritable=False)
                os.close(null)
            except OSError:
                pass

    os.register_at_fork(after_in_child=in_child)


def write_frame(out: BinaryIO, kind: bytes, payload: bytes) -> None:
    out.write(FRAME.pack(kind, len(payload)))
    out.write(payload)


class FrameReader:
    """Reads frames from a raw fd through one buffer, and can tell whether another frame is waiting."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = bytearray()
        self.pos = 0

    def has_frame(self) -> bool:
        avail = len(self.buf) - self.pos
        if avail < FRAME.size:
            return False
        _kind, length = FRAME.unpack_from(self.buf, self.pos)
        return avail >= FRAME.size + length

    def read(self) -> tuple[bytes, bytes] | None:
        """The next frame, or None at end of stream."""
        while not self.has_frame():
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                return None
            if self.pos:
                del self.buf[: self.pos]
                self.pos = 0
            self.buf += chunk
        kind, length = FRAME.unpack_from(self.buf, self.pos)
        start = self.pos + FRAME.size
        payload = bytes(self.buf[start : start + length])
        self.pos = start + length
        return kind, payload


def _protocol_streams() -> tuple[int, BinaryIO]:
    """Keep private copies of stdin/stdout for frames; user prints go to stderr, input() sees EOF."""
    proto_in = os.dup(0)
    proto_out = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0, closefd=False), write_through=True)
    return proto_in, proto_out


def serve() -> int:
    """Pool process: run job frames from stdin one by one, answer with result (and event) frames.

    What a job leaves running (children, daemons: this process adopts them as a subreaper) is killed once
    its result is written, and the containers of guards killed with it are removed."""
    global _serving_pid
    proto_in, proto_out = _protocol_streams()
    _serving_pid = os.getpid()
    job_context.mark_process("runner")
    _guard_protocol((proto_in, proto_out.fileno()))
    processes.become_subreaper()
    records = os.environ.get(containers.RECORDS_ENV)
    secret = _secret()
    events = os.environ.get("IWORKFLOW_POOL_EVENTS", "0")
    emit = None
    lock = threading.Lock()  # frames come from this thread and the live-output thread
    if events in ("1", "end"):

        def emit(event: Event) -> None:
            if events == "end" and event.type == "job_started":
                return  # the worker's heartbeat at start already told the server who runs the job
            with lock:
                write_frame(proto_out, EVENT, event.to_json())  # the parent signs and batches them

        threading.Thread(target=_report_output, args=(proto_out, lock), daemon=True,
                         name="iworkflow-live-output").start()

    reader = FrameReader(proto_in)
    while True:
        frame = reader.read()
        if frame is None or frame[0] == QUIT:
            proto_out.flush()
            return 0
        _kind, data = frame
        try:
            kind, answer = RESULT, run_encoded(data, secret, emit, capture=True)
        except InvalidMessage as err:
            kind, answer = INVALID, str(err).encode()
        _end_forked_child()
        children = processes.has_children()
        with lock:
            write_frame(proto_out, kind, answer)
            if children:
                proto_out.flush()  # the result goes out first: killing a stubborn tree may take a moment
        if children:
            processes.kill_children()
            containers.remove_recorded(records, keep=True)
        if not reader.has_frame():
            with lock:
                proto_out.flush()


def _report_output(proto_out: BinaryIO, lock: threading.Lock) -> None:
    """Every ``LIVE_OUTPUT_SECONDS``, send the running job's output tail as a ``job_output`` event if it grew."""
    seen: tuple[int, int, int] | None = None
    while True:
        time.sleep(LIVE_OUTPUT_SECONDS)
        live = _live
        if live is None:
            continue
        env, out, err = live
        mark = (id(out), out.writes, err.writes)
        if mark == seen or not (out.writes or err.writes):
            continue
        seen = mark
        event = _event("job_output", env, worker=WORKER_NAME, output=(out.text() + err.text())[-OUTPUT_TAIL:])
        try:
            with lock:
                write_frame(proto_out, EVENT, event.to_json())
                proto_out.flush()
        except (OSError, ValueError):
            return


def once() -> int:
    """One job from stdin, its result to stdout (used behind ``init_env`` and container prefixes)."""
    proto_in, proto_out = _protocol_streams()
    job_context.mark_process("runner")
    with os.fdopen(proto_in, "rb") as stream:
        data = stream.read()
    secret = _secret()
    env, payload = decode_payload(data, secret, "job")
    result = execute(env, payload, capture=True)
    proto_out.write(result_message(env.header(), result, secret))
    proto_out.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=os.environ.get("IWORKFLOW_LOG_LEVEL", "WARNING"))
    if argv[:1] == ["serve"]:
        return serve()
    if argv[:1] == ["once"]:
        return once()
    print("usage: python -m iworkflow.runner serve|once", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
