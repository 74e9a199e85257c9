"""Sources stream through the server: an upload is refused once it passes the limit (not after buffering it
whole) and a download never sits in memory whole."""
from __future__ import annotations

import hashlib
import os
import threading

import httpx
import psutil

CHUNK = 64 * 1024


def test_a_chunked_upload_over_the_limit_is_refused_while_it_is_read(make_server, tmp_path):
    """A 128 MiB chunked upload against a 1 MiB limit: refused, and the server never holds it in memory."""
    server = make_server(max_source_mb=1)
    me = psutil.Process()
    before = me.memory_info().rss
    peak = [before]

    def body():
        for i in range(2048):  # 128 MiB, with no Content-Length
            if i % 64 == 0:
                peak[0] = max(peak[0], me.memory_info().rss)
            yield b"\0" * CHUNK

    try:
        r = httpx.put(f"{server.url}/api/sources/{'0' * 64}", content=body(),
                      headers={"Authorization": f"Bearer {server.token}"}, timeout=60)
        assert r.status_code == 413 and "limit" in r.json()["detail"]
    except httpx.TransportError:
        pass  # the server answered 413 and closed the connection while the client was still sending
    peak[0] = max(peak[0], me.memory_info().rss)
    grown = (peak[0] - before) / 2**20
    assert grown < 48, f"a refused 128 MiB upload grew this process (server and client) by {grown:.0f} MiB"
    assert not list((tmp_path / "server-store").glob("*.part")), "the partial upload is removed"


def test_downloads_stream_from_disk(make_server):
    server = make_server(max_source_mb=200)
    data = os.urandom(64 * 2**20)
    digest = hashlib.sha256(data).hexdigest()
    auth = {"Authorization": f"Bearer {server.token}"}
    assert httpx.put(f"{server.url}/api/sources/{digest}", content=data, headers=auth, timeout=60).status_code == 201
    del data
    me = psutil.Process()
    before = me.memory_info().rss
    peak = [before]
    hashes: list[str] = []

    def download() -> None:
        h = hashlib.sha256()
        with httpx.stream("GET", f"{server.url}/api/sources/{digest}", timeout=60) as r:
            for chunk in r.iter_bytes(CHUNK):
                h.update(chunk)
                peak[0] = max(peak[0], me.memory_info().rss)
        hashes.append(h.hexdigest())

    threads = [threading.Thread(target=download) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert hashes == [digest] * 3
    grown = (peak[0] - before) / 2**20
    assert grown < 48, f"three 64 MiB downloads grew this process (server and clients) by {grown:.0f} MiB"
