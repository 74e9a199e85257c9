"""The REST API (FastAPI): workflows, works, jobs, the DAG, logs, cancel, and the HTTP source cache."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response, Security, status
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from sqlalchemy import func, select

from iworkflow.artifact_catalog import Catalog
from iworkflow.artifact_store import BlobStore
from iworkflow.bus.base import Bus
from iworkflow.errors import WorkCancelled
from iworkflow.failures import failure_message
from iworkflow.messages import CANCEL, CONTROL_TOPIC, Control, results_destination
from iworkflow.source_cache import SourceStore

from . import queries, states
from .artifacts import SqlAlchemyConnector, artifact_router
from .auth import OriginGuard, OriginPolicy, TokenPolicy
from .db import Database
from .recorder import log_event, write_lines
from .models import (
    CANCELLED,
    FAILED,
    JOB_TERMINAL,
    QUEUED,
    RETRYING,
    RUNNING,
    UNKNOWN,
    WORK_TERMINAL,
    WORKER_ALIVE,
    WORKER_LOST,
    WORKER_STOPPED,
    JobRecord,
    WorkRecord,
)
from .schemas import (
    CancelResult,
    Dag,
    RetryResult,
    Durations,
    JobLog,
    JobOut,
    SourceStored,
    Timeline,
    WorkDetail,
    WorkerOut,
    WorkflowDetail,
    WorkflowOut,
    WorkOut,
)

logger = logging.getLogger(__name__)

DASHBOARD = Path(__file__).with_name("dashboard")


@dataclass
class ApiContext:
    """What the API handlers share: the database, the bus (for control messages) and the source store."""

    db: Database
    bus: Bus
    secret: bytes
    store: SourceStore
    policy: TokenPolicy
    max_source_bytes: int = 200 * 2**20
    #: the states of the server's consumers (the recorder's events queue), for /api/health
    consumers: Callable[[], dict[str, str]] = dict
    #: how long a job retried by a user may wait for its driver to send it again before the monitor steps in
    retry_wait: float = 60.0
    #: the Host names answered and the check of cross-site writes
    origins: OriginPolicy = field(default_factory=lambda: OriginPolicy(frozenset({"localhost", "127.0.0.1", "::1",
                                                                                   "testserver"})))


def _digest_ok(digest: str) -> str:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise HTTPException(status.HTTP_400_BAD_REQUEST,
                            f"{digest!r} is not a sha256 digest: expected 64 lower-case hex characters")
    return digest


JOB_STATUSES = (QUEUED, RUNNING, RETRYING, *sorted(JOB_TERMINAL))
WORK_STATUSES = (UNKNOWN, RUNNING, *sorted(WORK_TERMINAL))
WORKER_STATES = (WORKER_ALIVE, WORKER_STOPPED, WORKER_LOST)
#: the largest offset or id a query takes (a 64-bit database integer, with room to spare)
MAX_OFFSET = 10**12


def _statuses(value: str | None, allowed: tuple[str, ...], param: str = "status") -> list[str]:
    """``a,b`` -> ["a", "b"], each one of ``allowed`` (else 422 naming the bad one)."""
    if not value:
        return []
    wanted = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in wanted if v not in allowed]
    if bad:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"{param}={bad[0]!r} is not one of {', '.join(allowed)} (give several separated by ,)")
    return wanted


def check_parameters(request: Request) -> None:
    """A query parameter the endpoint does not take is an error (422 naming it), never silently ignored; no
    parameter may carry a NUL byte (no database stores one in text)."""
    for where, params in (("path", request.path_params), ("query", request.query_params)):
        for name, value in params.items():
            if "\x00" in str(value):
                raise HTTPException(status.HTTP_400_BAD_REQUEST,
                                    f"{where} parameter {name!r} contains a NUL byte; remove it")
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known: set[str] = set()
    stack = [dependant]
    while stack:
        d = stack.pop()
        known.update(p.alias for p in d.query_params)
        stack.extend(d.dependencies)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "no query parameters"
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"unknown query parameter {unknown[0]!r} for {request.url.path}; it takes: {takes}")


def create_app(ctx: ApiContext) -> FastAPI:
    """Build the FastAPI application around a context; the OpenAPI schema is at /openapi.json."""
    app = FastAPIOffline(title="iworkflow server", version="1", description="DAG records, monitor, source cache.",
                         swagger_ui_parameters={"persistAuthorization": True})
    # declares the bearer token in the OpenAPI schema (Swagger UI's "Authorize"); the policy does the checking
    bearer = Security(HTTPBearer(auto_error=False, scheme_name="token",
                                 description="the server's IWORKFLOW_TOKEN: 'Authorization: Bearer <token>'"))
    read = [Depends(ctx.policy.require_read)] + ([bearer] if ctx.policy.read_token_required else [])
    write = [Depends(ctx.policy.require_write), bearer]
    api = APIRouter(prefix="/api", dependencies=[Depends(check_parameters)])

    @app.exception_handler(queries.NotFound)
    async def _not_found(_request: Request, exc: queries.NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_404_NOT_FOUND)

    @api.get("/health")
    def health(response: Response) -> dict:
        consumers = ctx.consumers()
        ok = all(state in ("consuming", "recovering") for state in consumers.values())
        if not ok:
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return {"ok": ok, "time": time.time(), "consumers": consumers}

    @api.get("/workflows", dependencies=read, response_model=list[WorkflowOut])
    def list_workflows(status_: str | None = Query(None, alias="status", description="statuses, comma-separated"),
                       name: str | None = Query(None, max_length=255, description="exact workflow name"),
                       parent_id: str | None = Query(None, max_length=64, description="sub-workflows of this one"),
                       top: bool = Query(False, description="only workflows not nested in another"),
                       limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0, le=MAX_OFFSET)):
        with ctx.db.session() as s:
            return queries.list_workflows(s, _statuses(status_, WORK_STATUSES), limit, offset, name=name,
                                          parent_id=parent_id, top=top)

    @api.get("/workflows/{ref}", dependencies=read, response_model=WorkflowDetail)
    def get_workflow(ref: str):
        with ctx.db.session() as s:
            return queries.workflow_detail(s, queries.resolve_workflow(s, ref))

    @api.get("/workflows/{ref}/dag", dependencies=read, response_model=Dag)
    def get_dag(ref: str, jobs: bool = Query(True, description="each node's jobs too (false: counts only)")):
        with ctx.db.session() as s:
            return queries.dag(s, queries.resolve_workflow(s, ref), with_jobs=jobs)

    @api.post("/workflows/{ref}/cancel", dependencies=write, response_model=CancelResult)
    def cancel_workflow(ref: str):
        return _cancel(ctx, ref)

    @api.post("/workflows/{ref}/retry-failed", dependencies=write, response_model=RetryResult,
              responses={409: {"description": "no failed job could be retried (the reasons are given)"}})
    def retry_failed_workflow(ref: str):
        """Run the failed jobs of the workflow's running works again (their drivers resubmit them)."""
        with ctx.db.session() as s:
            wf = queries.resolve_workflow(s, ref)
            works = [w.id for w in s.scalars(select(WorkRecord).where(WorkRecord.workflow_id == wf.id)).all()]
            workflow_id = wf.id
        return _retry_failed(ctx, workflow_id, works)

    @api.post("/works/{ref}/retry-failed", dependencies=write, response_model=RetryResult,
              responses={409: {"description": "no failed job could be retried (the reasons are given)"}})
    def retry_failed_work(ref: str):
        """Run the work's failed jobs again, while its driver still waits for it."""
        with ctx.db.session() as s:
            work = queries.resolve_work(s, ref)
            workflow_id, works = work.workflow_id or "", [work.id]
        return _retry_failed(ctx, workflow_id, works)

    @api.get("/workflows/{ref}/durations", dependencies=read, response_model=list[Durations])
    def get_durations(ref: str, bins: int = Query(20, ge=1, le=200)):
        """Per work of the workflow: its finished jobs' run times (summary and histogram)."""
        with ctx.db.session() as s:
            wf = queries.resolve_workflow(s, ref)
            works = s.scalars(select(WorkRecord).where(WorkRecord.workflow_id == wf.id)
                              .order_by(WorkRecord.submitted_at, WorkRecord.id)).all()
            return queries.durations(s, list(works), bins)

    @api.get("/works", dependencies=read, response_model=list[WorkOut])
    def list_works(workflow_id: str | None = Query(None, max_length=64), limit: int = Query(100, ge=1, le=1000),
                   offset: int = Query(0, ge=0, le=MAX_OFFSET)):
        with ctx.db.session() as s:
            q = select(WorkRecord).order_by(WorkRecord.submitted_at.desc().nulls_last(), WorkRecord.id)
            if workflow_id:
                q = q.where(WorkRecord.workflow_id == queries.resolve_workflow(s, workflow_id).id)
            works = s.scalars(q.limit(limit).offset(offset)).all()
            counts = queries.work_counts(s, [w.id for w in works])
            return [queries.work_out(w, counts.get(w.id, queries.Counts())) for w in works]

    @api.get("/works/{ref}", dependencies=read, response_model=WorkDetail)
    def get_work(ref: str):
        with ctx.db.session() as s:
            return queries.work_detail(s, queries.resolve_work(s, ref))

    @api.get("/jobs", dependencies=read, response_model=list[JobOut])
    def list_jobs(response: Response, work_id: str | None = Query(None, max_length=64),
                  workflow_id: str | None = Query(None, max_length=64),
                  status_: str | None = Query(None, alias="status", description="statuses, comma-separated"),
                  worker: str | None = Query(None, max_length=255, description="the worker that ran them"),
                  q: str | None = Query(None, max_length=255,
                                        description="text in the job key, arguments or error (any case)"),
                  sort: str = Query("id", description="id, status, attempt, worker, job_key, submitted_at, "
                                                      "started_at, finished_at or duration; -name: descending"),
                  limit: int = Query(200, ge=1, le=5000), offset: int = Query(0, ge=0, le=MAX_OFFSET)):
        """Jobs filtered, sorted and paged; the ``X-Total-Count`` header says how many match in all."""
        if sort.lstrip("-") not in queries.JOB_SORTS:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                f"sort={sort!r} is not one of {', '.join(queries.JOB_SORTS)} (prefix - to reverse)")
        statuses = _statuses(status_, JOB_STATUSES)
        with ctx.db.session() as s:
            query = select(JobRecord)
            if work_id:
                query = query.where(JobRecord.work_id == queries.resolve_work(s, work_id).id)
            if workflow_id:
                query = query.where(JobRecord.workflow_id == queries.resolve_workflow(s, workflow_id).id)
            query = queries.job_filter(query, statuses=statuses, worker=worker, text=q)
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            response.headers["X-Total-Count"] = str(total)
            rows = s.scalars(queries.job_sort(query, sort).limit(limit).offset(offset)).all()
            return [queries.job_out(j) for j in rows]

    @api.get("/workers", dependencies=read, response_model=list[WorkerOut])
    def list_workers(state: str | None = Query(None, description="alive, stopped or lost"),
                     queue: str | None = Query(None, max_length=255)):
        """Every worker that reported itself: its queue, slots, running and prefetched jobs, last heartbeat."""
        if state:
            _statuses(state, WORKER_STATES, "state")
        with ctx.db.session() as s:
            return queries.workers(s, state, queue)

    @api.get("/timeline", dependencies=read, response_model=Timeline)
    def get_timeline(workflow_id: str | None = Query(None, max_length=64), work_id: str | None = Query(
            None, max_length=64), since: float | None = Query(None, ge=0, le=1e11),
                     until: float | None = Query(None, ge=0, le=1e11), limit: int = Query(5000, ge=1, le=50000)):
        """Started jobs with their worker, start and end (a task stream), oldest start first."""
        with ctx.db.session() as s:
            wf = queries.resolve_workflow(s, workflow_id).id if workflow_id else None
            work = queries.resolve_work(s, work_id).id if work_id else None
            return queries.timeline(s, wf, work, since, until, limit)

    @api.get("/jobs/{ref}", dependencies=read, response_model=JobOut)
    def get_job(ref: str):
        with ctx.db.session() as s:
            return queries.job_out(queries.resolve_job(s, ref))

    @api.get("/jobs/{ref}/log", dependencies=read, response_model=JobLog)
    def get_job_log(ref: str, tail: int = Query(200, ge=0, le=100000, description="last N lines; 0: all")):
        with ctx.db.session() as s:
            return queries.job_log(s, queries.resolve_job(s, ref), tail)

    @api.head("/sources/{digest}", dependencies=read)
    def has_source(digest: str) -> Response:
        found = ctx.store.has(_digest_ok(digest))
        return Response(status_code=status.HTTP_200_OK if found else status.HTTP_404_NOT_FOUND)

    @api.get("/sources/{digest}", dependencies=read, response_class=Response,
             responses={200: {"content": {"application/gzip": {}}}})
    def get_source(digest: str) -> Response:
        if not ctx.store.has(_digest_ok(digest)):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"source {digest} is not in this server's cache")
        return FileResponse(ctx.store.tarball(digest), media_type="application/gzip")  # streamed from disk

    async def put_source(digest: str, request: Request, response: Response) -> SourceStored:
        """Receive a tarball piece by piece: the size limit holds while reading, never after buffering it."""
        _digest_ok(digest)
        limit = ctx.max_source_bytes
        declared = request.headers.get("content-length") or "0"
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise HTTPException(413, f"source tarball of {declared} bytes exceeds the server limit of {limit} bytes "
                                     "(max_source_mb)")
        upload = ctx.store.receive(digest)
        try:
            async for chunk in request.stream():
                upload.write(chunk)
                if upload.size > limit:
                    raise HTTPException(413, f"source tarball exceeds the server limit of {limit} bytes "
                                             "(max_source_mb): refused after reading that much")
            if upload.actual != digest:
                raise HTTPException(status.HTTP_400_BAD_REQUEST,
                                    f"body sha256 is {upload.actual}, not {digest}: upload the tarball to the URL "
                                    "of its own hash")
            created = upload.commit()
        finally:
            upload.discard()
        response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return SourceStored(digest=digest, size=upload.size, created=created)

    for method in ("PUT", "POST"):
        api.add_api_route("/sources/{digest}", put_source, methods=[method], dependencies=write,
                          response_model=SourceStored, name=f"upload_source_{method.lower()}",
                          openapi_extra={"requestBody": {"content": {"application/gzip": {}}, "required": True}})

    app.include_router(api)
    app.include_router(artifact_router(Catalog(SqlAlchemyConnector(ctx.db.engine)),
                                       BlobStore(Path(ctx.store.location) / "artifacts"), read, write))

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(DASHBOARD / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=DASHBOARD), name="static")
    app.add_middleware(OriginGuard, policy=ctx.origins)
    app.state.origins = ctx.origins
    return app


