"""Cross-site requests and DNS rebinding: a page of another origin cannot write, an unknown Host is not answered."""
from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

import httpx
from iworkflow.server.auth import OriginPolicy


def test_a_cross_site_page_cannot_cancel_or_upload_on_a_tokenless_server(make_server):
    server = make_server(token="")
    c = httpx.Client(base_url=server.url, timeout=10)
    data = b"a tarball"
    digest = hashlib.sha256(data).hexdigest()
    r = c.post("/api/workflows/0000/cancel", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-site" in r.json()["detail"]
    r = c.put(f"/api/sources/{digest}", content=data, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    r = c.put(f"/api/sources/{digest}", content=data, headers={"Origin": "null"})
    assert r.status_code == 403
    same = f"http://{urlsplit(server.url).netloc}"
    assert c.put(f"/api/sources/{digest}", content=data, headers={"Origin": same}).status_code == 201
    assert c.post("/api/workflows/0000/cancel", headers={"Origin": same}).status_code == 404


def test_a_rebound_host_name_is_not_answered(server):
    port = urlsplit(server.url).port
    c = httpx.Client(base_url=server.url, timeout=10)
    r = c.get("/api/workflows", headers={"Host": f"attacker.example:{port}"})
    assert r.status_code == 421 and "--allowed-host" in r.json()["detail"]
    assert c.get("/", headers={"Host": f"attacker.example:{port}"}).status_code == 421
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert c.get("/api/workflows", headers={"Host": host}).status_code == 200, host


def test_which_hosts_a_server_answers_follows_where_it_listens():
    assert OriginPolicy.for_bind("127.0.0.1").host_allowed("localhost:8765")
    assert not OriginPolicy.for_bind("127.0.0.1").host_allowed("evil.example:8765")
    assert OriginPolicy.for_bind("127.0.0.1", ("iwf.lab.org",)).host_allowed("iwf.lab.org")
    assert OriginPolicy.for_bind("0.0.0.0").host_allowed("anything.example")
    assert not OriginPolicy.for_bind("0.0.0.0", ("iwf.lab.org",)).host_allowed("anything.example")


def test_a_cross_site_page_cannot_retry_failed_jobs_on_a_tokenless_server(make_server):
    server = make_server(token="")
    c = httpx.Client(base_url=server.url, timeout=10)
    for path in ("/api/workflows/0000/retry-failed", "/api/works/0000/retry-failed"):
        r = c.post(path, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and "cross-site" in r.json()["detail"]
        assert c.post(path, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert c.post(path, headers={"Origin": f"http://{urlsplit(server.url).netloc}"}).status_code == 404
