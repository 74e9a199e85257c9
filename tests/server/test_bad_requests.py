"""No 500 from bad input: odd digits, ids past 2^63, huge offsets, NUL bytes, overlong references; on SQLite and
PostgreSQL every one is a 4xx saying what is wrong."""
from __future__ import annotations

import httpx
import pytest

BIG = str(2**63 + 5)
CASES = [
    ("GET", "/api/jobs/" + "\u0661\u0662\u0663"),  # Arabic-Indic digits: isdigit() but not an id
    ("GET", "/api/jobs/" + "\u00b2"),  # superscript two
    ("GET", f"/api/jobs/{BIG}"),
    ("GET", f"/api/jobs/{BIG}/log"),
    ("GET", "/api/jobs/-1"),
    ("GET", "/api/jobs/" + "9" * 400),
    ("GET", "/api/jobs?offset=" + BIG),
    ("GET", "/api/jobs?limit=" + BIG),
    ("GET", "/api/workflows?offset=" + "9" * 30),
    ("GET", "/api/works?offset=1e400"),
    ("GET", "/api/jobs?status=fin%00ished"),
    ("GET", "/api/jobs/ab%00cd"),
    ("GET", "/api/workflows/ab%00cd"),
    ("GET", "/api/workflows/ab%00cd/dag"),
    ("GET", "/api/works/ab%00cd"),
    ("GET", "/api/jobs?workflow_id=ab%00cd"),
    ("GET", "/api/jobs?q=a%00b"),
    ("GET", "/api/jobs?worker=%00"),
    ("GET", "/api/workflows?name=%00"),
    ("GET", "/api/workers?queue=%00"),
    ("GET", "/api/timeline?since=nan"),
    ("GET", "/api/timeline?since=" + BIG),
    ("GET", "/api/jobs/x%00:y/log"),
    ("GET", "/api/jobs/" + "a" * 5000),
    ("GET", "/api/workflows/" + "\udcff".encode("utf-8", "surrogatepass").hex()),
    ("GET", "/api/jobs/%ff%fe"),
    ("GET", "/api/jobs/w:" + "k" * 3000 + "/log"),
    ("POST", "/api/workflows/ab%00cd/cancel"),
    ("GET", "/api/jobs/1/log?tail=" + BIG),
]


@pytest.mark.parametrize("method,path", CASES, ids=[f"{m} {p[:40]}" for m, p in CASES])
def test_bad_input_is_a_client_error(db_url, make_server, method, path):
    server = make_server(db_url=db_url)
    r = httpx.request(method, server.url + path, headers={"Authorization": f"Bearer {server.token}"}, timeout=10)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert r.json()["detail"], "the answer says what is wrong"
