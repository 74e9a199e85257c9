"""The API additions the dashboard reads: nested workflows under their parent, and a DAG without job lists."""
from __future__ import annotations

import httpx
from dashboard_seed import seed


def test_top_lists_only_workflows_nested_in_none_with_their_child_counts(make_server, db_url):
    server = make_server(db_url=db_url)
    seeded = seed(server)
    top = httpx.get(f"{server.url}/api/workflows", params={"top": "true"}, timeout=10).json()
    assert [(w["id"], w["n_children"]) for w in top] == [(seeded.workflow_id, 1)]
    children = httpx.get(f"{server.url}/api/workflows", params={"parent_id": seeded.workflow_id}, timeout=10).json()
    assert [(w["id"], w["parent_id"], w["n_children"]) for w in children] == [(seeded.child_id, seeded.workflow_id, 0)]


def test_dag_names_the_parent_and_the_nested_workflows(make_server, db_url):
    server = make_server(db_url=db_url)
    seeded = seed(server)
    parent = httpx.get(f"{server.url}/api/workflows/{seeded.workflow_id}/dag", timeout=10).json()
    assert parent["parent"] is None
    assert [(c["id"], c["name"], c["counts"]["finished"]) for c in parent["children"]] == [
        (seeded.child_id, "nested-tuning", 10)]
    child = httpx.get(f"{server.url}/api/workflows/{seeded.child_id}/dag", timeout=10).json()
    assert child["parent"]["id"] == seeded.workflow_id and child["children"] == []


def test_dag_without_jobs_keeps_every_count_and_edge_and_lists_no_job(make_server, db_url):
    server = make_server(db_url=db_url)
    seeded = seed(server)
    url = f"{server.url}/api/workflows/{seeded.workflow_id}/dag"
    full = httpx.get(url, timeout=10).json()
    light = httpx.get(url, params={"jobs": "false"}, timeout=10).json()
    assert sum(len(n["jobs"]) for n in full["nodes"]) == seeded.n_jobs == 500
    assert all(n["jobs"] == [] for n in light["nodes"])
    assert [n["counts"] for n in light["nodes"]] == [n["counts"] for n in full["nodes"]]
    assert light["edges"] == full["edges"] and len(light["edges"]) == len(seeded.edges)
    assert sum(n["counts"]["failed"] for n in light["nodes"]) == seeded.failed
