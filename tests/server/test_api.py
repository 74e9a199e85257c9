"""The REST API over real HTTP: reads, DAG, logs, cancel, token auth and the source cache round trip."""
from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import httpx
import pytest

import iworkflow
from iworkflow.envelope import decode
from iworkflow.errors import UnsafeArchiveError, WorkCancelled
from iworkflow.messages import CONTROL_TOPIC, Control
from iworkflow.source_cache import pack
from iworkflow.source_http import HttpSourceStore, ServerError


def auth(token) -> dict:
    """The bearer header for a token string, or for a running server's token."""
    return {"Authorization": f"Bearer {getattr(token, 'token', token)}"}


def run_failing_workflow() -> str:
    """A workflow with one successful and one failing work; returns its id."""

    @iworkflow.work
    def prepare(n):
        return list(range(n))

    @iworkflow.work
    def explode(values):
        print("about to fail on", len(values), "values")
        raise RuntimeError(f"cannot digest {len(values)} values")

    holder = {}

    @iworkflow.workflow(local=True, name="api-demo")
    def demo():
        holder["id"] = iworkflow.current_workflow().internal_id
        values = prepare(n=3)
        try:
            explode(values=values)
        except RuntimeError:
            pass
        return values

    assert demo() == [0, 1, 2]
    return holder["id"]


