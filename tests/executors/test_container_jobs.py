"""Jobs in containers, for real: ``container_options={"container_image": ..., "runtime": "podman"}`` runs the
job's runner in the worker image built from this checkout (on the debootstrapped Debian base, .ci/podman.sh).
The value comes back signed, the job's code comes from the source cache, ``init_env`` runs inside, and a
walltime, a cancel or a lost runner removes the container.  Each test labels its jobs' containers and looks at those
only (``job_containers``), so a container another test left behind cannot pass or fail it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from waiting import wait_until

import iworkflow
from iworkflow import work, workflow
from iworkflow.containers import NAME_PREFIX, RECORDS_ENV, remove_recorded
from iworkflow.errors import WorkCancelled

pytestmark = [pytest.mark.slow, pytest.mark.podman]


@pytest.fixture
def in_image(worker_image, job_containers):
    """The embedded runtime (local runner processes) and container options naming the worker image (and this
    test's label)."""
    iworkflow.configure(broker="memory://", executor="local", slots=2)
    yield {"container_image": worker_image.image, "runtime": "podman", "extra_args": job_containers.extra_args}
    iworkflow.shutdown()


def root_fs_type(mounts: str) -> str:
    return next(line.split()[2] for line in mounts.splitlines() if line.split()[1] == "/")


def image_file(image: str, path: str) -> str:
    return subprocess.run(["podman", "run", "--rm", "--entrypoint", "cat", image, path], capture_output=True,
                          text=True, check=True).stdout


def where_am_i(x: int) -> dict:
    import os
    import sys

    return {"value": x * 2, "os_release": open("/etc/os-release").read(), "python": sys.executable,
            "mounts": open("/proc/mounts").read(), "engine": os.environ.get("container"),
            "init_env": os.environ.get("IW_INSIDE")}


def test_job_returns_its_value_and_ran_inside_the_image(in_image, worker_image, job_containers):
    job = work(where_am_i, container_options=in_image, init_env="export IW_INSIDE=$(cat /etc/hostname);")

    @workflow(local=True)
    def wf():
        return job(x=21)

    seen = wf()
    assert seen["value"] == 42
    # the image's /etc/os-release (its Debian base; the host here is Debian 12 too, so the rest shows the
    # difference): an overlay root, the image's own interpreter, podman's mark, init_env run in the container
    assert seen["os_release"] == image_file(worker_image.image, "/etc/os-release")
    assert 'ID=debian' in seen["os_release"]
    assert root_fs_type(seen["mounts"]) == "overlay" != root_fs_type(Path("/proc/mounts").read_text())
    assert seen["python"] == "/opt/venv/bin/python3" and not Path("/opt/venv/bin/python3").exists()
    assert seen["engine"] == "podman"
    assert seen["init_env"] and seen["init_env"] != Path("/etc/hostname").read_text().strip()
    assert job_containers.names() == []


def test_new_code_runs_in_the_same_image_through_the_source_cache(in_image, tmp_path):
    """The base container + source cache pattern: the job imports the workflow's own module, and a change to
    that module reaches the next run without a new image."""
    src = tmp_path / "project"
    src.mkdir()
    helper = src / "physics.py"

    @work(container_options=in_image)
    def model(n: int) -> str:
        import physics

        return physics.describe(n)

    @workflow(local=True, source_dir=str(src))
    def run():
        return model(multi_jobs_kwargs_list=[{"n": 1}, {"n": 2}])

    helper.write_text("def describe(n):\n    return f'v1:{n}'\n")
    assert sorted(run()) == ["v1:1", "v1:2"]
    helper.write_text("def describe(n):\n    return f'v2:{n * 10}'\n")
    assert sorted(run()) == ["v2:10", "v2:20"]


def test_a_large_value_comes_back_through_the_mounted_result_store(in_image):
    @work(container_options=in_image)
    def big(n: int) -> bytes:
        return bytes(range(256)) * n

    @workflow(local=True)
    def wf():
        return big(n=3 * 4096)  # 3 MiB: over the 1 MiB inline limit

    assert wf() == bytes(range(256)) * (3 * 4096)


def test_a_container_without_the_secret_cannot_answer(in_image):
    """The job message is verified inside the container and the result is signed there: a container given
    another secret refuses the job, and its words never become the job's value."""
    @work(container_options=in_image, init_env="export IWORKFLOW_SECRET=not-the-secret;")
    def forged() -> str:
        return "should never be seen"

    @workflow(local=True)
    def wf():
        return forged()

    with pytest.raises(RuntimeError, match="exited with code") as err:
        wf()
    assert "signature" in str(err.value)


@pytest.mark.parametrize("executor", ["local", "thread"])
def test_walltime_kills_the_container_and_leaves_none_behind(in_image, job_containers, executor):
    """Past ``max_walltime`` the job fails with TimeoutError, and by then its container is gone: in a runner process
    of the pool (which kills what a job leaves running) and in the driver's own threads (nothing else cleans up)."""
    iworkflow.configure(broker="memory://", executor=executor, slots=2)
    marker = Path(os.environ["IWORKFLOW_HOME"]) / f"started-{uuid.uuid4().hex}"  # the home is mounted

    @work(container_options=in_image, max_walltime=4)
    def sleepy(marker: str) -> str:
        import time as _time

        open(marker, "w").close()
        _time.sleep(120)
        return "woke up"

    @workflow(local=True)
    def wf():
        return sleepy(marker=str(marker))

    start = time.monotonic()
    with pytest.raises(TimeoutError, match="max_walltime=4"):
        wf()
    assert time.monotonic() - start < 30
    assert marker.exists(), "the job was killed while it ran in its container"
    assert job_containers.names() == [], "the failure is reported once the container is removed"


def test_an_unknown_image_fails_the_job_with_the_engine_s_words(in_image):
    @work(container_options={**in_image, "container_image": "localhost/no-such-image:never"})
    def nothing() -> int:
        return 1

    @workflow(local=True)
    def wf():
        return nothing()

    with pytest.raises(RuntimeError, match="exited with code 125") as err:
        wf()
    assert "no-such-image" in str(err.value)


@pytest.mark.rabbitmq
def test_cancel_stops_the_running_container(worker_image, job_containers, tmp_path):
    """A workflow cancelled while its job runs in a container on an ``iworkflow worker``: the worker kills the
    job's runner, and the container goes with it."""
    from broker_cleanup import run_prefix

    from iworkflow.messages import CANCEL, CONTROL_TOPIC, Control

    url, prefix, queue = "amqp://guest:guest@127.0.0.1:5672/", run_prefix("t"), "containers"
    env = dict(os.environ, IWORKFLOW_BROKER=url, IWORKFLOW_DESTINATION_PREFIX=prefix)
    cli = Path(sys.executable).parent / "iworkflow"
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen([str(cli), "worker", "--queue", queue, "--slots", "1", "--grace", "5"], env=env,
                              stdout=subprocess.PIPE, stderr=log)
    try:
        assert b"ready" in worker.stdout.readline(), (tmp_path / "worker.log").read_text()
        runtime = iworkflow.configure(broker=url, executor="broker", queue=queue, destination_prefix=prefix)
        opts = {"container_image": worker_image.image, "runtime": "podman", "extra_args": job_containers.extra_args}

        @work(container_options=opts)
        def forever() -> str:
            import time as _time

            _time.sleep(300)
            return "never"

        outcome: dict = {}

        @workflow(local=True, name="cancel-in-container")
        def wf():
            outcome["id"] = iworkflow.current_workflow().internal_id
            return forever()

        def drive():
            try:
                outcome["value"] = wf()
            except Exception as exc:  # noqa: BLE001 - the test looks at it
                outcome["error"] = exc

        driver = threading.Thread(target=drive)
        driver.start()
        running = wait_until(job_containers.names, timeout=60, what="the job's container")
        assert running[0].startswith(NAME_PREFIX)
        # what `POST /api/workflows/{id}/cancel` broadcasts
        runtime.bus.broadcast(CONTROL_TOPIC, Control(action=CANCEL, workflow_id=outcome["id"],
                                                     reason="cancelled by the test").encode(runtime.secret))
        driver.join(30)
        assert not driver.is_alive(), "the cancelled call must end"
        assert isinstance(outcome.get("error"), WorkCancelled), outcome
        wait_until(job_containers.names, lambda names: names == [], what="job containers left")
    finally:
        iworkflow.shutdown()
        worker.terminate()
        worker.wait(30)
        log.close()


# --- the guard on its own: `python -m iworkflow.containers podman run ...` -----------------------------------
def guard_command(image: str, label: str) -> list[str]:
    return [sys.executable, "-m", "iworkflow.containers", "podman", "run", "--rm", "-i", "--label", label,
            "--entrypoint", "sleep", image, "300"]


def running(job_containers) -> list[str]:
    out = subprocess.run(["podman", "ps", "--filter", f"label={job_containers.label}", "--format", "{{.Names}}"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def test_a_guard_stopped_by_sigterm_removes_its_container_before_it_exits(worker_image, job_containers):
    """SIGTERM (Slurm's scancel or time limit, a runner ending what a job left running) ends the container too."""
    guard = subprocess.Popen(guard_command(worker_image.image, job_containers.label), stdin=subprocess.PIPE)
    try:
        wait_until(lambda: running(job_containers), timeout=60, what="the guard's container running")
        guard.send_signal(signal.SIGTERM)
        assert guard.wait(60) == 128 + signal.SIGTERM
        assert job_containers.names() == []
    finally:
        guard.kill()


def test_an_orphaned_guard_removes_its_container(worker_image, job_containers):
    """The process that ran the guard dies (a lost runner, a killed Dask worker): the guard notices, removes the
    container and exits."""
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               "print(subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE).pid, flush=True); "
                               "time.sleep(300)", *guard_command(worker_image.image, job_containers.label)],
                              stdout=subprocess.PIPE, text=True)
    guard_pid = int(parent.stdout.readline())
    wait_until(lambda: running(job_containers), timeout=60, what="the guard's container running")
    parent.kill()
    parent.wait()
    wait_until(job_containers.names, lambda names: names == [], what="the orphaned guard's container")
    wait_until(lambda: os.path.exists(f"/proc/{guard_pid}"), lambda alive: not alive, what="the guard exiting")


def test_a_guard_killed_outright_leaves_a_record_its_runner_removes_the_container_by(worker_image, job_containers,
                                                                                       tmp_path):
    """SIGKILL (a walltime, a cancel) gives the guard no chance: the record it left names the container to remove."""
    records = tmp_path / "records"
    records.mkdir()
    guard = subprocess.Popen(guard_command(worker_image.image, job_containers.label), stdin=subprocess.PIPE,
                             env={**os.environ, RECORDS_ENV: str(records)}, start_new_session=True)
    names = wait_until(lambda: running(job_containers), timeout=60, what="the guard's container running")
    assert [p.name for p in records.iterdir()] == names
    os.killpg(guard.pid, signal.SIGKILL)  # the guard and its podman client
    guard.wait()
    assert job_containers.names() == names, "podman still has the container of a killed guard"
    assert remove_recorded(str(records)) == names
    assert job_containers.names() == [] and not records.exists()
