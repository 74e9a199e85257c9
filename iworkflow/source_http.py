"""The source cache over HTTP: the same methods as ``SourceStore``, backed by the server's /api/sources.

Uses only the standard library (urllib) so workers need no extra; transient failures (connection
errors, 5xx) are retried with exponential backoff.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from .errors import ConfigurationError, IWorkflowError, UnsafeArchiveError
from .source_cache import SourceStore, add_tree

logger = logging.getLogger(__name__)

TIMEOUT = 60.0


class ServerError(IWorkflowError):
    """The server answered with an error; ``status`` is the HTTP status (0 when unreachable)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body or b"null")


def _transient(err: BaseException) -> bool:
    return isinstance(err, ServerError) and (err.status == 0 or err.status >= 500)


@retry(retry=retry_if_exception(_transient), stop=stop_after_attempt(4),
       wait=wait_exponential(multiplier=0.2, max=3), reraise=True)
def request(method: str, url: str, token: str = "", body: bytes | None = None,
            content_type: str = "application/octet-stream", ok: tuple[int, ...] = (200,)) -> HttpResponse:
    """One HTTP call with bearer auth; raises ServerError with the server's ``detail`` for other statuses."""
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            status, data, hdrs = resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        status, data, hdrs = err.code, err.read(), dict(err.headers or {})
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ServerError(0, f"cannot reach the iworkflow server at {url}: {reason}") from None
    if status not in ok:
        detail = data.decode(errors="replace")[:500]
        try:
            detail = json.loads(data).get("detail", detail)
        except (ValueError, AttributeError):
            pass
        raise ServerError(status, f"{method} {url} failed with HTTP {status}: {detail}")
    return HttpResponse(status, data, hdrs)


#: servers found unreachable by this process (url -> why): the rest of the run does without them
_unreachable: dict[str, str] = {}
#: servers that answered this process once (not asked again)
_answered: set[str] = set()


def source_store(settings):
    """The server's source cache when ``server_url`` is set and the server answers, else the local store.

    A server that cannot be reached (after retries) must not stop a driver: one warning line says so and
    the run goes on with the local store; its events wait in the broker's durable backlog for the server."""
    from .source_cache import SourceStore

    if not settings.server_url:
        return SourceStore(settings.store_path)
    store = HttpSourceStore(settings.server_url, token=settings.token)
    if store.url in _answered:
        return store
    if store.url not in _unreachable:
        try:
            request("GET", f"{store.url}/api/health", settings.token, ok=(200, 503))
            _answered.add(store.url)
            return store
        except ServerError as err:
            if not _transient(err):
                return store  # it answers: its own errors (a token refused) surface where they happen
            _unreachable[store.url] = str(err)
            logger.warning("iworkflow server %s is unreachable (%s); this run goes on without it: sources stay in "
                           "%s (workers get them from this driver through the broker), and the server records the "
                           "run from the broker's backlog when it is back",
                           store.url, str(err).rsplit(": ", 1)[-1], settings.store_path)
    return SourceStore(settings.store_path)


class HttpSourceStore:
    """Source tarballs stored on the iworkflow server; unpacked trees cached locally by hash."""

    def __init__(self, url: str, token: str | None = None, cache_dir: str | os.PathLike | None = None):
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"source store URL {url!r} must start with http:// or https://")
        from .config import load_settings

        settings = load_settings() if token is None or cache_dir is None else None
        self.url = url.rstrip("/")
        for suffix in ("/api/sources", "/api"):
            self.url = self.url.removesuffix(suffix)
        self.token = token if token is not None else settings.token
        home = cache_dir if cache_dir is not None else Path(settings.home) / "http-sources"
        self._local = SourceStore(home)

    @property
    def location(self) -> str:
        return self.url

    def _source_url(self, digest: str) -> str:
        self._local.tarball(digest)
        return f"{self.url}/api/sources/{digest}"

    def has(self, digest: str) -> bool:
        return request("HEAD", self._source_url(digest), self.token, ok=(200, 404)).status == 200

    def put(self, digest: str, data: bytes) -> bool:
        """Upload a tarball under its hash; returns False when the server already had it."""
        if hashlib.sha256(data).hexdigest() != digest:
            raise UnsafeArchiveError(f"tarball content does not match its name {digest}")
        resp = request("PUT", self._source_url(digest), self.token, body=data, content_type="application/gzip",
                       ok=(200, 201))
        return resp.status == 201

    def get(self, digest: str) -> bytes:
        url = self._source_url(digest)
        try:
            data = request("GET", url, self.token).body
        except ServerError as err:
            if err.status == 404:
                raise FileNotFoundError(f"source {digest} is not on the server at {self.url}") from None
            raise
        if hashlib.sha256(data).hexdigest() != digest:
            raise UnsafeArchiveError(f"source downloaded from {url} does not match its hash {digest}")
        return data

    def put_new(self, digest: str, data: bytes) -> bool:
        """Upload a tarball unless the server already holds that hash."""
        return not self.has(digest) and self.put(digest, data)

    def add_tree(self, source_dir: str | os.PathLike, excludes=(), max_mb: float = 200.0, include=()) -> str:
        """Pack a tree and upload it unless the server already holds that hash."""
        return add_tree(self, source_dir, excludes, max_mb, include)

    def unpacked(self, digest: str) -> Path:
        """The unpacked tree under the local iworkflow home, downloaded once per hash."""
        return self._local.unpacked(digest, fetch=self.get)