def _retry_failed(ctx: ApiContext, workflow_id: str, work_ids: list[str]) -> RetryResult:
    """Send a user retry for each failed job of these works and record it (retrying, with its next attempt).

    Only a work still running can take it: its driver holds the failure and has not handed the results out.
    A work that ended, or a driver that finds the job can no longer be retried, says why (409 / retry_refused)."""
    now = time.time()
    sends: list[tuple[str, bytes]] = []
    refused: list[dict[str, str]] = []
    with ctx.db.session() as s, s.begin():
        for work in s.scalars(select(WorkRecord).where(WorkRecord.id.in_(work_ids))
                              .order_by(WorkRecord.submitted_at, WorkRecord.id)).all():
            name = work.name or work.id
            failed = s.scalars(select(JobRecord).where(JobRecord.work_id == work.id, JobRecord.status == FAILED)
                               .order_by(JobRecord.id)).all()
            if not failed:
                continue
            if work.status in WORK_TERMINAL:
                refused.append({"work_id": work.id, "reason": (
                    f"work {name} has ended ({work.status}): its driver handed its results out; "
                    "resubmit the workflow to run the failed jobs again")})
                continue
            if not work.reply_to:
                refused.append({"work_id": work.id, "reason": f"work {name}: its driver's results queue is unknown"})
                continue
            for job in failed:
                attempt = job.attempt + 1
                control = Control.retry_failed(job.workflow_id, work.id, job.job_key, attempt)
                sends.append((results_destination(work.id, work.reply_to), control.encode(ctx.secret)))
                log_event(s, "job_retry", work.id, job.job_key, attempt, now, workflow_id=job.workflow_id,
                          worker=job.worker, message=f"retry of the failed attempt {job.attempt} asked through the "
                                                     f"server ({job.error or 'failed'})")
                job.status = RETRYING  # until the new attempt starts; the monitor resends it if it never does
                job.retry_at = now + ctx.retry_wait
                job.attempt = attempt
                job.requeued = True
                job.last_seen = now
                job.finished_at = None
                job.updated_at = now
        write_lines(s)
        if sends:
            states.refresh(s, work_ids, now=now)
    if not sends and refused:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="; ".join(r["reason"] for r in refused))
    if not sends:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="no failed job to retry")
    for destination, message in sends:
        ctx.bus.publish(destination, message)
    logger.warning("retry of %d failed job(s) of workflow %s sent", len(sends), workflow_id)
    return RetryResult(workflow_id=workflow_id, jobs_retried=len(sends), refused=refused)


