"""Ctrl-C on a driver cancels its jobs on every executor: queued ones are dropped, running ones stopped,
the driver exits promptly with a one-line summary, and no job runs to the end."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from broker_cleanup import run_prefix
from waiting import wait_until

import iworkflow
from iworkflow import work

pytestmark = pytest.mark.timeout(300)
CLI = [os.path.join(os.path.dirname(sys.executable), "iworkflow")]
RABBITMQ_URL = os.environ.get("IWORKFLOW_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
ACTIVEMQ_URL = os.environ.get("IWORKFLOW_TEST_STOMP", "stomp://admin:admin@127.0.0.1:61613")
JOBS = 8

DRIVER = '''
import os, sys, time
import iworkflow
from iworkflow import work

folder = sys.argv[1]


def nap(i, folder):
    import os, time
    with open(os.path.join(folder, f"started-{i}"), "w") as f:
        f.write(str(os.getpid()))
    for _ in range(12000):  # 600 s, unless the test releases the jobs (a thread cannot be killed)
        if os.path.exists(os.path.join(folder, "release")):
            return i
        time.sleep(0.05)
    open(os.path.join(folder, f"done-{i}"), "w").close()
    return i


if __name__ == "__main__":  # Dask's nannies import this module again
    w = work(return_work=True, total_memory=100)(nap)(multi_jobs_kwargs_list=[{"i": i, "folder": folder}
                                                                             for i in range(%d)])
    w.submit()
    print("submitted", w.internal_id, flush=True)
    w.wait_results()
''' % JOBS


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is gone for our purpose: it runs nothing
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _started(folder: Path) -> dict[int, int]:
    found = {}
    for path in folder.glob("started-*"):
        text = path.read_text().strip()
        if text:
            found[int(path.name.split("-")[1])] = int(text)
    return found


class Driver:
    """A driver process running DRIVER with one executor, interrupted with SIGINT once jobs run."""

    def __init__(self, tmp_path: Path, executor: str, **env: str):
        self.folder = tmp_path / "marks"
        self.folder.mkdir()
        script = tmp_path / "driver.py"
        script.write_text(DRIVER)
        self.stderr_path = tmp_path / "driver.err"
        self.proc = subprocess.Popen([sys.executable, str(script), str(self.folder)], stdout=subprocess.PIPE,
                                     stderr=open(self.stderr_path, "wb"), text=True,
                                     env={**os.environ, "IWORKFLOW_EXECUTOR": executor, **env})
        line = self.proc.stdout.readline()
        assert line.startswith("submitted"), f"driver did not submit: {line!r}; {self.stderr()}"
        self.work_id = line.split()[1]

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def interrupt_once_running(self, running: int = 1) -> tuple[dict[int, int], float]:
        """SIGINT once ``running`` jobs have started; returns the jobs started and how long the exit took."""
        wait_until(lambda: len(_started(self.folder)), lambda n: n >= running, timeout=180,
                   what="jobs started before the interrupt")
        started = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"the driver did not exit within 120 s of SIGINT; stderr:\n{self.stderr()}")
        return _started(self.folder), time.monotonic() - started

    def check_cancelled(self) -> None:
        """The summary line says how many jobs were cancelled; no job ran to its end; every started job's
        process is gone."""
        summary = [line for line in self.stderr().splitlines() if "cancelled" in line and "unfinished job" in line]
        assert len(summary) == 1, self.stderr()
        assert f"cancelled {JOBS} unfinished job(s) of 1 work(s)" in summary[0], summary
        wait_until(lambda: [i for i, pid in _started(self.folder).items() if _alive(pid)], lambda alive: not alive,
                   timeout=60, what="jobs still running after the interrupt")
        assert not list(self.folder.glob("done-*")), "a job ran to its end"


@pytest.fixture
def local_driver(tmp_path):
    drivers: list[Driver] = []
    yield lambda executor, **env: drivers.append(Driver(tmp_path, executor, **env)) or drivers[-1]
    for d in drivers:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


@pytest.mark.parametrize("executor", ["local", "dask", "ray"])
def test_ctrl_c_stops_the_drivers_own_pool(local_driver, executor):
    if executor != "local":
        pytest.importorskip(executor)
    driver = local_driver(executor, IWORKFLOW_SLOTS="2")
    _started_jobs, took = driver.interrupt_once_running()
    driver.check_cancelled()
    print(f"{executor}: exited {took:.1f} s after SIGINT")


def test_ctrl_c_drops_the_thread_executors_queued_jobs(local_driver):
    """Threads cannot be killed: the running jobs end (here: released), the queued ones never start."""
    driver = local_driver("thread", IWORKFLOW_SLOTS="2")
    wait_until(lambda: len(_started(driver.folder)), lambda n: n >= 2, timeout=120, what="jobs started")
    driver.proc.send_signal(signal.SIGINT)
    wait_until(driver.stderr, lambda text: "dropped 6 queued job(s) of the thread executor" in text, timeout=60,
               what="the queued jobs dropped")
    (driver.folder / "release").touch()
    assert driver.proc.wait(timeout=120) != 0
    assert len(_started(driver.folder)) == 2, "a queued job started after Ctrl-C"


@pytest.mark.usefixtures("slurm_cluster")
def test_ctrl_c_scancels_the_drivers_slurm_jobs(local_driver):
    driver = local_driver("slurm")
    driver.interrupt_once_running()
    driver.check_cancelled()
    name = f"iw-{driver.work_id[:8]}"
    wait_until(lambda: subprocess.run(["squeue", "--noheader", f"--name={name}", "--format=%i %T"],
                                      capture_output=True, text=True, check=False).stdout.strip(),
               lambda listed: listed == "", timeout=60, what=f"Slurm jobs {name} still queued or running")


def probe(x):
    return x


BROKERS = [pytest.param(RABBITMQ_URL, marks=pytest.mark.rabbitmq, id="rabbitmq"),
           pytest.param(ACTIVEMQ_URL, marks=pytest.mark.activemq, id="activemq")]


@pytest.mark.parametrize("url", BROKERS)
def test_ctrl_c_drops_queued_broker_jobs_and_stops_running_ones(local_driver, tmp_path, url):
    prefix = run_prefix("e2e")
    env = dict(IWORKFLOW_BROKER=url, IWORKFLOW_DESTINATION_PREFIX=prefix, IWORKFLOW_QUEUE="q",
               IWORKFLOW_HEARTBEAT_INTERVAL="0.5")
    worker = subprocess.Popen([*CLI, "worker", "--queue", "q", "--slots", "2"], stdout=subprocess.PIPE,
                              stderr=open(tmp_path / "worker.log", "wb"), env={**os.environ, **env})
    try:
        assert "ready" in worker.stdout.readline().decode(), (tmp_path / "worker.log").read_text()
        driver = local_driver("broker", **env)
        started, took = driver.interrupt_once_running(running=2)  # 2 run, 6 wait in the queue
        driver.check_cancelled()
        # a job sent behind the cancelled ones comes back only once they have all left the queue
        iworkflow.configure(broker=url, executor="broker", queue="q", destination_prefix=prefix)
        assert work(probe)(7) == 7
        assert _started(driver.folder).keys() == started.keys(), "a queued job started after the cancel"
        assert not [i for i, pid in _started(driver.folder).items() if _alive(pid)]
        assert not list(driver.folder.glob("done-*"))
        print(f"broker: exited {took:.1f} s after SIGINT")
    finally:
        iworkflow.shutdown()
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()



def nap(i, folder):
    with open(os.path.join(folder, f"started-{i}"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)
    open(os.path.join(folder, f"done-{i}"), "w").close()
    return i


@pytest.mark.parametrize("executor", ["local", "dask", "ray"])
def test_work_cancel_stops_its_running_jobs_and_drops_the_queued_ones(tmp_path, executor):
    if executor != "local":
        pytest.importorskip(executor)
    iworkflow.configure(broker="memory://", executor=executor, slots=2)
    try:
        w = work(return_work=True, map_results=True)(nap)(
            multi_jobs_kwargs_list=[{"i": i, "folder": str(tmp_path)} for i in range(6)])
        w.submit()
        wait_until(lambda: len(_started(tmp_path)), lambda n: n >= 2, timeout=120, what="jobs started")
        w.cancel(reason="the test cancels it")
        results = w.wait_results(timeout=120)
        assert len(results.get_failures()) == 6, results.get_failures()
        assert w.get_status() == "cancelled"
        if executor != "dask":  # a Dask task already running finishes on its worker (documented)
            wait_until(lambda: [i for i, pid in _started(tmp_path).items() if _alive(pid)], lambda alive: not alive,
                       timeout=60, what="cancelled jobs still running")
        assert len(_started(tmp_path)) == 2 and not list(tmp_path.glob("done-*"))
    finally:
        iworkflow.shutdown()


def test_a_work_whose_jobs_all_ended_is_not_cancelled_when_the_driver_exits(embedded):
    """The waiting driver can be woken (and exit) before the inbox thread's bookkeeping of the last result has run:
    a work still tracked then, with every job ended, is left as it ended, not recorded as cancelled."""
    from iworkflow.runtime import get_runtime

    def plus_one(x):
        return x + 1

    w = work(return_work=True)(plus_one)(x=1)
    w.submit()
    assert w.wait_results(timeout=60) == 2
    runtime = get_runtime()
    runtime.track(w)  # as if the last result's callback had not run yet when the driver exited
    assert runtime.cancel_outstanding("the driver exited") == 0
    assert w.get_status() == "finished" and w.cancel() == 0 and w.get_status() == "finished"
