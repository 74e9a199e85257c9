"""The dashboard's artifacts page in Debian's headless Chromium: names, versions with metadata and tags, and a
click from a version through to the DAG node of the job that made it."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

import iworkflow
from iworkflow import artifacts

pytestmark = pytest.mark.browser
SCREENSHOTS = Path(os.environ.get("IWORKFLOW_SCREENSHOTS", Path(tempfile.gettempdir()) / "iworkflow-screenshots"))


def run_training(runtime, server) -> dict:
    """A workflow whose jobs save two versions of 'dash-model' on the server; version 1 promoted."""
    runtime.settings = runtime.settings.with_(server_url=server.url, token=server.token)

    @iworkflow.work(map_results=True)
    def train(depth):
        return artifacts.save("dash-model", {"depth": depth}, metadata={"auc": 0.5 + depth / 10}).version

    seen = {}

    @iworkflow.workflow(local=True, name="artifact-demo")
    def pipeline():
        wf = iworkflow.current_workflow()
        res = train(multi_jobs_kwargs_list=[{"depth": 2}, {"depth": 4}])
        seen.update(workflow_id=wf.internal_id, work_id=wf.works[0].internal_id,
                    versions={d: res.get_result(args={"depth": d}) for d in (2, 4)})

    pipeline()
    artifacts.promote("dash-model", seen["versions"][4], tag="production")
    server.flush()
    return seen


def test_artifact_versions_show_metadata_and_link_to_the_dag_node_of_their_job(runtime, server, page):
    seen = run_training(runtime, server)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(server.url + "/")
    page.locator("#nav-artifacts").click()
    row = page.locator("#artifact-names tr[data-name='dash-model']")
    row.wait_for(timeout=10_000)
    assert "production → " + str(seen["versions"][4]) in row.inner_text()
    row.click()

    best = page.locator(f"#artifact-versions tr[data-version='{seen['versions'][4]}']")
    best.wait_for(timeout=10_000)
    assert page.locator("#artifact-versions tr.artifact-version").count() == 2
    assert '"auc": 0.9' in best.inner_text() and "production" in best.inner_text()
    assert "train" in best.locator(".lineage-link").inner_text()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "dashboard-artifacts.png"), full_page=True)

    best.locator(".lineage-link").click()
    node = page.locator(f"svg#dag g.work-node.selected[data-id='{seen['work_id']}']")
    node.wait_for(timeout=10_000)
    assert seen["workflow_id"] in page.url and node.get_attribute("data-name") == "train"
    page.wait_for_function("document.querySelectorAll('#panel tr.job').length === 2", timeout=5_000)
    assert errors == [], f"JavaScript errors on the page: {errors}"


def test_a_version_downloads_with_the_token_when_reads_need_it(runtime, make_server, page, tmp_path):
    import hashlib

    server = make_server(read_token_required=True)
    (tmp_path / "weights.bin").write_bytes(bytes(range(256)) * 100)
    runtime.settings = runtime.settings.with_(server_url=server.url, token=server.token)
    record = artifacts.save("guarded-model", tmp_path / "weights.bin")

    page.goto(server.url + "/#/artifacts/guarded-model")
    page.locator("#auth-token").fill(server.token)
    page.locator("#auth-form button").click()
    link = page.locator(f"#artifact-versions tr[data-version='{record.version}'] a.download")
    link.wait_for(timeout=10_000)
    with page.expect_download(timeout=10_000) as download:
        link.click()
    assert download.value.suggested_filename == "weights.bin"
    assert hashlib.sha256(Path(download.value.path()).read_bytes()).hexdigest() == record.digest
