"""Run a job's runner inside a container image (``container_options``), and end the container with the job.

The job message goes in on stdin and the signed result comes out on stdout, so the image needs only
iworkflow and the libraries the job imports; the job's code comes from the source cache, mounted at the
same path (or fetched over HTTP from the server), as on any other machine.  Docker and Podman keep a
container's state outside the caller's process tree: killing the processes that run it (as a walltime or a
cancel does) leaves the container behind.  So their command goes through :func:`guard`, which names the
container, records it in a directory that whoever may kill the guard owns (:data:`RECORDS_ENV`), and
removes it when it is stopped or its runner dies; the owner removes what a killed guard recorded
(:func:`remove_recorded`) once the guard's processes are gone.
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .config import Settings
    from .messages import SourceRef

logger = logging.getLogger(__name__)

RUNTIMES = ("apptainer", "singularity", "docker", "podman")
#: runtimes whose containers a daemon or conmon runs, detached from the process that asked for them
ENGINES = ("docker", "podman")
#: settings the runner inside the container needs, passed by name so their values never show in `ps`
PASSED_BY_NAME = ("IWORKFLOW_SECRET", "IWORKFLOW_SERVER_URL", "IWORKFLOW_TOKEN")
NAME_PREFIX = "iworkflow-job-"
_NAME = re.compile(re.escape(NAME_PREFIX) + r"[0-9a-f]{16}\Z")
PARENT_POLL_SECONDS = 0.5
#: signals on which the guard removes its container before it exits
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
#: the directory a guard records its container in (one file per container: named for it, holding the engine)
RECORDS_ENV = "IWORKFLOW_CONTAINER_RECORDS"
#: engines whose containers a daemon creates: a client killed mid-request may still get one after a removal
DAEMON_ENGINES = ("docker",)


def _check(options: dict) -> tuple[str, str]:
    if not isinstance(options, dict):
        raise ConfigurationError(f"container_options must be a dict such as "
                                 f"{{'container_image': 'iworkflow-worker', 'runtime': 'podman'}}, got {options!r}")
    image = options.get("container_image")
    runtime = options.get("runtime", "apptainer")
    if not image:
        raise ConfigurationError("container_options needs 'container_image' (e.g. 'docker://python:3.11')")
    if runtime not in RUNTIMES:
        raise ConfigurationError(f"container runtime {runtime!r} is unknown; use one of {RUNTIMES}")
    extra = options.get("extra_args", [])
    if not isinstance(extra, (list, tuple)) or not all(isinstance(a, str) for a in extra):
        raise ConfigurationError(f"container_options['extra_args'] must be a list of strings, got {extra!r}")
    unknown = set(options) - {"container_image", "runtime", "extra_args", "python"}
    if unknown:
        raise ConfigurationError(f"container_options has unknown key(s) {sorted(unknown)}; "
                                 "known: container_image, runtime, extra_args, python")
    return image, runtime


def mounts(settings: "Settings", source: "SourceRef | None" = None) -> list[str]:
    """The host directories the job reads and writes: the iworkflow home, the source store, and the store
    the job's source comes from (when it is a local directory); nested ones are left out."""
    paths = [settings.home, str(settings.store_path)]
    if source is not None and not source.store.startswith(("http://", "https://")):
        paths.append(source.store)
    real = sorted({os.path.abspath(os.path.expanduser(p)) for p in paths})
    return [p for p in real if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in real)]


def container_command(options: dict, init_env: str | None = None, source: "SourceRef | None" = None,
                      settings: "Settings | None" = None) -> str:
    """The shell command that runs one job in ``options['container_image']``: job on stdin, result on stdout.

    ``init_env`` runs inside the container, before the runner, as iDDS runs its setup in the job's image.
    """
    image, runtime = _check(options)
    if settings is None:
        from .config import load_settings

        settings = load_settings()
    inner = [options.get("python", "python3"), "-m", "iworkflow.runner", "once"]
    if init_env and init_env.strip():
        inner = ["/bin/bash", "-c", f"{init_env.strip()} {shlex.join(inner)}"]
    paths = mounts(settings, source)
    extra = list(options.get("extra_args", []))
    home = os.path.abspath(os.path.expanduser(settings.home))
    if runtime not in ENGINES:
        # apptainer runs the container as the caller's own processes with the caller's environment (the
        # secret included), minus the host's PYTHONPATH, whose site-packages would shadow the image's
        binds = [arg for p in paths for arg in ("--bind", p)]
        return shlex.join(["env", "-u", "PYTHONPATH", f"IWORKFLOW_HOME={home}", runtime, "exec", *binds, *extra,
                           image, *inner])
    names = [arg for name in PASSED_BY_NAME for arg in ("-e", name)]
    values = ["-e", f"IWORKFLOW_HOME={home}", "-e", f"IWORKFLOW_SOURCE_STORE={settings.store_path}"]
    volumes = [arg for p in paths for arg in ("-v", f"{p}:{p}")]
    # the image's own entrypoint (`iworkflow worker` in ours) gives way to the runner
    engine = [runtime, "run", "--rm", "-i", *names, *values, *volumes, *extra, "--entrypoint", inner[0], image,
              *inner[1:]]
    return shlex.join([sys.executable, "-m", "iworkflow.containers", *engine])


