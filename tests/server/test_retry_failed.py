"""Retry of failed jobs through the server: the driver runs them again while their work is still running and its
caller gets the new result; a work that ended, or a job that succeeded, is refused with the reason."""
from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from cluster import Cluster
from waiting import wait_until

import iworkflow


def _flaky_work(marker: Path, gate: Path):
    """Call 0 fails the first time (it leaves ``marker``) and succeeds after; call 1 waits for ``gate``, so the
    work is still running when call 0 has failed."""
    marker_file, gate_file = str(marker), str(gate)

    @iworkflow.work(map_results=True)
    def flaky(i):
        import os as _os
        import time as _time

        if i == 0:
            if not _os.path.exists(marker_file):
                open(marker_file, "w").close()
                raise RuntimeError("first attempt fails")
            return "second attempt ok"
        while not _os.path.exists(gate_file):
            _time.sleep(0.05)
        return "waited"

    return flaky


def _drive(flaky, outcome: dict) -> threading.Thread:
    @iworkflow.workflow(local=True, name="retry-failed")
    def driver():
        outcome["id"] = iworkflow.current_workflow().internal_id
        return flaky(multi_jobs_kwargs_list=[{"i": 0}, {"i": 1}])

    def run():
        try:
            outcome["value"] = driver()
        except Exception as exc:  # noqa: BLE001 - the test reads it
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.rabbitmq
@pytest.mark.timeout(180)
def test_retry_failed_through_the_api_reruns_the_failed_job_and_the_driver_gets_the_success(tmp_path):
    cluster = Cluster(tmp_path)
    marker, gate = tmp_path / "failed-once", tmp_path / "gate"
    outcome: dict = {}
    try:
        cluster.start_server()
        cluster.start_worker("worker", "--slots", "2")
        cluster.configure_driver(result_timeout=120)
        thread = _drive(_flaky_work(marker, gate), outcome)
        failed = wait_until(lambda: cluster.get("/jobs", status="failed"), lambda js: len(js) == 1, 60,
                            "call 0 failed")[0]
        assert failed["attempt"] == 1 and "first attempt fails" in failed["error"]
        r = httpx.post(f"{cluster.url}/api/works/{failed['work_id'][:8]}/retry-failed", timeout=10)
        assert r.status_code == 401, "a retry needs the token"
        answer = cluster.post(f"/works/{failed['work_id'][:8]}/retry-failed")
        assert answer["jobs_retried"] == 1 and answer["refused"] == []
        job = wait_until(lambda: cluster.get(f"/jobs/{failed['id']}"), lambda j: j["status"] == "finished", 60,
                         "the retried call finished")
        assert job["attempt"] == 2 and job["error"] is None
        history = [(e["type"], e["attempt"]) for e in cluster.get(f"/jobs/{failed['id']}/log")["events"]]
        assert history.index(("job_failed", 1)) < history.index(("job_retry", 2)) < history.index(("job_finished", 2))
        gate.touch()
        thread.join(90)
        assert "error" not in outcome, outcome.get("error")
        results = outcome["value"]
        assert results.get_result(args={"i": 0}) == "second attempt ok"
        assert results.get_result(args={"i": 1}) == "waited" and not results.get_failures()
        wf = wait_until(lambda: cluster.get(f"/workflows/{outcome['id']}"), lambda w: w["status"] == "finished", 30,
                        "the workflow finished")
        assert wf["status"] == "finished"
    finally:
        gate.touch()
        iworkflow.shutdown()
        cluster.stop()


def test_retry_failed_of_an_ended_work_is_refused_with_the_reason(runtime, server):
    from test_api import auth, run_failing_workflow, wait_for

    wf_id = run_failing_workflow()
    c = httpx.Client(base_url=server.url, timeout=10)
    wait_for(lambda: c.get(f"/api/workflows/{wf_id}").json(), lambda w: w.get("status") in ("failed", "subfinished"))
    server.flush()
    r = c.post(f"/api/workflows/{wf_id}/retry-failed", headers=auth(server))
    assert r.status_code == 409 and "has ended" in r.json()["detail"] and "resubmit" in r.json()["detail"]
    jobs = c.get("/api/jobs", params={"workflow_id": wf_id, "status": "failed"}).json()
    assert len(jobs) == 1 and jobs[0]["attempt"] == 1


