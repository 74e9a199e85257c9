"""The statuses shown for works and workflows, decided here from what was reported and the jobs' states.

A driver reports ``work_finished`` / ``workflow_finished``, but it may never do so (a detached driver's own
work, a driver killed), and ``finished`` from a driver whose jobs failed must not read as a success:
``derive_work`` and ``derive_workflow`` turn the reported status and the job counts into the one shown.
"""
from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import (
    CANCELLED,
    FAILED,
    FINISHED,
    JOB_TERMINAL,
    RUNNING,
    SUBFINISHED,
    WORK_TERMINAL,
    JobRecord,
    WorkflowRecord,
    WorkRecord,
)


def _from_jobs(finished: int, failed: int, cancelled: int) -> str:
    if failed + cancelled == 0:
        return FINISHED
    if finished == 0:
        return CANCELLED if cancelled and not failed else FAILED
    return SUBFINISHED


def derive_work(reported: str, counts: dict[str, int], n_jobs: int) -> str:
    """A work's status: a cancel stands; a terminal report is corrected by failed jobs; an unreported work whose
    jobs all ended takes their outcome."""
    total = sum(counts.values())
    finished, failed, cancelled = (counts.get(s, 0) for s in (FINISHED, FAILED, CANCELLED))
    if reported == CANCELLED:
        return CANCELLED
    if reported in WORK_TERMINAL:
        if reported == FINISHED and failed + cancelled:
            return _from_jobs(finished, failed, cancelled)
        return reported
    ended = finished + failed + cancelled
    if reported == RUNNING and n_jobs and ended == total and total >= n_jobs:
        return _from_jobs(finished, failed, cancelled)
    return reported


def derive_workflow(reported: str, work_statuses: Iterable[str]) -> str:
    """A workflow's status: ``finished`` only if every work finished; failed works make it ``subfinished`` (some
    work finished) or ``failed``; a cancel or the driver's own failure stands."""
    if reported in (CANCELLED, FAILED):
        return reported
    statuses = list(work_statuses)
    if reported != FINISHED:
        return reported
    bad = [s for s in statuses if s in (FAILED, SUBFINISHED, CANCELLED)]
    if not bad:
        return FINISHED
    return SUBFINISHED if any(s in (FINISHED, SUBFINISHED) for s in statuses) else FAILED


def refresh(session: Session, work_ids: Iterable[str] = (), workflow_ids: Iterable[str] = (),
            now: float = 0.0) -> None:
    """Re-decide the statuses of these works and of their workflows (and of these workflows); in a cancelled
    workflow, jobs recorded after the cancel end as cancelled too."""
    work_ids = set(work_ids)
    workflow_ids = {w for w in workflow_ids if w}
    if work_ids:
        works = session.scalars(select(WorkRecord).where(WorkRecord.id.in_(work_ids))).all()
        workflow_ids |= {w.workflow_id for w in works if w.workflow_id}
    cancelled = set(session.scalars(select(WorkflowRecord.id).where(WorkflowRecord.id.in_(workflow_ids),
                                                                     WorkflowRecord.status == CANCELLED)).all())
    if cancelled:
        late = session.scalars(select(JobRecord).where(JobRecord.workflow_id.in_(cancelled),
                                                       JobRecord.status.not_in(JOB_TERMINAL))).all()
        for job in late:
            job.status = CANCELLED
            job.error = job.error or "iworkflow.errors.WorkCancelled: its workflow was cancelled"
            job.finished_at = job.finished_at or now
            job.updated_at = now
        work_ids |= {j.work_id for j in late}
    all_works = session.scalars(select(WorkRecord).where(
        WorkRecord.id.in_(work_ids) | WorkRecord.workflow_id.in_(workflow_ids))).all()
    counts: dict[str, dict[str, int]] = {}
    if all_works:
        for work_id, status, n in session.execute(
                select(JobRecord.work_id, JobRecord.status, func.count())
                .where(JobRecord.work_id.in_([w.id for w in all_works]))
                .group_by(JobRecord.work_id, JobRecord.status)).all():
            counts.setdefault(work_id, {})[status] = n
    by_workflow: dict[str, list[str]] = {}
    for work in all_works:
        if work.id in work_ids or work.workflow_id in cancelled:
            reported = CANCELLED if work.workflow_id in cancelled and work.status not in WORK_TERMINAL else work.status
            status = derive_work(reported, counts.get(work.id, {}), work.n_jobs or 0)
            if status != work.status:
                work.status = status
                if status in WORK_TERMINAL:
                    work.finished_at = work.finished_at or now
                work.updated_at = now
        if work.workflow_id:
            by_workflow.setdefault(work.workflow_id, []).append(work.status)
    for wf in session.scalars(select(WorkflowRecord).where(WorkflowRecord.id.in_(workflow_ids))).all():
        status = derive_workflow(wf.status, by_workflow.get(wf.id, []))
        if status != wf.status:
            wf.status = status
            wf.updated_at = now
