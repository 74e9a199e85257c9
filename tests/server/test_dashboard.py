"""The dashboard end to end in Debian's headless Chromium: a failed work shows red in the DAG, with its error."""
from __future__ import annotations

import importlib.util
import os
import tempfile
import time
from pathlib import Path

import pytest

import iworkflow

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(os.environ.get("IWORKFLOW_SCREENSHOTS", Path(tempfile.gettempdir()) / "iworkflow-screenshots"))


def run_pipeline_with_failure() -> str:
    @iworkflow.work
    def load(n):
        return list(range(n))

    @iworkflow.work(map_results=True)
    def fit(data, alpha):
        if alpha > 1:
            raise FloatingPointError(f"fit diverged for alpha={alpha}")
        return sum(data) * alpha

    @iworkflow.work
    def explode(models):
        raise KeyError("model 'best' missing from the results")

    holder = {}

    @iworkflow.workflow(local=True, name="dashboard-demo")
    def pipeline():
        holder["id"] = iworkflow.current_workflow().internal_id
        data = load(n=10)
        models = fit(data=data, multi_jobs_kwargs_list=[{"alpha": a} for a in (0.1, 0.5, 2.0)])
        try:
            explode(models=models)
        except KeyError:
            pass
        return models

    pipeline()
    return holder["id"]


def test_dag_shows_the_failed_node_and_its_error(server, page):
    wf_id = run_pipeline_with_failure()
    time.sleep(0.2)
    server.flush()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(server.url + "/")
    row = page.locator(f"#workflows tr[data-id='{wf_id}']")
    row.wait_for(timeout=10_000)
    assert "dashboard-demo" in row.inner_text()
    assert "5 jobs: 3 finished, 2 failed" in row.inner_text()
    row.click()

    failed = page.locator("svg#dag g.work-node[data-status='failed']")
    failed.wait_for(timeout=10_000)
    assert failed.count() == 1 and failed.get_attribute("data-name") == "explode"
    assert page.locator("svg#dag g.work-node[data-status='subfinished']").get_attribute("data-name") == "fit"
    assert page.locator("svg#dag g.work-node[data-status='finished']").get_attribute("data-name") == "load"
    assert page.locator("svg#dag path.edge:not(.root)").count() == 2, "load -> fit -> explode"
    assert page.locator("svg#dag g.work-node[data-status='failed'] > rect").get_attribute("fill") == "#dc2626"

    failed.click()
    error = page.locator("#panel .job-error")
    error.wait_for(timeout=5_000)
    assert "KeyError" in error.inner_text() and "model 'best' missing" in error.inner_text()
    page.locator("#panel .joblog-btn").click()
    page.wait_for_function("document.querySelector('pre#job-log') && "
                           "document.querySelector('pre#job-log').textContent.includes('Traceback')", timeout=5_000)
    assert page.locator("#job-events tr.event[data-type='job_failed']").count() == 1
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "dashboard-failed-node.png"), full_page=True)
    time.sleep(2.5)
    assert "Traceback" in page.locator("pre#job-log").inner_text(), "the log survives the auto-refresh"
    page.go_back()

    page.locator("svg#dag g.work-node[data-name='fit']").click()
    page.wait_for_function("document.querySelectorAll('#panel tr.job').length === 3", timeout=5_000)
    assert "fit diverged for alpha=2.0" in page.locator("#panel").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "dashboard-dag.png"), full_page=True)
    assert errors == [], f"JavaScript errors on the page: {errors}"


def test_list_refreshes_live(server, page):
    page.goto(server.url + "/")
    page.locator("#empty").wait_for(state="visible", timeout=10_000)

    @iworkflow.work
    def one():
        return 1

    @iworkflow.workflow(local=True, name="appears-live")
    def later():
        return one()

    assert later() == 1
    page.locator("#workflows tr", has_text="appears-live").wait_for(timeout=10_000)
    assert "1 job: 1 finished" in page.locator("#workflows tr", has_text="appears-live").inner_text()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "dashboard-list.png"))


def test_real_run_links_a_nested_workflow_and_draws_the_toy_loops_depends_on_chain(server, page):
    spec = importlib.util.spec_from_file_location("toy_run", Path(__file__).resolve().parents[2] / "examples" / "toy" / "run.py")
    toy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toy)
    holder = {}

    @iworkflow.work
    def summarize(best):
        return round(best["value"], 3)

    @iworkflow.workflow(local=True, name="outer-study")
    def outer():
        holder["id"] = iworkflow.current_workflow().internal_id
        best = toy.optimise(iterations=3, points=4)
        return summarize(best=best)

    outer()
    server.flush()
    page.goto(server.url + "/")
    row = page.locator(f"tr.wf-row[data-id='{holder['id']}']")
    row.wait_for(timeout=10_000)
    assert page.locator("tr.wf-row", has_text="optimise").count() == 0, "the nested workflow is not a top-level row"
    row.click()
    child = page.locator("svg#dag g.subworkflow-node")
    child.wait_for(timeout=10_000)
    assert "optimise" in child.get_attribute("data-name")
    child.dispatch_event("click")
    page.wait_for_function("document.querySelectorAll('svg#dag g.work-node').length === 3", timeout=10_000)
    labels = sorted(n.get_attribute("data-label") for n in page.locator("svg#dag g.work-node").all())
    assert labels == ["rosenbrock #1", "rosenbrock #2", "rosenbrock #3"]
    assert page.locator("svg#dag path.edge:not(.root)").count() == 2, "iteration n -> n+1 through depends_on"
    page.locator("#parent-link").click()
    page.wait_for_function(f"location.hash === '#/workflow/{holder['id']}'", timeout=10_000)
