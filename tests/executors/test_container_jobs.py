"""Jobs in containers, for real: ``container_options={"container_image": ..., "runtime": "podman"}`` runs the
job's runner in the worker image built from this checkout (on the debootstrapped Debian base, .ci/podman.sh).
The value comes back signed, the job's code comes from the source cache, ``init_env`` runs inside, and a
walltime, a cancel or a lost runner removes the container."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from waiting import wait_until

import iworkflow
from iworkflow import work, workflow
from iworkflow.containers import NAME_PREFIX
from iworkflow.errors import WorkCancelled

pytestmark = [pytest.mark.slow, pytest.mark.podman]


@pytest.fixture
def in_image(worker_image):
    """The embedded runtime (local runner processes) and container options naming the worker image."""
    iworkflow.configure(broker="memory://", executor="local", slots=2)
    yield {"container_image": worker_image.image, "runtime": "podman"}
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


def test_job_returns_its_value_and_ran_inside_the_image(in_image, worker_image, podman_ps):
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
    assert podman_ps(NAME_PREFIX) == []


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


def test_walltime_kills_the_container_and_leaves_none_behind(in_image, podman_ps):
    @work(container_options=in_image, max_walltime=3)
    def sleepy() -> str:
        import time as _time

        _time.sleep(120)
        return "woke up"

    @workflow(local=True)
    def wf():
        return sleepy()

    start = time.monotonic()
    with pytest.raises(TimeoutError, match="max_walltime=3"):
        wf()
    assert time.monotonic() - start < 30
    wait_until(lambda: podman_ps(NAME_PREFIX), lambda names: names == [], what="job containers left")


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
def test_cancel_stops_the_running_container(worker_image, podman_ps, tmp_path):
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
        opts = {"container_image": worker_image.image, "runtime": "podman"}

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
        wait_until(lambda: podman_ps(NAME_PREFIX), timeout=60, what="the job's container")
        # what `POST /api/workflows/{id}/cancel` broadcasts
        runtime.bus.broadcast(CONTROL_TOPIC, Control(action=CANCEL, workflow_id=outcome["id"],
                                                     reason="cancelled by the test").encode(runtime.secret))
        driver.join(30)
        assert not driver.is_alive(), "the cancelled call must end"
        assert isinstance(outcome.get("error"), WorkCancelled), outcome
        wait_until(lambda: podman_ps(NAME_PREFIX), lambda names: names == [], what="job containers left")
    finally:
        iworkflow.shutdown()
        worker.terminate()
        worker.wait(30)
        log.close()
