"""Read-side queries: records resolved by id or prefix, job counts, the DAG of a workflow."""
from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import EventRecord, JobRecord, WorkEdge, WorkerRecord, WorkflowRecord, WorkRecord
from .schemas import (
    Counts,
    Dag,
    Durations,
    Edge,
    EventOut,
    JobLog,
    JobOut,
    Timeline,
    TimelineJob,
    WorkDetail,
    WorkerOut,
    WorkflowDetail,
    WorkflowOut,
    WorkOut,
)

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
    """A job by numeric id, ``work:key`` (each a full id or a unique prefix), a unique job-key prefix, or a work
    (id or prefix) that has a single job; prefixes need at least 4 characters."""
    if ref.isascii() and ref.isdigit() and len(ref) <= 18:
        job = session.get(JobRecord, int(ref))
        if job is not None:
            return job
    if ":" in ref:
        work_ref, _, key = ref.partition(":")
        try:
            work = resolve_work(session, work_ref)
        except NotFound:
            raise NotFound(f"no job {ref!r}: no work with id (or unique prefix) {work_ref!r}") from None
        found = session.scalars(select(JobRecord).where(JobRecord.work_id == work.id,
                                                        JobRecord.job_key.startswith(key, autoescape=True))
                                .order_by(JobRecord.id).limit(3)).all()
        exact = [j for j in found if j.job_key == key]
        if exact or len(found) == 1:
            return (exact or found)[0]
        if found:
            raise NotFound(f"job key prefix {key!r} matches several jobs of work {work.id} (ids "
                           f"{', '.join(str(j.id) for j in found)}, ...); give more characters")
        raise NotFound(f"work {work.id} has no job with key {key!r}")
    if len(ref) >= MIN_PREFIX:
        found = session.scalars(select(JobRecord).where(JobRecord.job_key.startswith(ref, autoescape=True))
                                .limit(3)).all()
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise NotFound(f"job key prefix {ref!r} matches several jobs (ids {', '.join(str(j.id) for j in found)}"
                           ", ...); use the numeric job id or work_id:job_key")
        works = session.scalars(select(WorkRecord).where(WorkRecord.id.startswith(ref, autoescape=True))
                                .limit(2)).all()
        if len(works) == 1:
            jobs = session.scalars(select(JobRecord).where(JobRecord.work_id == works[0].id).limit(2)).all()
            if len(jobs) == 1:
                return jobs[0]
            if jobs:
                raise NotFound(f"work {works[0].id} has several jobs: give work:job_key, the job key or its "
                               "numeric id (`iworkflow status` lists them)")
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
    out.n_children = _child_counts(session, [wf.id]).get(wf.id, 0)
    return out


def _child_counts(session: Session, ids: list[str]) -> dict[str, int]:
    if not ids:
        return {}
    return dict(session.execute(select(WorkflowRecord.parent_id, func.count())
                                .where(WorkflowRecord.parent_id.in_(ids))
                                .group_by(WorkflowRecord.parent_id)).all())


def list_workflows(session: Session, statuses: list[str], limit: int, offset: int, name: str | None = None,
                   parent_id: str | None = None, top: bool = False) -> list[WorkflowOut]:
    """Newest first; ``parent_id`` keeps the workflows nested in that one, ``top`` those nested in none."""
    q = select(WorkflowRecord).order_by(WorkflowRecord.submitted_at.desc().nulls_last(), WorkflowRecord.id)
    if statuses:
        q = q.where(WorkflowRecord.status.in_(statuses))
    if name is not None:
        q = q.where(WorkflowRecord.name == name)
    if parent_id is not None:
        q = q.where(WorkflowRecord.parent_id == parent_id)
    if top:
        q = q.where(WorkflowRecord.parent_id.is_(None))
    wfs = session.scalars(q.limit(limit).offset(offset)).all()
    ids = [w.id for w in wfs]
    counts = workflow_counts(session, ids)
    n_works = dict(session.execute(select(WorkRecord.workflow_id, func.count())
                                   .where(WorkRecord.workflow_id.in_(ids))
                                   .group_by(WorkRecord.workflow_id)).all())
    children = _child_counts(session, ids)
    out = []
    for wf in wfs:
        o = WorkflowOut.model_validate(wf)
        o.counts = counts.get(wf.id, Counts())
        o.n_works = n_works.get(wf.id, 0)
        o.n_children = children.get(wf.id, 0)
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


def dag(session: Session, wf: WorkflowRecord, with_jobs: bool = True) -> Dag:
    """The workflow's works and edges, its parent and nested workflows; ``with_jobs=False`` leaves each node's
    job list empty (the counts stay), which keeps a large workflow's DAG small enough to poll."""
    works = session.scalars(select(WorkRecord).where(WorkRecord.workflow_id == wf.id)
                            .order_by(WorkRecord.submitted_at, WorkRecord.id)).all()
    ids = {w.id for w in works}
    edges = session.scalars(select(WorkEdge).where(WorkEdge.child_id.in_(ids))).all() if ids else []
    parent = session.get(WorkflowRecord, wf.parent_id) if wf.parent_id else None
    if with_jobs:
        nodes = [work_detail(session, w) for w in works]
    else:
        counts = work_counts(session, list(ids))
        nodes = [WorkDetail(**work_out(w, counts.get(w.id, Counts())).model_dump()) for w in works]
    return Dag(workflow=workflow_out(session, wf), nodes=nodes,
               edges=[Edge(source=e.parent_id, target=e.child_id) for e in edges if e.parent_id in ids],
               parent=workflow_out(session, parent) if parent is not None else None,
               children=list_workflows(session, [], 1000, 0, parent_id=wf.id))


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
    every_line = "\n".join(lines).splitlines()  # a traceback or an output tail is many lines
    text = "\n".join(every_line[-tail:] if tail else every_line)
    return JobLog(job=job_out(job), error=job.error, traceback=job.traceback, output=job.output,
                  events=[EventOut.model_validate(e) for e in events], text=text)