def wait_for(get, predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if predicate(value):
            return value
        assert time.monotonic() < deadline, f"condition not reached; last value {value!r}"
        time.sleep(0.05)


def test_workflow_dag_jobs_and_logs(db_url, make_server):
    server = make_server(db_url=db_url)
    wf_id = run_failing_workflow()
    c = httpx.Client(base_url=server.url, timeout=10)
    listing = wait_for(lambda: c.get("/api/workflows").json(),
                       lambda v: v and v[0]["status"] == "subfinished" and v[0]["counts"]["total"] == 2)
    assert listing[0]["id"] == wf_id and listing[0]["name"] == "api-demo" and listing[0]["n_works"] == 2
    assert listing[0]["counts"]["finished"] == 1 and listing[0]["counts"]["failed"] == 1

    detail = c.get(f"/api/workflows/{wf_id[:8]}").json()
    assert [w["name"] for w in detail["works"]] == ["prepare", "explode"]
    dag = c.get(f"/api/workflows/{wf_id}/dag").json()
    by_name = {n["name"]: n for n in dag["nodes"]}
    assert by_name["explode"]["status"] == "failed" and by_name["prepare"]["status"] == "finished"
    assert dag["edges"] == [{"source": by_name["prepare"]["id"], "target": by_name["explode"]["id"]}]
    [failed_job] = by_name["explode"]["jobs"]
    assert failed_job["error"] == "builtins.RuntimeError: cannot digest 3 values"
    assert failed_job["args"] == '{"values": [0, 1, 2]}'

    jobs = c.get("/api/jobs", params={"workflow_id": wf_id, "status": "failed"}).json()
    assert [j["id"] for j in jobs] == [failed_job["id"]]
    assert c.get(f"/api/jobs/{failed_job['id']}").json()["job_key"] == failed_job["job_key"]
    log = c.get(f"/api/jobs/{failed_job['id']}/log").json()
    assert "Traceback (most recent call last)" in log["traceback"]
    assert "about to fail on 3 values" not in (log["output"] or ""), "thread jobs do not capture output"
    assert "job_started" in log["text"] and "job_failed" in log["text"] and "cannot digest 3 values" in log["text"]
    by_key = c.get(f"/api/jobs/{by_name['explode']['id']}:{failed_job['job_key']}/log").json()
    assert by_key["job"]["id"] == failed_job["id"]

    works = c.get("/api/works", params={"workflow_id": wf_id}).json()
    assert {w["name"] for w in works} == {"prepare", "explode"}
    assert c.get(f"/api/works/{by_name['prepare']['id']}").json()["jobs"][0]["status"] == "finished"


def test_not_found_and_bad_input_explain_themselves(server):
    c = httpx.Client(base_url=server.url, timeout=10)
    r = c.get("/api/workflows/does-not-exist")
    assert r.status_code == 404 and "no workflow with id 'does-not-exist'" in r.json()["detail"]
    r = c.get("/api/jobs/nope/log")
    assert r.status_code == 404 and "numeric job id" in r.json()["detail"]
    r = c.get("/api/sources/not-a-hash")
    assert r.status_code == 400 and "not a sha256 digest" in r.json()["detail"]
    r = c.get("/api/workflows", params={"limit": 0})
    assert r.status_code == 422


def test_openapi_schema_is_published(server):
    schema = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    paths = schema["paths"]
    for path in ("/api/workflows", "/api/workflows/{ref}", "/api/workflows/{ref}/dag", "/api/workflows/{ref}/cancel",
                 "/api/workflows/{ref}/retry-failed", "/api/works/{ref}/retry-failed", "/api/works", "/api/jobs",
                 "/api/jobs/{ref}/log", "/api/sources/{digest}"):
        assert path in paths, path
    assert {"get", "put", "post", "head"} <= set(paths["/api/sources/{digest}"])
    assert "Dag" in schema["components"]["schemas"]


def test_writes_need_the_token(server):
    wf_id = run_failing_workflow()
    c = httpx.Client(base_url=server.url, timeout=10)
    wait_for(lambda: c.get(f"/api/workflows/{wf_id}").status_code, lambda s: s == 200)
    r = c.post(f"/api/workflows/{wf_id}/cancel")
    assert r.status_code == 401 and "missing bearer token" in r.json()["detail"]
    r = c.post(f"/api/workflows/{wf_id}/cancel", headers=auth("wrong"))
    assert r.status_code == 401 and "does not match" in r.json()["detail"]
    data = b"not really a tarball"
    digest = hashlib.sha256(data).hexdigest()
    assert c.put(f"/api/sources/{digest}", content=data).status_code == 401
    assert c.put(f"/api/sources/{digest}", content=data, headers=auth("wrong")).status_code == 401
    assert c.put(f"/api/sources/{digest}", content=data, headers=auth(server)).status_code == 201
    r = c.post(f"/api/workflows/{wf_id}/cancel", headers=auth(server))
    assert r.status_code == 200 and r.json() == {"workflow_id": wf_id, "status": "subfinished", "jobs_cancelled": 0}
    assert c.get("/api/workflows").status_code == 200, "reads are open unless read_token_required"


def test_reads_need_the_token_when_configured(make_server):
    server = make_server(read_token_required=True)
    c = httpx.Client(base_url=server.url, timeout=10)
    for path in ("/api/workflows", "/api/jobs", "/api/works", "/api/sources/" + "0" * 64):
        r = c.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
    assert c.get("/api/workflows", headers=auth(server)).status_code == 200
    assert c.get("/").status_code == 200, "the dashboard page itself holds no data and loads without a token"


def test_server_without_token_accepts_local_writes_only(make_server, tmp_path):
    server = make_server(token="")
    store = HttpSourceStore(server.url, token="", cache_dir=tmp_path / "cache")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "m.py").write_text("X = 1\n")
    digest = store.add_tree(tmp_path / "src")
    assert store.has(digest), "loopback clients may write without a token"


