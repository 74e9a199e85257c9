"""The command lines ``runner.job_command`` builds for ``init_env`` and ``container_options``."""
from __future__ import annotations

import shlex
import sys

import pytest

from iworkflow.config import Settings
from iworkflow.containers import container_command, mounts
from iworkflow.errors import ConfigurationError
from iworkflow.messages import JobPayload, SourceRef
from iworkflow.runner import job_command

HOME = "/data/iw home"
SETTINGS = Settings(home=HOME)
GUARD = [sys.executable, "-m", "iworkflow.containers"]


def payload(**kw) -> JobPayload:
    return JobPayload(func=b"", func_digest="d", args=b"", **kw)


def shell(cmd: list[str]) -> list[str]:
    assert cmd[:2] == ["/bin/bash", "-c"] and len(cmd) == 3
    return shlex.split(cmd[2])


def words(options: dict, init_env: str | None = None, source: SourceRef | None = None,
          settings: Settings = SETTINGS) -> list[str]:
    return shlex.split(container_command(options, init_env, source, settings))


def test_plain_and_init_env():
    assert shell(job_command(payload())) == [sys.executable, "-m", "iworkflow.runner", "once"]
    got = shell(job_command(payload(init_env="source /opt/setup.sh; OMP_NUM_THREADS=1")))
    assert got == ["source", "/opt/setup.sh;", "OMP_NUM_THREADS=1", sys.executable, "-m", "iworkflow.runner", "once"]


def test_job_command_wraps_the_runner_in_the_container(monkeypatch):
    monkeypatch.setenv("IWORKFLOW_HOME", HOME)
    got = shell(job_command(payload(container_options={"container_image": "img", "runtime": "podman"})))
    assert got[:6] == ["exec", *GUARD, "podman", "run"]
    assert got[-6:] == ["--entrypoint", "python3", "img", "-m", "iworkflow.runner", "once"]


def test_apptainer_is_the_default_runtime_and_binds_the_home():
    assert words({"container_image": "docker://python:3.11"}) == [
        "env", "-u", "PYTHONPATH", f"IWORKFLOW_HOME={HOME}", "apptainer", "exec", "--bind", HOME,
        "docker://python:3.11", "python3", "-m", "iworkflow.runner", "once"]


def test_singularity_with_its_own_python():
    got = words({"container_image": "/images/worker.sif", "runtime": "singularity", "python": "/opt/venv/bin/python"})
    assert got[4:6] == ["singularity", "exec"] and got[-4:] == ["/opt/venv/bin/python", "-m", "iworkflow.runner", "once"]


@pytest.mark.parametrize("runtime", ["docker", "podman"])
def test_engines_go_through_the_guard_and_get_the_secret_by_name(runtime):
    opts = {"container_image": "ghcr.io/org/worker:1.0", "runtime": runtime, "extra_args": ["--network", "host"]}
    got = words(opts)
    assert got[:7] == [*GUARD, runtime, "run", "--rm", "-i"]
    for name in ("IWORKFLOW_SECRET", "IWORKFLOW_SERVER_URL", "IWORKFLOW_TOKEN"):
        assert got[got.index(name) - 1] == "-e"  # by name: the value never shows in `ps`
    assert f"IWORKFLOW_HOME={HOME}" in got and f"IWORKFLOW_SOURCE_STORE={HOME}/store" in got
    assert got[got.index("-v") + 1] == f"{HOME}:{HOME}"
    assert got[-8:] == ["--network", "host", "--entrypoint", "python3", "ghcr.io/org/worker:1.0", "-m",
                        "iworkflow.runner", "once"]


def test_init_env_runs_inside_the_container():
    got = words({"container_image": "img", "runtime": "podman"}, init_env="source /opt/lcg/setup.sh;")
    assert got[-5:] == ["--entrypoint", "/bin/bash", "img", "-c", "source /opt/lcg/setup.sh; python3 -m iworkflow.runner once"]
    got = words({"container_image": "img"}, init_env="export A=1;")
    assert got[-3:] == ["/bin/bash", "-c", "export A=1; python3 -m iworkflow.runner once"]


def test_the_stores_the_job_reads_are_mounted_once():
    assert mounts(SETTINGS) == [HOME]
    elsewhere = Settings(home=HOME, source_store="/scratch/store")
    source = SourceRef(digest="0" * 64, store="/shared/sources")
    assert mounts(elsewhere, source) == [HOME, "/scratch/store", "/shared/sources"]
    assert mounts(SETTINGS, SourceRef(digest="0" * 64, store="http://server:8765")) == [HOME]
    got = words({"container_image": "img", "runtime": "docker"}, source=source, settings=elsewhere)
    assert [got[i + 1] for i, w in enumerate(got) if w == "-v"] == [f"{p}:{p}" for p in
                                                                      (HOME, "/scratch/store", "/shared/sources")]


def test_quoting_survives_spaces_and_shell_characters():
    image = "docker://reg/img:tag  two;rm -rf /"
    got = words({"container_image": image}, settings=Settings(home="/a  b"))
    assert image in got and "/a  b" in got


@pytest.mark.parametrize("opts, message", [
    ({"runtime": "docker"}, "needs 'container_image'"),
    ({"container_image": "img", "runtime": "lxc"}, "container runtime 'lxc' is unknown"),
    ({"container_image": "img", "extra_args": "--network host"}, "must be a list of strings"),
    ({"container_image": "img", "image": "typo"}, r"unknown key\(s\) \['image'\]"),
    ("img", "must be a dict"),
])
def test_bad_options(opts, message):
    with pytest.raises(ConfigurationError, match=message):
        job_command(payload(container_options=opts))
