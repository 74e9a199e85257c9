"""Fixtures for the executor tests: one Ray instance per session, a ready single-node Slurm."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SLURM_SETUP = REPO / ".ci" / "slurm.sh"


@pytest.fixture(scope="session")
def ray_session():
    """Start Ray once (its start-up takes seconds); the Ray executor reuses the instance this process joined."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _slurm_ready() -> bool:
    if shutil.which("sinfo") is None:
        return False
    proc = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, check=False)
    return proc.returncode == 0 and any(s.rstrip("~*") in ("idle", "mixed", "allocated", "completing")
                                        for s in proc.stdout.split())


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real Slurm: started by .ci/slurm.sh in CI (CI=true), else skipped unless it is already up."""
    if not _slurm_ready():
        if os.environ.get("CI") != "true":
            pytest.skip("no Slurm cluster answering sinfo; start one with `bash .ci/slurm.sh` (root)")
        subprocess.run(["bash", str(SLURM_SETUP)], check=True)
    assert _slurm_ready(), "sinfo shows no usable node after .ci/slurm.sh"
    return SLURM_SETUP
