"""Fixtures for the server tests: a real database (SQLite file or a PostgreSQL schema of its own), a real
HTTP server on a free port, and the embedded runtime (memory bus + thread executor) emitting events."""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from pg_schema import private_schema

TOKEN = "test-token-" + uuid.uuid4().hex[:8]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'iworkflow.db'}"


@pytest.fixture
def pg_url():
    """A PostgreSQL schema private to this test, dropped afterwards (parallel runs never collide)."""
    with private_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request) -> str:
    """Each test using this runs on SQLite and (marker ``postgres``) on PostgreSQL."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def runtime():
    """Embedded runtime: memory bus, thread executor, lifecycle events on."""
    import iworkflow

    rt = iworkflow.configure(broker="memory://", executor="thread", slots=8, events="on")
    yield rt
    iworkflow.shutdown()


@dataclass
class Running:
    server: object
    url: str
    token: str

    @property
    def db(self):
        return self.server.db

    def flush(self) -> None:
        assert self.server.recorder.flush(10), "recorder did not catch up within 10 s"


@pytest.fixture
def make_server(runtime, tmp_path, sqlite_url):
    """Start servers on the runtime's bus: ``make_server(db_url=..., **settings)``; all stopped at the end."""
    from iworkflow.server.monitor import Backoff
    from iworkflow.server.service import Server, ServerOptions

    started = []

    def make(db_url: str | None = None, read_token_required: bool = False, self_supervised=frozenset(),
             backoff: Backoff | None = None, token: str = TOKEN, **settings) -> Running:
        values = {"db": db_url or sqlite_url, "token": token, "source_store": str(tmp_path / "server-store"),
                  "heartbeat_timeout": 30.0, "max_attempt": 5}
        backoff = backoff or Backoff(base=0.2, factor=2.0, cap=1.0)
        values.update(settings)
        srv = Server(runtime.settings.with_(**values), runtime.bus,
                     ServerOptions(host="127.0.0.1", port=0, read_token_required=read_token_required,
                                   monitor_interval=0.1, backoff=backoff, self_supervised=self_supervised))
        srv.start_background()
        started.append(srv)
        return Running(srv, srv.url, token)

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture
def server(make_server) -> Running:
    """A server on SQLite with the token ``TOKEN``."""
    return make_server()


CHROMIUM = os.environ.get("IWORKFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def page():
    """A page of Debian's headless Chromium driven by Playwright; a JavaScript error on it fails the test."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the 'dev' extra)")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: run .ci/chromium.sh (apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield page
            assert errors == [], f"JavaScript errors on the page: {errors}"
        finally:
            browser.close()