# --- the guard: `python -m iworkflow.containers <docker|podman> run ...` ---------------------------
def _user_args(runtime: str) -> list[str]:
    """Run as the calling user, so what the job writes in the mounted home stays the caller's."""
    args = ["--user", f"{os.getuid()}:{os.getgid()}"]
    if runtime == "podman" and os.geteuid() != 0:
        args.append("--userns=keep-id")  # rootless: map the caller's id to itself inside the container
    return args


def remove_container(engine: str, name: str) -> bool:
    """Kill and remove a container now (no grace period); a missing one is fine.  False if the engine said no."""
    runtime = os.path.basename(engine)
    cmd = [engine, "rm", "-f", *(["-t", "0"] if runtime == "podman" else []), name]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          check=False, timeout=60)
    return proc.returncode == 0


# --- records: the containers of guards that may be killed before their container ends ----------------
def new_records(parent: str | None = None) -> str:
    """A private directory for guards to record their containers in (under ``parent`` when it exists)."""
    return tempfile.mkdtemp(prefix="iworkflow-containers-", dir=parent if parent and os.path.isdir(parent) else None)


def _record(directory: str, runtime: str, name: str) -> str:
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(runtime)
    return path


def _read_record(path: str) -> str | None:
    """The engine of a well-formed record; None for anything else (a record is only trusted to name a job
    container of a known engine, never a command to run)."""
    try:
        with open(path) as fh:
            runtime = fh.read(64).strip()
    except OSError:
        return None
    return runtime if runtime in ENGINES and _NAME.match(os.path.basename(path)) else None


def remove_recorded(directory: str | None, keep: bool = False) -> list[str]:
    """Remove the containers recorded under ``directory`` and its subdirectories: those of guards killed before
    their container ended.  Call it once those guards' processes are gone, so no client still creates one.
    Deletes the records, and the directory itself unless ``keep``; returns the names of the containers."""
    if not directory or not os.path.isdir(directory):
        return []
    removed: list[str] = []
    for root, _dirs, files in os.walk(directory, topdown=False):
        for name in files:
            path = os.path.join(root, name)
            runtime = _read_record(path)
            if runtime is not None:
                logger.warning("removing container %s: its job was killed before it ended", name)
                if not remove_container(runtime, name) and runtime in DAEMON_ENGINES:
                    time.sleep(1.0)  # the daemon may still be creating it for the client that was killed
                    remove_container(runtime, name)
                removed.append(name)
            _unlink(path)
        if root != directory or not keep:
            try:
                os.rmdir(root)
            except OSError:
                pass
    return removed


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# --- the guard: `python -m iworkflow.containers <docker|podman> run ...` ---------------------------
class _Stopped(Exception):
    """The guard must end its container now: it was signalled, or the runner that started it is gone."""

    def __init__(self, why: str, code: int):
        super().__init__(why)
        self.code = code


def _stop_on_signals() -> None:
    def stop(signum: int, _frame) -> None:
        raise _Stopped(f"got {signal.Signals(signum).name}", 128 + signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)


def _wait(proc: subprocess.Popen, parent: int) -> int:
    while True:
        try:
            return proc.wait(timeout=PARENT_POLL_SECONDS)
        except subprocess.TimeoutExpired:
            if os.getppid() != parent:
                raise _Stopped("its runner is gone", 1) from None


def guard(argv: list[str]) -> int:
    """Run ``<engine> run ... IMAGE CMD`` as a named container that never outlives this job.

    A job that ends by itself leaves nothing behind (``--rm``).  Stopped by a signal (SIGTERM, SIGHUP,
    SIGINT) or orphaned (its runner died: a cancelled or lost job), the guard removes the container itself.
    Killed outright (SIGKILL: a walltime, a cancel), it cannot: the record it left in ``$IWORKFLOW_CONTAINER_RECORDS``
    tells the runner or pool that killed it which container to remove.
    """
    if len(argv) < 3 or os.path.basename(argv[0]) not in ENGINES or argv[1] != "run":
        print(f"usage: python -m iworkflow.containers {{docker|podman}} run [OPTIONS] IMAGE COMMAND; got {argv}",
              file=sys.stderr)
        return 2
    from .config import load_settings

    settings = load_settings()
    env = dict(os.environ)
    for key, value in (("IWORKFLOW_SERVER_URL", settings.server_url), ("IWORKFLOW_TOKEN", settings.token)):
        if value:
            env[key] = value  # a setting from a config file reaches the container too
    parent = os.getppid()
    name = NAME_PREFIX + secrets.token_hex(8)
    engine = argv[0]
    runtime = os.path.basename(engine)
    records = os.environ.get(RECORDS_ENV)
    record: str | None = None
    proc: subprocess.Popen | None = None
    try:
        _stop_on_signals()
        if records:
            record = _record(records, runtime, name)
        proc = subprocess.Popen([engine, "run", "--name", name, *_user_args(runtime), *argv[2:]], env=env)
        code = _wait(proc, parent)
    except _Stopped as stopped:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not cut the removal short
        logger.warning("container %s: %s; removing it", name, stopped)
        if proc is not None:
            proc.kill()
            proc.wait()
        remove_container(engine, name)
        code = stopped.code
    if record is not None:
        _unlink(record)
    return code


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("IWORKFLOW_LOG_LEVEL", "WARNING"))
    return guard(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
