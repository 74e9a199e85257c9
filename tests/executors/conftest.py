"""Fixtures for the executor tests: one Ray instance per session, a ready single-node Slurm, podman and the
images built from this checkout (once per session)."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SLURM_SETUP = REPO / ".ci" / "slurm.sh"


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """Start a Ray head once (its start-up takes seconds) as another machine (``other_machine``: its own mount
    namespace, the driver's files and this session's temp dirs hidden), and join it as a driver; the Ray
    executor reuses the instance this process joined, so every job runs where nothing of the driver is."""
    import socket
    import sys

    ray = pytest.importorskip("ray")
    from other_machine import OtherMachine

    machine = OtherMachine(tmp_path_factory.getbasetemp())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp_dir = f"/tmp/ray-iwf-{uuid.uuid4().hex[:8]}"  # short: Ray's socket paths must fit in 107 bytes
    log = open(tmp_path_factory.getbasetemp() / "ray-head.log", "wb")
    head = machine.popen([os.path.join(os.path.dirname(sys.executable), "ray"), "start", "--head", "--block",
                          "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
                          "--include-dashboard", "false", "--object-store-memory", str(200 * 2**20),
                          "--temp-dir", temp_dir, "--disable-usage-stats"],
                         # as the driver: a token the head generates would land in the shared ~/.ray of the machine
                         {**os.environ, "RAY_AUTH_MODE": "disabled"}, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                ray.init(address=f"127.0.0.1:{port}", configure_logging=False, log_to_driver=False)
                break
            except (ConnectionError, RuntimeError):
                if head.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(1)
        yield ray
    finally:
        if ray.is_initialized():
            ray.shutdown()
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)
        machine.cleanup()


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


# --- podman: the engine, the debootstrapped base image, and the images built from this checkout ------
PODMAN_SETUP = REPO / ".ci" / "podman.sh"
BASE_IMAGE = os.environ.get("IWORKFLOW_BASE_IMAGE", "localhost/debian-python:bookworm")
WORKER_IMAGE = "localhost/iworkflow-worker:test"
SERVER_IMAGE = "localhost/iworkflow-server:test"
HPO_IMAGE = "localhost/iworkflow-hpo:test"


def _podman_ready() -> bool:
    if shutil.which("podman") is None:
        return False
    return subprocess.run(["podman", "image", "exists", BASE_IMAGE], capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="session")
def podman_base() -> str:
    """Podman and the Debian base image: made by .ci/podman.sh in CI (CI=true), else skipped unless it is there."""
    if not _podman_ready():
        if os.environ.get("CI") != "true":
            pytest.skip(f"no podman or no {BASE_IMAGE}; make them with `bash .ci/podman.sh` (root)")
        subprocess.run(["bash", str(PODMAN_SETUP)], check=True)
    assert _podman_ready(), f"podman image exists {BASE_IMAGE} fails after .ci/podman.sh"
    return BASE_IMAGE


@dataclass
class Build:
    """One ``podman build`` of this session: the image, how long it took, its output."""

    image: str
    seconds: float
    output: str


def _image_id(image: str) -> str | None:
    proc = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", image], capture_output=True,
                          text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def podman_build(dockerfile: Path, image: str, **build_args: str) -> Build:
    """``podman build`` from the repository root (layers cached between runs); fails the test with its log.
    The image this tag named before (an earlier session's build) is removed, so rebuilds do not pile up."""
    args = [arg for key, value in build_args.items() for arg in ("--build-arg", f"{key}={value}")]
    previous = _image_id(image)
    start = time.monotonic()
    proc = subprocess.run(["podman", "build", "--network", "host", "-f", str(dockerfile), *args, "-t", image,
                           str(REPO)], capture_output=True, text=True, check=False, timeout=1200)
    seconds = time.monotonic() - start
    assert proc.returncode == 0, f"building {image} from {dockerfile.name} failed:\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}"
    if previous is not None and previous != _image_id(image):
        subprocess.run(["podman", "rmi", previous], capture_output=True, check=False)  # kept while in use
    return Build(image, seconds, proc.stdout + proc.stderr)


@pytest.fixture(scope="session")
def worker_image(podman_base) -> Build:
    """containers/worker.Dockerfile built once per session on the Debian base, iworkflow from this checkout."""
    return podman_build(REPO / "containers" / "worker.Dockerfile", WORKER_IMAGE, BASE_IMAGE=podman_base)


@pytest.fixture(scope="session")
def server_image(podman_base) -> Build:
    """containers/server.Dockerfile built once per session on the Debian base."""
    return podman_build(REPO / "containers" / "server.Dockerfile", SERVER_IMAGE, BASE_IMAGE=podman_base)


#: what the HPO example's jobs import (its driver's bayesian-optimization stays on the driver's machine)
HPO_PACKAGES = "numpy>=1.24 scikit-learn>=1.3 xgboost-cpu>=2.0"


@pytest.fixture(scope="session")
def hpo_image(podman_base) -> Build:
    """The HPO example's image: the worker image with the libraries its jobs import in the dependency layer
    (a code change leaves that layer cached); the example's code is not in it."""
    return podman_build(REPO / "containers" / "worker.Dockerfile", HPO_IMAGE, BASE_IMAGE=podman_base,
                        EXTRA_PACKAGES=HPO_PACKAGES)


def podman_containers(prefix: str = "") -> list[str]:
    """Names of the containers podman knows (running or not: `podman ps -a`), those starting with ``prefix``."""
    out = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True,
                         check=True).stdout
    return [name for name in out.split() if name.startswith(prefix)]


@pytest.fixture(scope="session")
def podman_ps(podman_base):
    """``podman_ps(prefix)``: the names of the containers podman knows that start with ``prefix``."""
    return podman_containers


@dataclass
class JobContainers:
    """The containers of one test's jobs, told apart by a label of the test's own: the test sees only these (not
    an earlier test's leftovers, nor another session's jobs) and removes whatever of them is left when it ends."""

    label: str

    @property
    def extra_args(self) -> list[str]:
        """``container_options['extra_args']`` that put the label on a job's container."""
        return ["--label", self.label]

    def names(self) -> list[str]:
        """Names of this test's containers that podman knows (running or not: `podman ps -a`)."""
        out = subprocess.run(["podman", "ps", "-a", "--filter", f"label={self.label}", "--format", "{{.Names}}"],
                             capture_output=True, text=True, check=True).stdout
        return out.split()

    def remove(self) -> None:
        for name in self.names():
            subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True, check=False)


@pytest.fixture
def job_containers(podman_base):
    """A label for this test's job containers; those left when the test ends are removed."""
    containers = JobContainers(f"iworkflow-test={uuid.uuid4().hex}")
    try:
        yield containers
    finally:
        containers.remove()
