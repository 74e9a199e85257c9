"""Wrap a job's runner command in a container runtime (``container_options``)."""
from __future__ import annotations

import shlex

from .errors import ConfigurationError

RUNTIMES = ("apptainer", "singularity", "docker", "podman")


def wrap_command(inner: str, options: dict, home: str | None = None) -> str:
    """Return the shell command running the job inside ``options['container_image']``.

    The image must have iworkflow installed; the job message travels on stdin, so only the
    iworkflow home (source cache) is mounted.
    """
    image = options.get("container_image")
    runtime = options.get("runtime", "apptainer")
    if not image:
        raise ConfigurationError("container_options needs 'container_image' (e.g. 'docker://python:3.11')")
    if runtime not in RUNTIMES:
        raise ConfigurationError(f"container runtime {runtime!r} is unknown; use one of {RUNTIMES}")
    python = shlex.quote(options.get("python", "python3"))
    run = f"{python} -m iworkflow.runner once"
    if home is None:
        from .config import load_settings

        home = load_settings().home
    extra = [shlex.quote(a) for a in options.get("extra_args", [])]
    if runtime in ("apptainer", "singularity"):
        # apptainer passes the host environment in: drop the host's PYTHONPATH (its site-packages
        # would shadow the image's), keep IWORKFLOW_SECRET; the home is bound at the same path
        parts = ["env", "-u", "PYTHONPATH", f"IWORKFLOW_HOME={shlex.quote(home)}", runtime, "exec",
                 "--bind", shlex.quote(home), *extra]
    else:
        # docker/podman pass only what -e names; run as the calling user so the home mount is writable
        user = ["--user", '"$(id -u):$(id -g)"'] if runtime == "docker" else ["--userns=keep-id"]
        parts = [runtime, "run", "--rm", "-i", *user, "-e", "IWORKFLOW_SECRET",
                 "-e", shlex.quote(f"IWORKFLOW_HOME={home}"), "-v", shlex.quote(f"{home}:{home}"), *extra]
    return " ".join([*parts, shlex.quote(image), run])
