"""The command lines ``runner.job_command`` builds for ``init_env`` and ``container_options``."""
from __future__ import annotations

import shlex
import sys

import pytest

from iworkflow.containers import wrap_command
from iworkflow.errors import ConfigurationError
from iworkflow.messages import JobPayload
from iworkflow.runner import job_command

HOME = "/data/iw home"


def payload(**kw) -> JobPayload:
    return JobPayload(func=b"", func_digest="d", args=b"", **kw)


def shell(cmd: list[str]) -> list[str]:
    assert cmd[:2] == ["/bin/bash", "-c"] and len(cmd) == 3
    return shlex.split(cmd[2])


def test_plain_and_init_env():
    assert shell(job_command(payload())) == [sys.executable, "-m", "iworkflow.runner", "once"]
    words = shell(job_command(payload(init_env="source /opt/setup.sh; OMP_NUM_THREADS=1")))
    assert words == ["source", "/opt/setup.sh;", "OMP_NUM_THREADS=1", sys.executable, "-m", "iworkflow.runner", "once"]


def test_apptainer(monkeypatch):
    monkeypatch.setenv("IWORKFLOW_HOME", HOME)
    cmd = job_command(payload(container_options={"container_image": "docker://python:3.11", "runtime": "apptainer"}))
    assert shell(cmd) == ["env", "-u", "PYTHONPATH", f"IWORKFLOW_HOME={HOME}", "apptainer", "exec", "--bind", HOME,
                          "docker://python:3.11", "python3", "-m", "iworkflow.runner", "once"]


def test_apptainer_is_the_default_runtime_and_singularity_works_alike():
    opts = {"container_image": "/images/worker.sif"}
    assert shlex.split(wrap_command("", opts, home="/h"))[4:7] == ["apptainer", "exec", "--bind"]
    words = shlex.split(wrap_command("", {**opts, "runtime": "singularity", "python": "/opt/venv/bin/python"},
                                     home="/h"))
    assert words == ["env", "-u", "PYTHONPATH", "IWORKFLOW_HOME=/h", "singularity", "exec", "--bind", "/h",
                     "/images/worker.sif", "/opt/venv/bin/python", "-m", "iworkflow.runner", "once"]


def test_docker_with_init_env_and_extra_args(monkeypatch):
    monkeypatch.setenv("IWORKFLOW_HOME", HOME)
    opts = {"container_image": "ghcr.io/org/worker:1.0", "runtime": "docker", "extra_args": ["--network", "host"]}
    cmd = job_command(payload(init_env="module load apptainer;", container_options=opts))
    script = cmd[2]
    assert script.startswith("module load apptainer; docker run --rm -i ")
    assert '--user "$(id -u):$(id -g)"' in script  # expanded by bash at run time
    words = shlex.split(script)
    assert words[words.index("-v") + 1] == f"{HOME}:{HOME}"
    assert ["-e", "IWORKFLOW_SECRET"] == words[words.index("IWORKFLOW_SECRET") - 1:words.index("IWORKFLOW_SECRET") + 1]
    assert f"IWORKFLOW_HOME={HOME}" in words
    assert words[-7:] == ["--network", "host", "ghcr.io/org/worker:1.0", "python3", "-m", "iworkflow.runner", "once"]


def test_podman_keeps_the_user_id():
    words = shlex.split(wrap_command("", {"container_image": "img", "runtime": "podman"}, home="/h"))
    assert words[:5] == ["podman", "run", "--rm", "-i", "--userns=keep-id"]


def test_quoting_survives_spaces_and_shell_characters():
    image = "docker://reg/img:tag  two;rm -rf /"
    words = shlex.split(wrap_command("", {"container_image": image}, home="/a  b"))
    assert image in words and "/a  b" in words


@pytest.mark.parametrize("opts, message", [
    ({"runtime": "docker"}, "needs 'container_image'"),
    ({"container_image": "img", "runtime": "lxc"}, "container runtime 'lxc' is unknown"),
])
def test_bad_options(opts, message):
    with pytest.raises(ConfigurationError, match=message):
        job_command(payload(container_options=opts))
