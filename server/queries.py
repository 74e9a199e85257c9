"""Read-side queries: records resolved by id or prefix, job counts, the DAG of a workflow."""
from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import EventRecord, JobRecord, WorkEdge, WorkflowRecord, WorkRecord
from .schemas import Counts, Dag, Edge, EventOut, JobLog, JobOut, WorkDetail, WorkflowDetail, WorkflowOut, WorkOut

MIN_PREFIX = 4


class NotFound(LookupError):
    """Nothing (or more than one record) matches a reference; the message says which."""


def _counts(rows) -> dict[str, Counts]:
    out: dict[str, Counts] = defaultdict(Counts)
    for owner, status, n in rows:
        c = out[owner]
        c.total += n
        if status in Counts.model_fields and status != "total":
            setattr(c, status, getattr(c, status) + n)
    return out


def workflow_counts(session: Session, ids: list[str]) -> dict[str, Counts]:
    if not ids:
        return {}
    rows = session.execute(select(WorkRecord.workflow_id, JobRecord.status, func.count())
                           .join(JobRecord, JobRecord.work_id == WorkRecord.id)
                           .where(WorkRecord.workflow_id.in_(ids))
                           .group_by(WorkRecord.workflow_id, JobRecord.status)).all()
    return _counts(rows)


def work_counts(session: Session, ids: list[str]) -> dict[str, Counts]:
    if not ids:
        return {}
    rows = session.execute(select(JobRecord.work_id, JobRecord.status, func.count())
                           .where(JobRecord.work_id.in_(ids)).group_by(JobRecord.work_id, JobRecord.status)).all()
    return _counts(rows)


def resolve_workflow(session: Session, ref: str) -> WorkflowRecord:
    """A workflow by id or by a unique id prefix (at least 4 characters)."""
    wf = session.get(WorkflowRecord, ref)
    if wf is not None:
        return wf
    if len(ref) >= MIN_PREFIX:
        found = session.scalars(select(WorkflowRecord).where(WorkflowRecord.id.startswith(ref, autoescape=True))
                                .limit(3)).all()
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise NotFound(f"workflow id prefix {ref!r} is ambiguous ({', '.join(w.id for w in found)}, ...); "
                           "give more characters")
    raise NotFound(f"no workflow with id {ref!r}; list them with GET /api/workflows or `iworkflow status`")


def resolve_work(session: Session, ref: str) -> WorkRecord:
    work = session.get(WorkRecord, ref)
    if work is not None:
        return work
    if len(ref) >= MIN_PREFIX:
        found = session.scalars(select(WorkRecord).where(WorkRecord.id.startswith(ref, autoescape=True))
                                .limit(2)).all()
        if len(found) == 1:
            return found[0]
    raise NotFound(f"no work with id {ref!r} (or the prefix is ambiguous)")


def resolve_job(session: Session, ref: str) -> JobRecord:
    """A job by numeric id, ``work_id:job_key``, or a unique job-key prefix (at least 4 characters)."""
    if ref.isdigit():
        job = session.get(JobRecord, int(ref))
        if job is not None:
            return job
    if ":" in ref:
        work_id, _, key = ref.partition(":")
        job = session.scalar(select(JobRecord).where(JobRecord.work_id == work_id, JobRecord.job_key == key))
        if job is not None:
            return job
    if len(ref) >= MIN_PREFIX:
        found = session.scalars(select(JobRecord).where(JobRecord.job_key.startswith(ref, autoescape=True))
                                .limit(3)).all()
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise NotFound(f"job key prefix {ref!r} matches several jobs (ids {', '.join(str(j.id) for j in found)}"
                           ", ...); use the numeric job id or work_id:job_key")
    raise NotFound(f"no job {ref!r}; give a numeric job id, work_id:job_key, or a job-key prefix")


def job_out(job: JobRecord) -> JobOut:
    out = JobOut.model_validate(job)
    if job.started_at and job.finished_at:
        out.duration = max(0.0, job.finished_at - job.started_at)
    return out