#: how GET /api/jobs may sort (a leading "-" sorts descending)
JOB_SORTS = {"id": JobRecord.id, "status": JobRecord.status, "attempt": JobRecord.attempt,
             "worker": JobRecord.worker, "job_key": JobRecord.job_key, "submitted_at": JobRecord.submitted_at,
             "started_at": JobRecord.started_at, "finished_at": JobRecord.finished_at,
             "duration": JobRecord.finished_at - JobRecord.started_at}


def job_filter(query, *, statuses: list[str] | None = None, worker: str | None = None, text: str | None = None):
    """Jobs in any of ``statuses``, run by ``worker``, whose key, arguments or error contain ``text``."""
    if statuses:
        query = query.where(JobRecord.status.in_(statuses))
    if worker:
        query = query.where(JobRecord.worker == worker)
    if text:
        needle = text.lower()
        query = query.where(func.lower(JobRecord.job_key).contains(needle, autoescape=True)
                            | func.lower(JobRecord.args).contains(needle, autoescape=True)
                            | func.lower(JobRecord.error).contains(needle, autoescape=True))
    return query


def job_sort(query, sort: str):
    key = sort.lstrip("-")
    column = JOB_SORTS[key]
    ordered = column.desc().nulls_last() if sort.startswith("-") else column.asc().nulls_last()
    return query.order_by(ordered, JobRecord.id)


def workers(session: Session, state: str | None = None, queue: str | None = None) -> list[WorkerOut]:
    q = select(WorkerRecord).order_by(WorkerRecord.state, WorkerRecord.name)
    if state:
        q = q.where(WorkerRecord.state == state)
    if queue:
        q = q.where(WorkerRecord.queue == queue)
    rows = session.scalars(q).all()
    running = dict(session.execute(select(JobRecord.worker, func.count()).where(
        JobRecord.status == "running", JobRecord.worker.in_([w.name for w in rows]))
        .group_by(JobRecord.worker)).all()) if rows else {}
    out = []
    for w in rows:
        o = WorkerOut.model_validate(w)
        o.running_jobs = running.get(w.name, 0)
        out.append(o)
    return out


def timeline(session: Session, workflow_id: str | None, work_id: str | None, since: float | None,
             until: float | None, limit: int) -> Timeline:
    q = (select(JobRecord, WorkRecord.name).join(WorkRecord, JobRecord.work_id == WorkRecord.id)
         .where(JobRecord.started_at.is_not(None)).order_by(JobRecord.started_at, JobRecord.id))
    if workflow_id:
        q = q.where(JobRecord.workflow_id == workflow_id)
    if work_id:
        q = q.where(JobRecord.work_id == work_id)
    if since is not None:
        q = q.where((JobRecord.finished_at.is_(None)) | (JobRecord.finished_at >= since))
    if until is not None:
        q = q.where(JobRecord.started_at <= until)
    rows = session.execute(q.limit(limit + 1)).all()
    jobs = [TimelineJob(id=j.id, work_id=j.work_id, work_name=name, workflow_id=j.workflow_id, job_key=j.job_key,
                        worker=j.worker, status=j.status, attempt=j.attempt, started_at=j.started_at,
                        finished_at=j.finished_at if j.status in ("finished", "failed", "cancelled") else None)
            for j, name in rows[:limit]]
    return Timeline(workers=sorted({j.worker for j in jobs if j.worker}), jobs=jobs, truncated=len(rows) > limit)


def _quantile(values: list[float], q: float) -> float:
    pos = q * (len(values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def durations(session: Session, works: list[WorkRecord], bins: int) -> list[Durations]:
    """Per work: its finished jobs' run times, summarised and binned into ``bins`` equal-width bins."""
    out = []
    for work in works:
        values = sorted(max(0.0, end - start) for start, end in session.execute(
            select(JobRecord.started_at, JobRecord.finished_at).where(
                JobRecord.work_id == work.id, JobRecord.status == "finished", JobRecord.cached.is_(False),
                JobRecord.started_at.is_not(None), JobRecord.finished_at.is_not(None))).all())
        d = Durations(work_id=work.id, name=work.name, count=len(values))
        if values:
            d.min, d.max, d.mean = values[0], values[-1], sum(values) / len(values)
            d.p50, d.p90 = _quantile(values, 0.5), _quantile(values, 0.9)
            width = (values[-1] - values[0]) / bins or 1.0
            d.edges = [values[0] + i * width for i in range(bins + 1)]
            d.counts = [0] * bins
            for v in values:
                d.counts[min(bins - 1, int((v - values[0]) / width))] += 1
        out.append(d)
    return out
