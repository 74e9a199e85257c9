"""Artifacts kept by the iworkflow server: its catalog over REST, blobs streamed up and down.

Standard library only (urllib), as ``source_http``: workers need no extra.  Downloads land in a local
content-addressed cache first and are checked against their digest there, so a damaged transfer or a
corrupted copy on the server is refused before anything is unpickled.
"""
from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from .artifact_catalog import ArtifactName, ArtifactNotFound, ArtifactVersion, Lineage
from .artifact_store import CHUNK, BlobStore
from .errors import ConfigurationError
from .source_http import TIMEOUT, ServerError, _transient, request

logger = logging.getLogger(__name__)


def _json_or_not_found(method: str, url: str, token: str, body: Any = None, ok=(200,)) -> Any:
    data = None if body is None else json.dumps(body).encode()
    try:
        return request(method, url, token, body=data, content_type="application/json", ok=ok).json()
    except ServerError as err:
        if err.status == 404:
            raise ArtifactNotFound(str(err)) from None
        raise


class HttpBackend:
    """The server's ``/api/artifacts`` catalog and ``/api/artifact-blobs`` store; downloads cached locally."""

    def __init__(self, url: str, token: str, cache_dir: str | os.PathLike):
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"server_url {url!r} must start with http:// or https://")
        self.url = url.rstrip("/").removesuffix("/api")
        self.token = token
        #: verified copies of downloaded blobs (and the staging area of directory uploads)
        self.blobs = BlobStore(cache_dir)

    @property
    def location(self) -> str:
        return self.url

    def _blob_url(self, digest: str) -> str:
        return f"{self.url}/api/artifact-blobs/{digest}"

    def _name_url(self, name: str, *rest: str) -> str:
        return "/".join([f"{self.url}/api/artifacts", urllib.parse.quote(name, safe=""),
                         *(urllib.parse.quote(str(p), safe="") for p in rest)])

    @retry(retry=retry_if_exception(_transient), stop=stop_after_attempt(4),
           wait=wait_exponential(multiplier=0.2, max=3), reraise=True)
    def _upload(self, digest: str, path: Path) -> None:
        """Stream a file to the server under its digest (the server checks the bytes against it)."""
        size = path.stat().st_size
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size),
                   "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        url = self._blob_url(digest)
        with path.open("rb") as fh:
            req = urllib.request.Request(url, data=fh, method="PUT", headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                    resp.read()
                    return
            except urllib.error.HTTPError as err:
                detail = err.read().decode(errors="replace")[:500]
                try:
                    detail = json.loads(detail).get("detail", detail)
                except (ValueError, AttributeError):
                    pass
                raise ServerError(err.code, f"PUT {url} failed with HTTP {err.code}: {detail}") from None
            except (urllib.error.URLError, OSError) as err:
                raise ServerError(0, f"cannot reach the iworkflow server at {url}: "
                                     f"{getattr(err, 'reason', err)}") from None

    def _stage(self, write) -> tuple[str, int]:
        """Write bytes into the local cache (hashing them), then upload that blob unless the server has it."""
        digest, size = write()
        if request("HEAD", self._blob_url(digest), self.token, ok=(200, 404)).status != 200:
            self._upload(digest, self.blobs.path(digest))
        return digest, size

    def store_object(self, data: bytes) -> tuple[str, int]:
        return self._stage(lambda: self.blobs.put_chunks([data]))

    def store_file(self, path: Path) -> tuple[str, int]:
        return self._stage(lambda: self.blobs.put_file(path))

    def store_directory(self, path: Path) -> tuple[str, int]:
        return self._stage(lambda: self.blobs.put_directory(path))

    def add_version(self, name, digest, size, kind, filename, metadata, lineage: Lineage) -> ArtifactVersion:
        body = {"digest": digest, "size": size, "kind": kind, "filename": filename, "metadata": metadata,
                "lineage": lineage.__dict__}
        return ArtifactVersion.from_json(_json_or_not_found("POST", self._name_url(name, "versions"), self.token,
                                                            body, ok=(201,)))

    def get(self, name: str, ref) -> ArtifactVersion:
        return ArtifactVersion.from_json(_json_or_not_found(
            "GET", self._name_url(name, "versions", "latest" if ref is None else ref), self.token))

    def versions(self, name: str) -> list[ArtifactVersion]:
        data = _json_or_not_found("GET", self._name_url(name), self.token)
        return [ArtifactVersion.from_json(v) for v in data["versions"]]

    def names(self) -> list[ArtifactName]:
        return [ArtifactName(**n) for n in _json_or_not_found("GET", f"{self.url}/api/artifacts", self.token)]

    def promote(self, name: str, ref, tag: str) -> ArtifactVersion:
        return ArtifactVersion.from_json(_json_or_not_found(
            "PUT", self._name_url(name, "tags", tag), self.token, {"version": ref}))

    def _download(self, digest: str) -> None:
        url = self._blob_url(digest)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT) as resp:
                self.blobs.put_chunks(iter(lambda: resp.read(CHUNK), b""), expected=digest, source=url)
        except urllib.error.HTTPError as err:
            if err.code == 404:
                raise FileNotFoundError(f"artifact blob {digest} is not on the server at {self.url}") from None
            raise ServerError(err.code, f"GET {url} failed with HTTP {err.code}") from None
        except urllib.error.URLError as err:
            raise ServerError(0, f"cannot reach the iworkflow server at {url}: {err.reason}") from None

    def chunks(self, version: ArtifactVersion) -> Iterator[bytes]:
        if not self.blobs.has(version.digest):
            self._download(version.digest)
        return self.blobs.chunks(version.digest)

