"""REST endpoints of the artifact catalog: versions, tags and blobs (streamed), writes token-protected.

The catalog is ``iworkflow.artifact_catalog`` over the server's database (tables of migration 0005); blobs
live in ``<source store>/artifacts``, content-addressed and checked against their digest on upload.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from sqlalchemy import Engine, text

from iworkflow.artifact_catalog import KINDS, ArtifactNotFound, Catalog, Lineage, check_name
from iworkflow.artifact_store import ArtifactCorrupted, BlobStore, check_digest
from iworkflow.errors import ConfigurationError

logger = logging.getLogger(__name__)


class SqlAlchemyConnector:
    """Catalog transactions on a SQLAlchemy engine (PostgreSQL or SQLite)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    @contextlib.contextmanager
    def transaction(self, write: bool) -> Iterator[SqlAlchemyConnector._Tx]:
        with self.engine.begin() as conn:
            yield self._Tx(conn)

    class _Tx:
        def __init__(self, conn):
            self.conn = conn

        def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
            result = self.conn.execute(text(sql), params)
            return [dict(r) for r in result.mappings().all()] if result.returns_rows else []


class VersionIn(BaseModel):
    """A blob already uploaded to /api/artifact-blobs, to record as the next version of a name."""

    digest: str
    size: int = Field(ge=0)
    kind: str
    filename: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    lineage: dict[str, Any] = Field(default_factory=dict)


class TagIn(BaseModel):
    """The version a tag should name: a number, "latest", a digest or another tag."""

    version: int | str


def _bad(err: Exception) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, str(err))


def artifact_router(catalog: Catalog, blobs: BlobStore, read: list, write: list) -> APIRouter:
    """``/api/artifacts`` (catalog) and ``/api/artifact-blobs`` (bytes)."""
    api = APIRouter(prefix="/api")

    @contextlib.contextmanager
    def answers() -> Iterator[None]:
        try:
            yield
        except ArtifactNotFound as err:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(err)) from None
        except ConfigurationError as err:
            raise _bad(err) from None

    @api.get("/artifacts", dependencies=read)
    def list_names() -> list[dict]:
        with answers():
            return [asdict(n) for n in catalog.names()]

    @api.get("/artifacts/{name}", dependencies=read)
    def list_versions(name: str) -> dict:
        with answers():
            versions = catalog.versions(name)
        tags = {t: v.version for v in versions for t in v.tags}
        return {"name": name, "versions": [v.to_json() for v in versions], "tags": tags}

    @api.get("/artifacts/{name}/versions/{ref}", dependencies=read)
    def get_version(name: str, ref: str) -> dict:
        with answers():
            return catalog.get(name, ref).to_json()

    @api.post("/artifacts/{name}/versions", dependencies=write, status_code=status.HTTP_201_CREATED)
    def add_version(name: str, body: VersionIn) -> dict:
        with answers():
            check_name(name)
            path = blobs.path(check_digest(body.digest))
            if not path.is_file():
                raise HTTPException(status.HTTP_409_CONFLICT, f"blob {body.digest} is not on this server: PUT it to "
                                                              f"/api/artifact-blobs/{body.digest} first")
            if path.stat().st_size != body.size or body.kind not in KINDS:
                raise _bad(ValueError(f"size {body.size} or kind {body.kind!r} does not match blob {body.digest} "
                                      f"({path.stat().st_size} bytes; kinds {KINDS})"))
            try:
                lineage = Lineage(**body.lineage)
            except TypeError as err:
                raise _bad(ValueError(f"lineage: {err}")) from None
            version = catalog.add_version(name, body.digest, body.size, body.kind, body.filename, body.metadata,
                                          lineage)
        logger.info("artifact %s saved (%s, %d bytes)", version.ref, version.kind, version.size)
        return version.to_json()

    @api.put("/artifacts/{name}/tags/{tag}", dependencies=write)
    def promote(name: str, tag: str, body: TagIn) -> dict:
        with answers():
            return catalog.promote(name, body.version, tag).to_json()

    @api.head("/artifact-blobs/{digest}", dependencies=read)
    def has_blob(digest: str) -> Response:
        with answers():
            found = blobs.has(check_digest(digest))
        return Response(status_code=status.HTTP_200_OK if found else status.HTTP_404_NOT_FOUND)

    @api.get("/artifact-blobs/{digest}", dependencies=read, response_class=FileResponse,
             responses={200: {"content": {"application/octet-stream": {}}}})
    def get_blob(digest: str) -> FileResponse:
        with answers():
            path = blobs.path(check_digest(digest))
        if not path.is_file():
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"artifact blob {digest} is not on this server")
        return FileResponse(path, media_type="application/octet-stream")

    @api.put("/artifact-blobs/{digest}", dependencies=write, status_code=status.HTTP_201_CREATED,
             openapi_extra={"requestBody": {"content": {"application/octet-stream": {}}, "required": True}})
    async def put_blob(digest: str, request: Request) -> dict:
        """Stream the body into the store; bytes that do not hash to ``digest`` are refused (400)."""
        with answers():
            check_digest(digest)
        part = blobs.begin()
        try:
            async for chunk in request.stream():
                part.write(chunk)
        except BaseException:
            part.abort()
            raise
        try:
            digest, size = part.commit(expected=digest, source="the upload")
        except ArtifactCorrupted as err:
            raise _bad(err) from None
        return {"digest": digest, "size": size}

    return api