def test_source_cache_round_trip(server, tmp_path: Path):
    src = tmp_path / "project"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "__init__.py").write_text("VALUE = 42\n")
    (src / "main.py").write_text("import pkg\n")
    store = HttpSourceStore(server.url + "/", token=server.token, cache_dir=tmp_path / "client-cache")
    assert store.location == server.url
    digest, data = pack(src)
    assert not store.has(digest)
    assert store.add_tree(src) == digest
    assert store.has(digest)
    assert server.server.store.get(digest) == data, "the server keeps it in its SourceStore"
    assert store.get(digest) == data
    assert store.put(digest, data) is False, "uploading an existing hash is a no-op"
    r = httpx.post(f"{server.url}/api/sources/{digest}", content=data, headers=auth(server), timeout=10)
    assert r.status_code == 200 and r.json() == {"digest": digest, "size": len(data), "created": False}
    tree = store.unpacked(digest)
    assert (tree / "pkg" / "__init__.py").read_text() == "VALUE = 42\n"
    assert tree.is_relative_to(tmp_path / "client-cache")
    assert store.unpacked(digest) == tree

    wrong = hashlib.sha256(b"other").hexdigest()
    r = httpx.put(f"{server.url}/api/sources/{wrong}", content=data, headers=auth(server), timeout=10)
    assert r.status_code == 400 and f"body sha256 is {digest}" in r.json()["detail"]
    with pytest.raises(UnsafeArchiveError):
        store.put(wrong, data)
    with pytest.raises(FileNotFoundError, match="not on the server"):
        store.get(wrong)
    with pytest.raises(ServerError, match="HTTP 401"):
        HttpSourceStore(server.url, token="bad", cache_dir=tmp_path / "x").put(digest, data)


def test_source_upload_over_the_limit_is_refused(make_server, tmp_path):
    server = make_server(max_source_mb=0.001)
    data = b"x" * 4096
    digest = hashlib.sha256(data).hexdigest()
    r = httpx.put(f"{server.url}/api/sources/{digest}", content=data, headers=auth(server), timeout=10)
    assert r.status_code == 413 and "max_source_mb" in r.json()["detail"]


def test_unreachable_server_is_named(tmp_path):
    store = HttpSourceStore("http://127.0.0.1:9", token="", cache_dir=tmp_path)
    with pytest.raises(ServerError, match="cannot reach the iworkflow server at http://127.0.0.1:9"):
        store.has("0" * 64)


def test_cancel_ends_the_waiting_call_and_tells_workers(runtime, server, tmp_path):
    controls: list[Control] = []
    runtime.bus.subscribe(CONTROL_TOPIC, lambda d: controls.append(Control.from_envelope(decode(d.body, runtime.secret))))
    release = tmp_path / "release"

    @iworkflow.work
    def wait_forever(i):
        import os as _os
        import time as _time

        deadline = _time.time() + 60
        while not _os.path.exists(str(release)) and _time.time() < deadline:
            _time.sleep(0.05)
        return i

    outcome = {}

    @iworkflow.workflow(local=True, name="to-cancel")
    def long_running():
        outcome["id"] = iworkflow.current_workflow().internal_id
        return wait_forever(multi_jobs_kwargs_list=[{"i": i} for i in range(3)])

    def drive():
        try:
            outcome["value"] = long_running()
        except Exception as exc:
            outcome["error"] = exc

    driver = threading.Thread(target=drive)
    driver.start()
    try:
        c = httpx.Client(base_url=server.url, timeout=10)
        wait_for(lambda: c.get("/api/jobs", params={"status": "running"}).json(), lambda v: len(v) == 3)
        r = c.post(f"/api/workflows/{outcome['id']}/cancel", headers=auth(server))
        assert r.status_code == 200 and r.json()["jobs_cancelled"] == 3 and r.json()["status"] == "cancelled"
        driver.join(10)
        assert not driver.is_alive(), "the driver's call must end when its workflow is cancelled"
        assert isinstance(outcome.get("error"), WorkCancelled)
        assert "cancelled through the server" in str(outcome["error"])
        assert [(x.action, x.workflow_id) for x in controls] == [("cancel", outcome["id"])]
        server.flush()
        jobs = c.get("/api/jobs", params={"workflow_id": outcome["id"]}).json()
        assert {j["status"] for j in jobs} == {"cancelled"}
        assert c.get(f"/api/workflows/{outcome['id']}").json()["status"] == "cancelled"
    finally:
        release.touch()
        driver.join(10)
