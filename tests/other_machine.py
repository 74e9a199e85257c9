"""Start a worker process as if on another machine: it shares nothing with the driver but the broker.

The command runs in its own mount namespace (``unshare -m``) where tmpfs hides the driver's
``IWORKFLOW_HOME`` (its source and result stores), the driver's code (this repository's ``tests/`` and
``examples/``) and the test's working directory; it gets its own ``IWORKFLOW_HOME``, ``TMPDIR`` and
working directory, on a tmpfs of its own namespace (so the driver cannot read them either).  Only the
installed library stays visible, as on a machine where iworkflow is
installed.  Where ``unshare`` cannot make a mount namespace the caller skips, saying why.
"""
from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
DRIVER_CODE = (TESTS, TESTS.parent / "examples")


@functools.lru_cache(maxsize=1)
def why_unavailable() -> str:
    """Empty when this process can start commands in their own mount namespace, else why not."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return "the unshare command (util-linux) is not installed"
    target = tempfile.mkdtemp(prefix="iworkflow-unshare-probe-")
    try:
        probe = subprocess.run([unshare, "-m", "--propagation", "private", "mount", "-t", "tmpfs", "none", target],
                               capture_output=True, text=True, timeout=30)
    finally:
        os.rmdir(target)
    if probe.returncode != 0:
        why = (probe.stderr + probe.stdout).strip()
        return f"`unshare -m` cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {why}"
    return ""


def require() -> None:
    """Skip the calling test, saying why, where workers cannot be started as another machine."""
    reason = why_unavailable()
    if reason:
        pytest.skip(f"cannot simulate another machine: {reason}")


class OtherMachine:
    """One simulated machine: its own home, temp and working directories, the driver's files hidden."""

    def __init__(self, *hidden: str | os.PathLike):
        require()
        self.root = Path(tempfile.mkdtemp(prefix="iworkflow-other-machine-"))
        self.home = self.root / "home"
        self.tmp = self.root / "tmp"
        driver_home = os.environ.get("IWORKFLOW_HOME")
        self.hidden = [Path(p).resolve() for p in (*DRIVER_CODE, *(h for h in [driver_home] if h), *hidden)]

    def env(self, base: dict[str, str]) -> dict[str, str]:
        return {**base, "IWORKFLOW_HOME": str(self.home), "TMPDIR": str(self.tmp), "PWD": str(self.root)}

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` wrapped so that it runs in this machine's mount namespace and working directory."""
        mounts = " && ".join(f"mount -t tmpfs -o size=1m,mode=0555 iworkflow-hidden {shlex.quote(str(p))}"
                             for p in self.hidden if p.exists())
        root = shlex.quote(str(self.root))
        # the machine's own directories live on a tmpfs of its namespace: the driver cannot see them either
        own = f"mount -t tmpfs iworkflow-machine {root} && mkdir {root}/home {root}/tmp"
        script = f"{mounts} && {own} && cd {root} && exec \"$@\""
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "other-machine", *argv]

    def popen(self, argv: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.command(argv), env=self.env(env), cwd=self.root, **kwargs)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
