"""Job tables filter, sort and page; unknown query parameters are refused; workers, timeline and durations."""
from __future__ import annotations

import time

import httpx
import pytest

import iworkflow


def run_mixed_workflow() -> str:
    """Ten calls; the odd ones fail with 'odd input N'."""

    @iworkflow.work(map_results=True)
    def judge(n):
        if n % 2:
            raise ValueError(f"odd input {n}")
        return n

    @iworkflow.workflow(local=True, name="tables")
    def tables():
        judge(multi_jobs_kwargs_list=[{"n": n} for n in range(10)]).get_all_results()
        return iworkflow.current_workflow().internal_id

    return tables()


@pytest.fixture
def recorded(db_url, make_server):
    server = make_server(db_url=db_url)
    wf_id = run_mixed_workflow()
    deadline = time.monotonic() + 20
    c = httpx.Client(base_url=server.url, timeout=10)
    while c.get(f"/api/workflows/{wf_id}").json().get("status") != "subfinished":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    server.flush()
    return c, wf_id


def test_jobs_filter_by_status_text_and_worker(recorded):
    c, _ = recorded
    failed = c.get("/api/jobs", params={"status": "failed"}).json()
    assert len(failed) == 5 and all("odd input" in j["error"] for j in failed)
    assert len(c.get("/api/jobs", params={"status": "failed,finished"}).json()) == 10
    assert [j["args"] for j in c.get("/api/jobs", params={"q": "ODD INPUT 7"}).json()] == ['{"n": 7}']
    assert c.get("/api/jobs", params={"q": "%"}).json() == [], "LIKE wildcards are plain text"
    worker = failed[0]["worker"]
    assert worker and len(c.get("/api/jobs", params={"worker": worker}).json()) == 10
    assert c.get("/api/jobs", params={"worker": "nobody"}).json() == []


def test_jobs_sort_and_page(recorded):
    c, _ = recorded
    by_key = c.get("/api/jobs", params={"sort": "-job_key"}).json()
    assert [j["job_key"] for j in by_key] == sorted((j["job_key"] for j in by_key), reverse=True)
    r = c.get("/api/jobs", params={"sort": "job_key", "limit": 3, "offset": 3})
    assert r.headers["x-total-count"] == "10"
    assert [j["job_key"] for j in r.json()] == sorted(j["job_key"] for j in by_key)[3:6]
    durations = [j["duration"] for j in c.get("/api/jobs", params={"sort": "-duration"}).json()]
    assert durations == sorted(durations, reverse=True)


def test_unknown_and_bad_query_parameters_are_refused(recorded):
    c, wf_id = recorded
    r = c.get("/api/jobs", params={"stauts": "failed"})
    assert r.status_code == 422 and "'stauts'" in r.json()["detail"] and "status" in r.json()["detail"]
    r = c.get("/api/jobs", params={"status": "broken"})
    assert r.status_code == 422 and "'broken'" in r.json()["detail"]
    r = c.get("/api/jobs", params={"sort": "color"})
    assert r.status_code == 422 and "'color'" in r.json()["detail"]
    assert c.get("/api/workers", params={"state": "sleepy"}).status_code == 422
    assert [w["id"] for w in c.get("/api/workflows", params={"name": "tables"}).json()] == [wf_id]
    assert c.get("/api/workflows", params={"name": "other"}).json() == []


def test_timeline_and_durations(recorded):
    c, wf_id = recorded
    timeline = c.get("/api/timeline", params={"workflow_id": wf_id[:8]}).json()
    assert len(timeline["jobs"]) == 10 and not timeline["truncated"]
    assert timeline["workers"] == sorted({j["worker"] for j in timeline["jobs"]})
    assert all(j["finished_at"] >= j["started_at"] and j["work_name"] == "judge" for j in timeline["jobs"])
    assert c.get("/api/timeline", params={"limit": 4}).json()["truncated"] is True
    [judge] = c.get(f"/api/workflows/{wf_id}/durations", params={"bins": 4}).json()
    assert judge["name"] == "judge" and judge["count"] == 5 and sum(judge["counts"]) == 5
    assert len(judge["edges"]) == 5 and judge["min"] <= judge["p50"] <= judge["p90"] <= judge["max"]


def test_the_workers_migration_downgrades_and_upgrades_again(db_url):
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config
    from iworkflow.server.db import MIGRATIONS, Database, upgrade

    db = Database(db_url)
    assert "iwf_workers" in sa.inspect(db.engine).get_table_names()
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0005")
    assert "iwf_workers" not in sa.inspect(db.engine).get_table_names()
    assert "iwf_artifact_names" in sa.inspect(db.engine).get_table_names()
    upgrade(db.engine)
    assert "iwf_workers" in sa.inspect(db.engine).get_table_names()
    db.dispose()
