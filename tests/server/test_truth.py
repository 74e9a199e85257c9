"""What the server shows is true: running means a runner started the job, a retried job shows its current state
with its history, failures are not a green 'finished', cancelled and detached workflows end, one worker name.

The RabbitMQ tests run a real `iworkflow server` and `iworkflow worker` (subprocesses); this process drives.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from cluster import Cluster
from waiting import wait_until

import iworkflow

def _gated_work(started: Path, gate: Path):
    """A work whose calls note when they started (a file named for the call), print, and wait for ``gate``."""
    started_dir, gate_file = str(started), str(gate)

    @iworkflow.work(map_results=True)
    def gated(i):
        import os as _os
        import time as _time

        with open(_os.path.join(started_dir, str(i)), "w") as f:
            f.write(repr(_time.time()))
        print(f"hello from call {i}")
        while not _os.path.exists(gate_file):
            _time.sleep(0.05)
        return i

    return gated


@pytest.mark.rabbitmq
@pytest.mark.timeout(180)
def test_prefetched_jobs_are_queued_and_running_ones_carry_their_start(tmp_path):
    cluster = Cluster(tmp_path)
    started, gate = tmp_path / "started", tmp_path / "gate"
    started.mkdir()
    outcome: dict = {}
    try:
        cluster.start_server()
        worker_proc, worker = cluster.start_worker("worker", "--slots", "2", "--name", "node-a")
        assert worker == "node-a"
        cluster.configure_driver(result_timeout=120)
        gated = _gated_work(started, gate)

        @iworkflow.workflow(local=True, name="prefetch")
        def driver():
            return gated(multi_jobs_kwargs_list=[{"i": i} for i in range(8)]).get_all_results()

        thread = threading.Thread(target=lambda: outcome.update(value=driver()), daemon=True)
        thread.start()
        wait_until(lambda: len(list(started.iterdir())), lambda n: n == 2, 60, "two calls started")
        # the worker holds more than its two slots (its prefetch): they are queued, not running
        workers = wait_until(lambda: cluster.get("/workers"),
                             lambda ws: ws and ws[0]["running"] == 2 and ws[0]["held"] >= 1, 30,
                             "the worker reporting 2 running jobs and prefetched ones")
        assert workers[0]["name"] == worker and workers[0]["slots"] == 2 and workers[0]["queue"] == "q"
        running = wait_until(lambda: cluster.get("/jobs", status="running"), lambda js: len(js) == 2, 30,
                             "two running jobs")
        counts = cluster.get("/workflows")[0]["counts"]
        assert (counts["running"], counts["queued"]) == (2, 6), counts
        for job in running:
            began = float((started / str(json.loads(job["args"])["i"])).read_text())
            assert job["worker"] == worker
            assert job["started_at"] is not None and job["started_at"] <= began + 0.01, (job, began)
        gate.touch()
        thread.join(90)
        assert sorted(outcome["value"].values()) == list(range(8))
        jobs = wait_until(lambda: cluster.get("/jobs"), lambda js: all(j["status"] == "finished" for j in js), 30,
                          "every job finished")
        assert {j["worker"] for j in jobs} == {worker}, "one worker identity, running or finished"
        log = cluster.get(f"/jobs/{jobs[0]['id']}/log")
        assert [e["type"] for e in log["events"]][:1] == ["job_started"]
        assert "hello from call" in (log["output"] or ""), "the output tail is kept after a success too"
        assert "reads the same event backlog" not in cluster.log("server"), "a lone server is not warned"
        worker_proc.send_signal(signal.SIGTERM)
        worker_proc.wait(30)
        stopped = wait_until(lambda: cluster.get("/workers"), lambda ws: ws[0]["state"] == "stopped", 30,
                             "the worker recorded as stopped")
        assert stopped[0]["served"] == 8 and stopped[0]["running"] == 0
    finally:
        gate.touch()
        iworkflow.shutdown()
        cluster.stop()


@pytest.mark.rabbitmq
@pytest.mark.timeout(180)
def test_after_a_cancel_every_work_of_the_workflow_ends(tmp_path):
    cluster = Cluster(tmp_path)
    started, gate = tmp_path / "started", tmp_path / "gate"
    started.mkdir()
    outcome: dict = {}
    holder: dict = {}
    try:
        cluster.start_server()
        cluster.start_worker("worker", "--slots", "2")
        cluster.configure_driver(result_timeout=120)
        gated = _gated_work(started, gate)

        @iworkflow.work
        def downstream(x):
            return x

        @iworkflow.workflow(local=True, name="cancelled")
        def driver():
            holder["id"] = iworkflow.current_workflow().internal_id
            first = gated(multi_jobs_kwargs_list=[{"i": i} for i in range(3)])
            try:
                first.get_all_results()
            except Exception as exc:  # noqa: BLE001 - the cancel ends the upstream calls; the driver goes on
                holder["upstream"] = repr(exc)
            try:
                return downstream(x=1)
            except Exception as exc:  # noqa: BLE001
                return repr(exc)

        thread = threading.Thread(target=lambda: outcome.update(value=driver()), daemon=True)
        thread.start()
        wait_until(lambda: len(list(started.iterdir())), lambda n: n >= 1, 60, "an upstream call started")
        cluster.post(f"/workflows/{holder['id']}/cancel")
        thread.join(90)
        assert not thread.is_alive(), "the driver's calls ended"
        works = wait_until(lambda: cluster.get(f"/workflows/{holder['id']}")["works"],
                           lambda ws: len(ws) == 2 and all(w["counts"]["total"] == w["counts"]["cancelled"]
                                                           + w["counts"]["failed"] + w["counts"]["finished"]
                                                           and w["status"] in ("cancelled", "failed")
                                                           for w in ws),
                           60, "both works ended, with no job left queued")
        assert {w["name"] for w in works} == {"gated", "downstream"}
        assert cluster.get(f"/workflows/{holder['id']}")["status"] == "cancelled"
    finally:
        gate.touch()
        iworkflow.shutdown()
        cluster.stop()


DETACHED = '''
import iworkflow


@iworkflow.work(map_results=True)
def double(x):
    return 2 * x


@iworkflow.workflow(name="detached-truth")
def flow():
    return sum(double(multi_jobs_kwargs_list=[{"x": i} for i in range(3)]).get_all_results().values())
'''


@pytest.mark.rabbitmq
@pytest.mark.timeout(180)
def test_a_detached_drivers_own_work_ends_with_its_workflow(tmp_path):
    cluster = Cluster(tmp_path)
    try:
        cluster.start_server()
        cluster.start_worker("worker", "--slots", "2")
        project = tmp_path / "project"
        project.mkdir()
        (project / "flow.py").write_text(DETACHED)
        env = {**cluster.env, "IWORKFLOW_SERVER_URL": cluster.url, "IWORKFLOW_HOME": str(tmp_path / "submit-home")}
        proc = subprocess.run([sys.executable, "-c", "from iworkflow.cli import main; main()", "submit",
                               "flow.py:flow"], cwd=project, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        wf_id = proc.stdout.strip().splitlines()[-1]
        detail = wait_until(lambda: cluster.get(f"/workflows/{wf_id}"),
                            lambda d: d["status"] in ("finished", "failed", "subfinished", "cancelled")
                            and all(w["status"] in ("finished", "failed", "subfinished", "cancelled")
                                    for w in d["works"]),
                            90, "the workflow and every work of it (its driver's own too) ended")
        assert detail["status"] == "finished", (detail["error"], [j["error"] for j in cluster.get("/jobs")])
        assert {w["name"]: w["status"] for w in detail["works"]} == {"detached-truth.driver": "finished",
                                                                    "double": "finished"}
    finally:
        iworkflow.shutdown()
        cluster.stop()


def test_a_workflow_with_failed_jobs_is_not_finished(server):
    @iworkflow.work(map_results=True)
    def risky(i):
        if i < 3:
            raise ValueError(f"bad {i}")
        return i

    @iworkflow.work(map_results=True)
    def doomed(i):
        raise ValueError(f"bad {i}")

    @iworkflow.workflow(local=True, name="some-fail")
    def some_fail():
        risky(multi_jobs_kwargs_list=[{"i": i} for i in range(5)]).get_all_results()
        return iworkflow.current_workflow().internal_id

    @iworkflow.workflow(local=True, name="all-fail")
    def all_fail():
        doomed(multi_jobs_kwargs_list=[{"i": i} for i in range(3)]).get_all_results()
        return iworkflow.current_workflow().internal_id

    ids = [some_fail(), all_fail()]
    server.flush()
    c = httpx.Client(base_url=server.url, timeout=10)
    statuses = [c.get(f"/api/workflows/{i}").json()["status"] for i in ids]
    assert statuses == ["subfinished", "failed"]
    listed = c.get("/api/workflows", params={"status": "finished"}).json()
    assert listed == [], "neither is listed as finished"


def test_a_job_finished_on_its_second_attempt_shows_that_with_its_history(make_server, tmp_path):
    from test_monitor import make_job

    server = make_server(heartbeat_timeout=1.0, max_attempt=3)
    slow = make_job(tmp_path, block="first")

    @iworkflow.workflow(local=True, name="retry-history")
    def run():
        return slow(x=4)

    try:
        assert run() == 40
    finally:
        (tmp_path / "release").touch()
    server.flush()
    c = httpx.Client(base_url=server.url, timeout=10)
    [job] = c.get("/api/jobs").json()
    assert (job["status"], job["attempt"], job["error"]) == ("finished", 2, None)
    log = c.get(f"/api/jobs/{job['id']}/log").json()
    history = [(e["type"], e["attempt"]) for e in log["events"]]
    for line in [("job_started", 1), ("job_lost", 1), ("job_retried", 2), ("job_started", 2), ("job_finished", 2)]:
        assert line in history, history
    assert history.index(("job_lost", 1)) < history.index(("job_retried", 2)) < history.index(("job_finished", 2))
    assert "lost" not in log["text"].split("\n")[0], "the header shows the current state, not the old error"



@pytest.mark.rabbitmq
@pytest.mark.timeout(180)
def test_a_running_jobs_output_is_live_and_logs_follow_prints_it_to_the_end(tmp_path):
    cluster = Cluster(tmp_path)
    gate = tmp_path / "gate"
    outcome: dict = {}
    try:
        cluster.start_server()
        cluster.start_worker("worker", "--slots", "1")
        cluster.configure_driver(result_timeout=120)
        gate_file = str(gate)

        @iworkflow.work
        def chatty():
            import os as _os
            import time as _time

            print("first line while running", flush=True)
            while not _os.path.exists(gate_file):
                _time.sleep(0.05)
            print("last line")
            return 1

        @iworkflow.workflow(local=True, name="chatty")
        def driver():
            return chatty()

        thread = threading.Thread(target=lambda: outcome.update(value=driver()), daemon=True)
        thread.start()
        job = wait_until(lambda: cluster.get("/jobs"), lambda js: js and js[0]["status"] == "running", 60,
                         "the job running")[0]
        log = wait_until(lambda: cluster.get(f"/jobs/{job['id']}/log"),
                         lambda lg: "first line while running" in (lg["output"] or ""), 60, "the live output tail")
        assert log["job"]["status"] == "running"
        env = {**cluster.env, "IWORKFLOW_SERVER_URL": cluster.url}
        follow = subprocess.Popen([sys.executable, "-c", "from iworkflow.cli import main; main()", "logs", "-f",
                                   str(job["id"]), "--interval", "0.2"], stdout=subprocess.PIPE, text=True, env=env)
        shown = [follow.stdout.readline()]
        while "first line while running" not in shown[-1]:
            assert shown[-1] and len(shown) < 50, shown
            shown.append(follow.stdout.readline())
        gate.touch()
        rest, _ = follow.communicate(timeout=60)
        assert follow.returncode == 0 and "last line" in rest and "job_finished" in rest
        thread.join(60)
        assert outcome["value"] == 1
    finally:
        gate.touch()
        iworkflow.shutdown()
        cluster.stop()


@pytest.mark.rabbitmq
@pytest.mark.timeout(120)
def test_two_servers_on_one_event_backlog_are_warned(tmp_path):
    cluster = Cluster(tmp_path)
    try:
        first = cluster.start_server("first")
        second = cluster.start_server("second")
        wait_until(lambda: cluster.log("first") + cluster.log("second"),
                   lambda text: "reads the same event backlog" in text, 60, "a warning about the shared backlog")
        warned = cluster.log("first") + cluster.log("second")
        assert first in warned or second in warned, "the warning says where the other server is"
    finally:
        cluster.stop()