def workflow_out(session: Session, wf: WorkflowRecord, counts: Counts | None = None) -> WorkflowOut:
    out = WorkflowOut.model_validate(wf)
    out.n_works = session.scalar(select(func.count()).select_from(WorkRecord)
                                 .where(WorkRecord.workflow_id == wf.id)) or 0
    out.counts = counts if counts is not None else workflow_counts(session, [wf.id]).get(wf.id, Counts())
    return out


def list_workflows(session: Session, status: str | None, limit: int, offset: int) -> list[WorkflowOut]:
    q = select(WorkflowRecord).order_by(WorkflowRecord.submitted_at.desc().nulls_last(), WorkflowRecord.id)
    if status:
        q = q.where(WorkflowRecord.status == status)
    wfs = session.scalars(q.limit(limit).offset(offset)).all()
    counts = workflow_counts(session, [w.id for w in wfs])
    n_works = dict(session.execute(select(WorkRecord.workflow_id, func.count())
                                   .where(WorkRecord.workflow_id.in_([w.id for w in wfs]))
                                   .group_by(WorkRecord.workflow_id)).all())
    out = []
    for wf in wfs:
        o = WorkflowOut.model_validate(wf)
        o.counts = counts.get(wf.id, Counts())
        o.n_works = n_works.get(wf.id, 0)
        out.append(o)
    return out


def workflow_detail(session: Session, wf: WorkflowRecord) -> WorkflowDetail:
    works = session.scalars(select(WorkRecord).where(WorkRecord.workflow_id == wf.id)
                            .order_by(WorkRecord.submitted_at, WorkRecord.id)).all()
    counts = work_counts(session, [w.id for w in works])
    detail = WorkflowDetail(**workflow_out(session, wf).model_dump())
    detail.works = [work_out(w, counts.get(w.id, Counts())) for w in works]
    return detail


def work_out(work: WorkRecord, counts: Counts) -> WorkOut:
    out = WorkOut.model_validate(work)
    out.counts = counts
    return out


def work_detail(session: Session, work: WorkRecord) -> WorkDetail:
    jobs = session.scalars(select(JobRecord).where(JobRecord.work_id == work.id).order_by(JobRecord.id)).all()
    counts = work_counts(session, [work.id]).get(work.id, Counts())
    detail = WorkDetail(**work_out(work, counts).model_dump())
    detail.jobs = [job_out(j) for j in jobs]
    return detail


def dag(session: Session, wf: WorkflowRecord) -> Dag:
    works = session.scalars(select(WorkRecord).where(WorkRecord.workflow_id == wf.id)
                            .order_by(WorkRecord.submitted_at, WorkRecord.id)).all()
    ids = {w.id for w in works}
    edges = session.scalars(select(WorkEdge).where(WorkEdge.child_id.in_(ids))).all() if ids else []
    return Dag(workflow=workflow_out(session, wf), nodes=[work_detail(session, w) for w in works],
               edges=[Edge(source=e.parent_id, target=e.child_id) for e in edges if e.parent_id in ids])


def _fmt_ts(ts: float | None) -> str:
    import datetime as dt

    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def job_log(session: Session, job: JobRecord, tail: int = 200) -> JobLog:
    events = session.scalars(select(EventRecord)
                             .where(EventRecord.work_id == job.work_id, EventRecord.job_key == job.job_key)
                             .order_by(EventRecord.ts, EventRecord.id)).all()
    header = (f"job {job.job_key} of work {job.work_id}: {job.status}, attempt {job.attempt}, "
              f"worker {job.worker or '-'}")
    lines = [header]
    lines += [f"{_fmt_ts(e.ts)}  {e.type:<13} attempt {e.attempt}  {e.worker or ''}  {e.message or ''}".rstrip()
              for e in events]
    if job.error:
        lines += ["", f"error: {job.error}"]
    if job.traceback:
        lines += ["", job.traceback.rstrip()]
    if job.output:
        lines += ["", "captured output (tail):", job.output.rstrip()]
    text = "\n".join(lines[-tail:] if tail else lines)
    return JobLog(job=job_out(job), error=job.error, traceback=job.traceback, output=job.output,
                  events=[EventOut.model_validate(e) for e in events], text=text)