def test_retry_failed_of_a_work_without_failures_does_nothing(runtime, server):
    from test_api import auth, run_failing_workflow, wait_for

    wf_id = run_failing_workflow()
    c = httpx.Client(base_url=server.url, timeout=10)
    works = wait_for(lambda: c.get("/api/works", params={"workflow_id": wf_id}).json(), lambda ws: len(ws) == 2)
    server.flush()
    ok = next(w for w in works if w["name"] == "prepare")
    r = c.post(f"/api/works/{ok['id']}/retry-failed", headers=auth(server))
    assert r.status_code == 409 and r.json()["detail"] == "no failed job to retry"
    jobs = c.get("/api/jobs", params={"work_id": ok["id"]}).json()
    assert [(j["status"], j["attempt"]) for j in jobs] == [("finished", 1)]


def test_retry_via_cli_with_a_short_work_id_reruns_the_failed_job(runtime, server, tmp_path):
    from test_cli import cli

    marker, gate = tmp_path / "failed-once", tmp_path / "gate"
    outcome: dict = {}
    thread = _drive(_flaky_work(marker, gate), outcome)
    try:
        c = httpx.Client(base_url=server.url, timeout=10)
        failed = wait_until(lambda: c.get("/api/jobs", params={"status": "failed"}).json(), lambda js: len(js) == 1,
                            30, "call 0 failed")[0]
        out = cli("retry", failed["work_id"][:8], "--server", server.url, token=server.token).stdout
        assert out == f"workflow {outcome['id']}: 1 failed job(s) sent again\n"
        wait_until(lambda: c.get(f"/api/jobs/{failed['id']}").json(), lambda j: j["status"] == "finished", 30,
                   "the retried call finished")
        gate.touch()
        thread.join(60)
        assert outcome["value"].get_result(args={"i": 0}) == "second attempt ok"
    finally:
        gate.touch()
        thread.join(60)


def test_retry_via_cli_of_an_ended_workflow_says_why(runtime, server):
    from test_api import run_failing_workflow, wait_for
    from test_cli import cli

    wf_id = run_failing_workflow()
    wait_for(lambda: httpx.get(f"{server.url}/api/workflows/{wf_id}").json(),
             lambda w: w.get("status") in ("failed", "subfinished"))
    server.flush()
    proc = cli("retry", wf_id[:8], "--server", server.url, token=server.token, check=False)
    assert proc.returncode == 1 and "HTTP 409" in proc.stderr and "has ended" in proc.stderr


@pytest.mark.browser
def test_retry_failed_button_asks_for_the_token_then_reruns_the_failed_job(runtime, server, page, tmp_path):
    wait = 20_000
    marker, gate = tmp_path / "failed-once", tmp_path / "gate"
    outcome: dict = {}
    thread = _drive(_flaky_work(marker, gate), outcome)
    try:
        c = httpx.Client(base_url=server.url, timeout=10)
        failed = wait_until(lambda: c.get("/api/jobs", params={"status": "failed"}).json(), lambda js: len(js) == 1,
                            30, "call 0 failed")[0]
        page.goto(f"{server.url}/#/workflow/{outcome['id']}")
        page.locator("button.retry-btn").click()
        page.locator("#auth").wait_for(state="visible", timeout=wait)
        assert "bearer token" in page.locator("#auth-reason").inner_text()
        assert c.get(f"/api/jobs/{failed['id']}").json()["status"] == "failed", "no retry without the token"
        page.locator("#auth-token").fill(server.token)
        page.locator("#auth-form button[type=submit]").click()
        page.locator("button.retry-btn").click()
        page.wait_for_function("document.querySelector('.retry-msg').textContent.includes('retry sent: 1 failed jobs')",
                               timeout=wait)
        job = wait_until(lambda: c.get(f"/api/jobs/{failed['id']}").json(), lambda j: j["status"] == "finished", 30,
                         "the retried call finished")
        assert job["attempt"] == 2
        page.locator("button.retry-btn").wait_for(state="hidden", timeout=wait)
        gate.touch()
        thread.join(60)
        assert outcome["value"].get_result(args={"i": 0}) == "second attempt ok"
        page.locator("#wf-head .badge[data-status='finished']").wait_for(timeout=wait)
    finally:
        gate.touch()
        thread.join(60)