def _cancel(ctx: ApiContext, ref: str) -> CancelResult:
    """Mark the workflow's unfinished records cancelled, end their waiting calls, tell workers to stop."""
    now = time.time()
    ended: list[tuple[str | None, str, str, int]] = []
    reply_to: dict[str, str | None] = {}
    with ctx.db.session() as s, s.begin():
        wf = queries.resolve_workflow(s, ref)
        if wf.status not in WORK_TERMINAL:
            wf.status = CANCELLED
            wf.finished_at = wf.finished_at or now
            wf.updated_at = now
        final_status = wf.status
        works = s.scalars(select(WorkRecord).where(WorkRecord.workflow_id == wf.id)).all()
        for work in works:
            reply_to[work.id] = work.reply_to
            if work.status not in WORK_TERMINAL:
                work.status = CANCELLED
                work.finished_at = now
                work.updated_at = now
        jobs = s.scalars(select(JobRecord).where(JobRecord.workflow_id == wf.id,
                                                 JobRecord.status.not_in(JOB_TERMINAL))).all()
        for job in jobs:
            job.status = CANCELLED
            job.error = "iworkflow.errors.WorkCancelled: cancelled through the server"
            job.finished_at = now
            job.updated_at = now
            ended.append((job.workflow_id, job.work_id, job.job_key, job.attempt))
        states.refresh(s, workflow_ids=[wf.id], now=now)
        workflow_id = wf.id
    ctx.bus.broadcast(CONTROL_TOPIC, Control(action=CANCEL, workflow_id=workflow_id,
                                             reason="cancelled through the server").encode(ctx.secret))
    for wf_id, work_id, key, attempt in ended:
        message = f"job {key} was cancelled: workflow {workflow_id} was cancelled through the server"
        header = {"workflow_id": wf_id, "work_id": work_id, "job_key": key, "attempt": attempt}
        ctx.bus.publish(results_destination(work_id, reply_to.get(work_id)),
                        failure_message(header, WorkCancelled(message), ctx.secret, start=now, worker="server"))
    logger.warning("workflow %s cancelled (%d unfinished jobs)", workflow_id, len(ended))
    return CancelResult(workflow_id=workflow_id, status=final_status, jobs_cancelled=len(ended))
