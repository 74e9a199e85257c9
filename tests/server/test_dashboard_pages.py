"""Each dashboard page and button in headless Chromium, on a recorded run of 5 stages, 21 works and 500 jobs
with failures, retries and a nested workflow (``dashboard_seed``), and the API docs page offline."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from dashboard_seed import STAGES, Seeded, record_to_file, seed, seed_deep

from iworkflow.messages import Event

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(os.environ.get("IWORKFLOW_SCREENSHOTS", Path(tempfile.gettempdir()) / "iworkflow-screenshots"))
WAIT = 20_000


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=False)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Seeded, Path]:
    path = tmp_path_factory.mktemp("recorded") / "run.db"
    return record_to_file(path), path


@pytest.fixture
def server(make_server, recorded, tmp_path):
    """A server on a copy of the recorded 500-job run (recorded once per module)."""
    copy = tmp_path / "run.db"
    shutil.copyfile(recorded[1], copy)
    return make_server(db_url=f"sqlite:///{copy}")


@pytest.fixture
def seeded(server, recorded) -> Seeded:
    return recorded[0]


@pytest.fixture
def live(server):
    return seed(server, live=True)


def text_of(page, selector: str) -> str:
    page.locator(selector).first.wait_for(timeout=WAIT)
    return page.locator(selector).first.inner_text()


def wait_text(page, selector: str, text: str) -> None:
    page.wait_for_function("([s, t]) => { const e = document.querySelector(s); return e && e.textContent.includes(t); }",
                           arg=[selector, text], timeout=WAIT)


def test_docs_page_renders_with_no_request_leaving_the_server(server, page):
    outside: list[str] = []
    own = urlsplit(server.url).netloc

    def guard(route):
        if urlsplit(route.request.url).netloc != own:
            outside.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    page.route("**/*", guard)
    page.goto(server.url + "/docs")
    wait_text(page, ".swagger-ui .info .title", "iworkflow server")
    page.locator(".swagger-ui .opblock-summary-path", has_text="/api/workflows/{ref}/cancel").first.wait_for(timeout=WAIT)
    page.locator("button.authorize").first.click()
    wait_text(page, ".modal-ux", "Bearer")
    assert outside == [], f"/docs asked other hosts: {outside}"
    schema = httpx.get(server.url + "/openapi.json", timeout=10).json()
    assert schema["components"]["securitySchemes"]["token"] == {
        "type": "http", "scheme": "bearer", "description": schema["components"]["securitySchemes"]["token"]["description"]}
    assert schema["paths"]["/api/workflows/{ref}/cancel"]["post"]["security"] == [{"token": []}]


def test_workflow_list_shows_a_nested_workflow_under_its_parent(server, page, seeded):
    page.goto(server.url + "/")
    parent = page.locator(f"tr.wf-row[data-id='{seeded.workflow_id}']")
    parent.wait_for(timeout=WAIT)
    assert page.locator(f"tr.wf-row[data-id='{seeded.child_id}']").count() == 0, "nested workflow is not a top-level row"
    assert "500 jobs" in parent.inner_text() and "30 failed" in parent.inner_text()
    parent.locator("button.children-toggle").click()
    child = page.locator(f"tr.wf-row.nested[data-id='{seeded.child_id}']")
    child.wait_for(timeout=WAIT)
    assert child.get_attribute("data-parent") == seeded.workflow_id
    assert "nested-tuning" in child.inner_text()


def test_dag_gives_repeated_work_names_distinct_labels_and_draws_every_edge(server, page, seeded):
    page.goto(f"{server.url}/#/workflow/{seeded.workflow_id}")
    nodes = page.locator("svg#dag g.work-node")
    page.wait_for_function("document.querySelectorAll('svg#dag g.work-node').length === 21", timeout=WAIT)
    labels = [nodes.nth(i).get_attribute("data-label") for i in range(nodes.count())]
    assert len(set(labels)) == 21 == sum(n for _, n, _ in STAGES)
    assert {f"fit #{i}" for i in range(1, 11)} <= set(labels) and "load" in labels
    assert page.locator("svg#dag path.edge:not(.root)").count() == len(seeded.edges)
    fit_ids = set(seeded.works["fit"])
    score_ids = set(seeded.works["score"])
    drawn = {(e.get_attribute("data-source"), e.get_attribute("data-target"))
             for e in page.locator("svg#dag path.edge:not(.root)").all()}
    assert drawn == set(seeded.edges)
    assert any(s in fit_ids and t in score_ids for s, t in drawn)
    shot(page, "page-dag.png")


def test_dag_zooms_pans_and_expands_then_collapses_a_works_jobs(server, page, seeded):
    page.goto(f"{server.url}/#/workflow/{seeded.workflow_id}")
    page.locator("svg#dag g.work-node").first.wait_for(timeout=WAIT)
    zoom = float(page.locator("svg#dag").get_attribute("data-zoom"))
    page.locator(".dag-tools .zoom-in").click()
    assert float(page.locator("svg#dag").get_attribute("data-zoom")) == pytest.approx(zoom * 1.25, rel=1e-3)
    before = page.locator("svg#dag g.viewport").get_attribute("transform")
    box = page.locator("svg#dag").bounding_box()
    page.mouse.move(box["x"] + 300, box["y"] + 500)
    page.mouse.down()
    page.mouse.move(box["x"] + 200, box["y"] + 400, steps=5)
    page.mouse.up()
    assert page.locator("svg#dag g.viewport").get_attribute("transform") != before, "a drag pans the DAG"
    page.locator(".dag-tools .zoom-fit").click()

    fit = seeded.works["fit"][0]
    toggle = page.locator(f"svg#dag g.work-node[data-id='{fit}'] g.toggle")
    toggle.dispatch_event("click")
    dots = page.locator(f"svg#dag g.work-node[data-id='{fit}'] a.job-dot")
    page.wait_for_function(f"document.querySelectorAll(\"svg#dag g.work-node[data-id='{fit}'] a.job-dot\").length === 40",
                           timeout=WAIT)
    assert page.locator(f"svg#dag g.work-node[data-id='{fit}'] a.job-dot[data-status='failed']").count() == 3
    shot(page, "page-dag-expanded.png")
    page.locator(f"svg#dag g.work-node[data-id='{fit}'] g.toggle").dispatch_event("click")
    page.wait_for_function(f"!document.querySelector(\"svg#dag g.work-node[data-id='{fit}'] a.job-dot\")", timeout=WAIT)
    assert dots.count() == 0

    page.locator(".dag-tools .expand-all").click()
    page.wait_for_function("document.querySelectorAll('svg#dag a.job-dot').length === 500", timeout=WAIT)
    assert page.locator("svg#dag a.job-dot[data-status='failed']").count() == seeded.failed
    page.locator(".dag-tools .collapse-all").click()
    page.wait_for_function("document.querySelectorAll('svg#dag a.job-dot').length === 0", timeout=WAIT)


def test_subworkflow_node_opens_the_nested_workflow_and_the_parent_link_returns(server, page, seeded):
    page.goto(f"{server.url}/#/workflow/{seeded.workflow_id}")
    child = page.locator(f"svg#dag g.subworkflow-node[data-id='{seeded.child_id}']")
    child.wait_for(timeout=WAIT)
    child.dispatch_event("click")
    page.wait_for_function(f"location.hash === '#/workflow/{seeded.child_id}'", timeout=WAIT)
    page.wait_for_function("document.querySelectorAll('svg#dag g.work-node').length === 2", timeout=WAIT)
    assert page.locator("svg#dag path.edge:not(.root)").count() == 1, "tune -> pick"
    page.locator("#parent-link").click()
    page.wait_for_function(f"location.hash === '#/workflow/{seeded.workflow_id}'", timeout=WAIT)
    page.wait_for_function("document.querySelectorAll('svg#dag g.work-node').length === 21", timeout=WAIT)


def test_jobs_table_filters_by_status_worker_and_text_sorts_and_pages(server, page, seeded):
    page.goto(f"{server.url}/#/workflow/{seeded.workflow_id}/jobs")
    wait_text(page, ".pager .page-info", "1–50 of 500")
    page.locator(".page-next").click()
    wait_text(page, ".pager .page-info", "51–100 of 500")

    page.locator("select.f-status").select_option("failed")
    wait_text(page, ".pager .page-info", f"of {seeded.failed}")
    assert page.locator("table.jobs tr.job[data-status='failed']").count() == seeded.failed
    page.locator("select.f-status").select_option("")

    assert page.locator("datalist option[value='node-b:4102']").count() == 1, "reported workers are suggested"
    page.locator("input.f-worker").fill("node-b:4102")
    page.locator("input.f-worker").press("Enter")
    wait_text(page, ".pager .page-info", f"of {seeded.jobs_by_worker['node-b:4102']}")
    # the pager and the rows are drawn from one response: wait for the rows, then check every one
    page.wait_for_function("w => [...document.querySelectorAll('table.jobs tr.job td:nth-child(7)')]"
                           ".every(td => td.textContent === w)", arg="node-b:4102", timeout=WAIT)
    assert set(page.locator("table.jobs tr.job td:nth-child(7)").all_inner_texts()) == {"node-b:4102"}
    page.locator("input.f-worker").fill("")
    page.locator("input.f-worker").press("Enter")

    page.locator("input.f-text").fill("part 3 item 18")
    wait_text(page, ".pager .page-info", "1–1 of 1")
    assert "fit diverged for part 3 item 18" in page.locator("table.jobs").inner_text()
    page.locator("input.f-text").fill("")
    wait_text(page, ".pager .page-info", "of 500")

    page.locator("th.sortable[data-sort='attempt']").click()
    page.locator("th.sortable[data-sort='attempt']").click()
    wait_text(page, "th.sortable[data-sort='attempt']", "▼")
    page.wait_for_function("document.querySelector('table.jobs tr.job td:nth-child(6)').textContent === '2'", timeout=WAIT)
    attempts = [int(t) for t in page.locator("table.jobs tr.job td:nth-child(6)").all_inner_texts()]
    assert attempts == sorted(attempts, reverse=True) and attempts.count(2) == seeded.retried
    shot(page, "page-jobs.png")


def test_job_page_shows_a_failed_jobs_traceback_output_and_history(server, page, seeded):
    job = httpx.get(f"{server.url}/api/jobs", params={"workflow_id": seeded.workflow_id, "q": seeded.failed_key[:12]},
                    timeout=10).json()[0]
    page.goto(f"{server.url}/#/job/{job['id']}")
    wait_text(page, "pre#job-log", "Traceback (most recent call last)")
    assert "loss=nan after 3 steps" in page.locator("pre#job-log").inner_text()
    assert page.locator("pre#job-log").get_attribute("data-live") == "0"
    assert page.locator("#job-events tr.event").all_inner_texts()[-1].count("job_failed") == 1
    shot(page, "page-job-log.png")
    page.locator("#log-tail").select_option("100")
    full = page.locator("pre#job-log").inner_text()
    assert full.splitlines()[0].startswith("job "), "100 lines hold the whole log"
    page.locator("#log-tail").select_option("10000")
    assert "loss=nan after 3 steps" in page.locator("pre#job-log").inner_text()


def test_job_page_tails_a_running_job_then_shows_its_stored_log(server, page, live):
    job = httpx.get(f"{server.url}/api/jobs", params={"q": live.running_key, "workflow_id": live.workflow_id},
                    timeout=10).json()[0]
    assert job["status"] == "running"
    page.goto(f"{server.url}/#/job/{job['id']}")
    page.wait_for_function("document.querySelector('pre#job-log') && document.querySelector('pre#job-log').dataset.live === '1'",
                           timeout=WAIT)
    recorder = server.server.recorder
    for n, line in enumerate(("step 1 of 3", "step 2 of 3")):
        recorder.submit([Event("job_output", job["workflow_id"], job["work_id"], job["job_key"], 1, ts=time.time() + n,
                               data={"worker": job["worker"], "output": f"writing report\n{line}\n"})])
        server.flush()
        wait_text(page, "pre#job-log", line)
        assert page.locator("pre#job-log").get_attribute("data-live") == "1", "still running: the tail is live"
    recorder.submit([Event("job_failed", job["workflow_id"], job["work_id"], job["job_key"], 1, data={
        "worker": job["worker"], "start": job["started_at"], "end": job["started_at"] + 1,
        "error": "RuntimeError: report could not be written", "output": "writing report\ndisk full\n"})])
    server.flush()
    page.wait_for_function("document.querySelector('pre#job-log').dataset.live === '0'", timeout=WAIT)
    wait_text(page, "pre#job-log", "disk full")
    assert page.locator("#job-events tr.event[data-type='job_failed']").count() == 1


def test_timeline_draws_every_started_job_on_its_workers_lanes_and_a_histogram_per_work(server, page, seeded):
    page.goto(f"{server.url}/#/workflow/{seeded.workflow_id}/timeline")
    page.wait_for_function("document.querySelectorAll('#task-stream a.task').length === 500", timeout=WAIT)
    for worker, n in seeded.jobs_by_worker.items():
        assert page.locator(f"#task-stream a.task[data-worker='{worker}']").count() == n
    assert page.locator("#task-stream a.task rect.failed").count() == seeded.failed
    page.wait_for_function("document.querySelectorAll('.histogram').length === 21", timeout=WAIT)
    fit1 = page.locator(".histogram[data-label='fit #1'] rect.bin")
    assert sum(int(fit1.nth(i).get_attribute("data-count")) for i in range(fit1.count())) == 40 - 3
    shot(page, "page-timeline.png")


def test_workers_page_shows_each_workers_queue_slots_heartbeat_running_jobs_and_the_lost_one(server, page, live):
    page.goto(f"{server.url}/#/workers")
    page.wait_for_function("document.querySelectorAll('#workers tr.worker').length === 4", timeout=WAIT)
    lost = "node-d:4104"
    page.locator(f"#workers tr.worker[data-name='{lost}'][data-state='lost']").wait_for(timeout=WAIT)
    for w in ("node-a:4101", "node-b:4102", "node-c:4103"):
        row = page.locator(f"#workers tr.worker[data-name='{w}']")
        assert row.get_attribute("data-state") == "alive"
        cells = row.locator("td").all_inner_texts()
        assert cells[2:4] == ["default", "4"] and cells[7].endswith("ago")
    running = {w: int(page.locator(f"#workers tr.worker[data-name='{w}'] td.n-running").inner_text())
               for w in live.jobs_by_worker}
    assert sum(running.values()) == live.running == 9
    api = httpx.get(f"{server.url}/api/jobs", params={"status": "running", "limit": 100}, timeout=10).json()
    for w, n in running.items():
        assert n == sum(1 for j in api if j["worker"] == w)
        assert page.locator(f"#workers tr.worker[data-name='{w}'] td.running-jobs a").count() == n
    assert "1 lost" in page.locator("#workers-view .counts").inner_text()
    shot(page, "page-workers.png")


def test_cancel_button_asks_for_the_token_then_cancels_the_workflow(server, page, live):
    page.goto(f"{server.url}/#/workflow/{live.workflow_id}")
    page.locator("button.cancel-btn").click()
    page.locator("button.confirm-cancel").click()
    page.locator("#auth").wait_for(state="visible", timeout=WAIT)
    assert "bearer token" in page.locator("#auth-reason").inner_text()
    assert httpx.get(f"{server.url}/api/workflows/{live.workflow_id}", timeout=10).json()["status"] == "running"
    page.locator("#auth-token").fill(server.token)
    page.locator("#auth-form button[type=submit]").click()
    page.locator("button.confirm-cancel").click()
    wait_text(page, ".action-msg", f"cancelled: {live.running} unfinished jobs")
    page.wait_for_function("document.querySelector('#wf-head .badge').dataset.status === 'cancelled'", timeout=WAIT)
    assert httpx.get(f"{server.url}/api/workflows/{live.workflow_id}", timeout=10).json()["status"] == "cancelled"
    page.reload()
    page.locator("#wf-head .badge[data-status='cancelled']").wait_for(timeout=WAIT)
    assert not page.locator("button.cancel-btn").is_visible(), "a cancelled workflow offers no cancel"
    assert page.evaluate("localStorage.getItem('iworkflow-token')") == server.token, "the token is entered once"


def test_a_dag_of_60_works_in_12_stages_is_laid_in_12_columns_and_fits_the_view(server, page):
    wf = seed_deep(server, stages=12, width=5)
    page.goto(f"{server.url}/#/workflow/{wf}")
    page.wait_for_function("document.querySelectorAll('svg#dag g.work-node').length === 60", timeout=WAIT)
    columns = {round(n.locator("rect").first.bounding_box()["x"]) for n in page.locator("svg#dag g.work-node").all()}
    assert len(columns) == 12
    labels = {n.get_attribute("data-label") for n in page.locator("svg#dag g.work-node").all()}
    assert labels == {f"step #{i}" for i in range(1, 61)}
    view = page.locator("svg#dag").bounding_box()
    drawn = page.locator("svg#dag g.viewport").bounding_box()
    assert drawn["width"] <= view["width"] + 1 and drawn["height"] <= view["height"] + 1, "fit shows the whole DAG"
    assert drawn["x"] >= view["x"] - 1 and drawn["y"] >= view["y"] - 1
    page.locator(".dag-tools .zoom-in").click()
    page.locator(".dag-tools .zoom-in").click()
    page.locator(".dag-tools .zoom-in").click()
    zoomed = page.locator("svg#dag g.viewport").bounding_box()
    assert zoomed["width"] > view["width"], "zoomed in past the view"
    assert zoomed["x"] < view["x"] + view["width"] and zoomed["y"] < view["y"] + view["height"] \
        and zoomed["x"] + zoomed["width"] > view["x"] and zoomed["y"] + zoomed["height"] > view["y"], "still in view"
    shot(page, "page-dag-deep.png")


def test_a_server_that_needs_a_token_to_read_asks_for_it_once(make_server, page):
    server = make_server(read_token_required=True)
    seeded = seed(server)
    page.goto(server.url + "/")
    page.locator("#auth").wait_for(state="visible", timeout=WAIT)
    assert page.locator(f"tr.wf-row[data-id='{seeded.workflow_id}']").count() == 0
    page.locator("#auth-token").fill(server.token)
    page.locator("#auth-form button[type=submit]").click()
    page.locator(f"tr.wf-row[data-id='{seeded.workflow_id}']").wait_for(timeout=WAIT)
    page.goto(f"{server.url}/#/workflow/{seeded.workflow_id}/jobs")
    page.reload()
    wait_text(page, ".pager .page-info", "of 500")
    assert page.locator("#auth").is_hidden() and page.locator("#token-state").inner_text() == "token set"
    page.locator("#token-btn").click()
    page.locator("#auth").wait_for(state="visible", timeout=WAIT)
    assert "kept in this browser" in page.locator("#auth-reason").inner_text()


def test_names_and_errors_are_shown_as_text_never_run_as_markup(server, page):
    evil = "<img src=x onerror=\"document.title='pwned'\">"
    wf, work = uuid.uuid4().hex, uuid.uuid4().hex
    server.server.recorder.submit([
        Event("workflow_started", wf, data={"name": evil}),
        Event("work_submitted", wf, work, data={"name": evil, "jobs": [{"key": "k1", "args": {"x": evil}}]}),
        Event("job_started", wf, work, "k1", data={"worker": evil}),
        Event("job_failed", wf, work, "k1", data={"worker": evil, "error": evil, "output": evil}),
        Event("worker_heartbeat", data={"worker": evil, "queue": evil, "slots": 1})])
    server.flush()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    for route in ("/", f"/#/workflow/{wf}", f"/#/workflow/{wf}/jobs", f"/#/workflow/{wf}/timeline", "/#/workers"):
        page.goto(server.url + route)
        page.wait_for_function("arg => document.body.innerText.includes(arg)", arg=evil, timeout=WAIT)
        assert page.locator("img[src=x]").count() == 0 and page.title() == "iworkflow"
    job = httpx.get(f"{server.url}/api/jobs", params={"workflow_id": wf}, timeout=10).json()[0]
    page.goto(f"{server.url}/#/job/{job['id']}")
    wait_text(page, "pre#job-log", evil)
    assert page.locator("img[src=x]").count() == 0 and page.title() == "iworkflow" and dialogs == []
