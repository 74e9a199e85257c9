"""Run a job's runner inside a container image (``container_options``), and end the container with the job.

The job message goes in on stdin and the signed result comes out on stdout, so the image needs only
iworkflow and the libraries the job imports; the job's code comes from the source cache, mounted at the
same path (or fetched over HTTP from the server), as on any other machine.  Docker and Podman run the
container outside the caller's process tree, so a killed caller would leave it running: their command
goes through :func:`guard`, which names the container and removes it whenever the job ends early
(walltime, cancel, a lost worker).
"""
from __future__ import annotations

import logging
import os
import secrets
import shlex
import signal
import subprocess
import sys
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
PARENT_POLL_SECONDS = 0.5


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


def remove_container(engine: str, name: str) -> None:
    """Kill and remove a container now (no grace period); a missing one is fine."""
    runtime = os.path.basename(engine)
    cmd = [engine, "rm", "-f", *(["-t", "0"] if runtime == "podman" else []), name]
    subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False, timeout=60)


def _sweeper(read_end: int, engine: str, name: str) -> None:
    """In a session of its own, wait until the guard is gone; unless it said the job ended, remove the container.

    A SIGKILLed guard (the runner's walltime kills its process group) cannot clean up itself; this can.
    """
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # never hold the runner's pipes open: it waits for them to close
        os.dup2(devnull, fd)
    os.closerange(3, read_end)
    os.closerange(read_end + 1, 1 << 16)
    said = b""
    while chunk := os.read(read_end, 64):
        said += chunk
    if said != b"done":
        remove_container(engine, name)
        time.sleep(1.0)
        remove_container(engine, name)  # one created while the killed client was still setting it up
    os._exit(0)


def guard(argv: list[str]) -> int:
    """Run ``<engine> run ... IMAGE CMD`` as a named container that never outlives this job.

    The container is removed when this process is killed (walltime), and when the runner that started it
    dies (a cancelled or lost job); a job that ends by itself leaves nothing behind through ``--rm``.
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
    read_end, write_end = os.pipe()
    if os.fork() == 0:
        os.close(write_end)
        _sweeper(read_end, engine, name)
    os.close(read_end)
    cmd = [engine, "run", "--name", name, *_user_args(os.path.basename(engine)), *argv[2:]]
    proc = subprocess.Popen(cmd, env=env)
    while True:
        try:
            code = proc.wait(timeout=PARENT_POLL_SECONDS)
            break
        except subprocess.TimeoutExpired:
            if os.getppid() != parent:  # the runner is gone: the sweeper removes the container
                logger.warning("runner of container %s is gone; removing the container", name)
                proc.send_signal(signal.SIGKILL)
                os._exit(1)
    os.write(write_end, b"done")
    os.close(write_end)
    return code


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("IWORKFLOW_LOG_LEVEL", "WARNING"))
    return guard(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