def test_a_retry_the_driver_refuses_shows_the_job_failed_again_with_the_reason(runtime, server):
    """The server still records the work as running (a job still queued) when its driver no longer routes it (a
    driver that ended it, the race of a late work_finished): the driver's inbox answers the retry with
    retry_refused, and the job reads failed, saying why."""
    from test_api import auth, run_failing_workflow

    from iworkflow.messages import EVENTS_TOPIC, Event, encode_event

    run_failing_workflow()  # this driver's inbox is consuming, as while any of its works runs

    def emit(event: Event) -> None:
        runtime.bus.broadcast(EVENTS_TOPIC, encode_event(event, runtime.secret))

    wf_id, work_id, key = "wf-refused-0001", "work-refused-0001", "job-0"
    emit(Event("workflow_started", wf_id, data={"name": "refused"}))
    emit(Event("work_submitted", wf_id, work_id, data={"name": "gone", "executor": "thread", "queue": "default",
                                                       "jobs": [{"key": key, "args": {}}, {"key": "job-1", "args": {}}],
                                                       "parents": [],
                                                       "reply_to": runtime.inbox.destination}))
    emit(Event("job_failed", wf_id, work_id, key, 1, data={"error": "RuntimeError: boom", "worker": "w1"}))
    server.flush()
    c = httpx.Client(base_url=server.url, timeout=10)
    r = c.post(f"/api/works/{work_id}/retry-failed", headers=auth(server))
    assert r.status_code == 200 and r.json()["jobs_retried"] == 1
    job = wait_until(lambda: c.get("/api/jobs", params={"work_id": work_id, "q": key}).json()[0],
                     lambda j: j["status"] == "failed", 30, "the refusal recorded")
    assert job["attempt"] == 1 and "retry refused: its work had ended in the driver" in job["error"]
    assert "RuntimeError: boom" in job["error"]
    history = [e["type"] for e in c.get(f"/api/jobs/{job['id']}/log").json()["events"]]
    assert history[-3:] == ["job_failed", "job_retry", "retry_refused"], history


def test_a_retried_job_reads_retrying_with_its_next_attempt_until_that_starts(runtime, server):
    from test_api import auth

    from iworkflow.messages import EVENTS_TOPIC, Event, encode_event

    def emit(event: Event) -> None:
        runtime.bus.broadcast(EVENTS_TOPIC, encode_event(event, runtime.secret))

    wf_id, work_id = "wf-retrying-0001", "work-retrying-0001"
    emit(Event("workflow_started", wf_id, data={"name": "retrying"}))
    emit(Event("work_submitted", wf_id, work_id, data={
        "name": "slow", "executor": "thread", "queue": "default", "parents": [],
        "jobs": [{"key": "job-0", "args": {}}, {"key": "job-1", "args": {}}], "reply_to": "results.driver-idle"}))
    emit(Event("job_failed", wf_id, work_id, "job-0", 1, data={"error": "RuntimeError: boom", "worker": "w1"}))
    server.flush()
    c = httpx.Client(base_url=server.url, timeout=10)
    assert c.post(f"/api/workflows/{wf_id}/retry-failed", headers=auth(server)).json()["jobs_retried"] == 1
    job = c.get("/api/jobs", params={"work_id": work_id, "q": "job-0"}).json()[0]
    assert (job["status"], job["attempt"]) == ("retrying", 2)
    emit(Event("job_started", wf_id, work_id, "job-0", 2, data={"worker": "w2"}))
    job = wait_until(lambda: c.get(f"/api/jobs/{job['id']}").json(), lambda j: j["status"] != "retrying", 30,
                     "the new attempt's start recorded")
    assert (job["status"], job["attempt"], job["worker"]) == ("running", 2, "w2")
    emit(Event("job_finished", wf_id, work_id, "job-0", 2, data={"worker": "w2"}))
    job = wait_until(lambda: c.get(f"/api/jobs/{job['id']}").json(), lambda j: j["status"] != "running", 30,
                     "the new attempt's end recorded")
    assert (job["status"], job["attempt"], job["error"]) == ("finished", 2, None)
