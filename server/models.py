"""SQLAlchemy models of the recorded DAG: workflows -> works -> jobs, work -> work edges, event log.

Timestamps are epoch seconds (floats), as carried by the events themselves.
"""
from __future__ import annotations

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

QUEUED, RUNNING, RETRYING = "queued", "running", "retrying"
FINISHED, FAILED, SUBFINISHED, CANCELLED, UNKNOWN = "finished", "failed", "subfinished", "cancelled", "unknown"
#: a worker record's states: sending heartbeats, stopped cleanly, or silent past heartbeat_timeout
WORKER_ALIVE, WORKER_STOPPED, WORKER_LOST = "alive", "stopped", "lost"
JOB_TERMINAL = frozenset({FINISHED, FAILED, CANCELLED})
WORK_TERMINAL = frozenset({FINISHED, FAILED, SUBFINISHED, CANCELLED})
ID = String(64)


class Base(DeclarativeBase):
    pass


class WorkflowRecord(Base):
    __tablename__ = "iwf_workflows"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(16), default=UNKNOWN, index=True)
    parent_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    submitted_at: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated_at: Mapped[float] = mapped_column(Float, default=0.0)

    works: Mapped[list[WorkRecord]] = relationship(back_populates="workflow", order_by="WorkRecord.submitted_at")


class WorkRecord(Base):
    __tablename__ = "iwf_works"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    workflow_id: Mapped[str | None] = mapped_column(ForeignKey("iwf_workflows.id"), nullable=True, index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    executor: Mapped[str] = mapped_column(String(255), default="")
    queue: Mapped[str] = mapped_column(String(255), default="")
    #: the driver's results queue: where the monitor sends retries and failure results
    reply_to: Mapped[str | None] = mapped_column(String(255), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=UNKNOWN)
    n_jobs: Mapped[int] = mapped_column(Integer, default=0)
    max_walltime: Mapped[float | None] = mapped_column(Float, nullable=True)
    submitted_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated_at: Mapped[float] = mapped_column(Float, default=0.0)

    workflow: Mapped[WorkflowRecord | None] = relationship(back_populates="works")
    jobs: Mapped[list[JobRecord]] = relationship(back_populates="work", order_by="JobRecord.id")


class JobRecord(Base):
    """One job of a work, identified by (work_id, job_key); ``attempt`` is the latest attempt known."""

    __tablename__ = "iwf_jobs"
    __table_args__ = (
        UniqueConstraint("work_id", "job_key", name="uq_iwf_jobs_work_key"),
        Index("ix_iwf_jobs_status", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    work_id: Mapped[str] = mapped_column(ForeignKey("iwf_works.id"), index=True)
    workflow_id: Mapped[str | None] = mapped_column(ID, nullable=True, index=True)
    job_key: Mapped[str] = mapped_column(String(255))
    args: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lost_workers: Mapped[str | None] = mapped_column(Text, nullable=True)
    submitted_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_seen: Mapped[float | None] = mapped_column(Float, nullable=True)
    heartbeats: Mapped[bool] = mapped_column(Boolean, default=False)
    requeued: Mapped[bool] = mapped_column(Boolean, default=False)
    retry_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    traceback: Mapped[str | None] = mapped_column(Text, nullable=True)
    output: Mapped[str | None] = mapped_column(Text, nullable=True)
    result_ref: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    #: the driver reused an earlier result of exactly this call (resume or ``cache=True``): nothing ran
    cached: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    updated_at: Mapped[float] = mapped_column(Float, default=0.0)

    work: Mapped[WorkRecord] = relationship(back_populates="jobs")


class WorkerRecord(Base):
    """One worker process as it reports itself (``worker_heartbeat`` / ``worker_stopped`` events)."""

    __tablename__ = "iwf_workers"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    queue: Mapped[str] = mapped_column(String(255), default="")
    slots: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default=WORKER_ALIVE)
    running: Mapped[int] = mapped_column(Integer, default=0)
    held: Mapped[int] = mapped_column(Integer, default=0)
    served: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_heartbeat: Mapped[float | None] = mapped_column(Float, nullable=True)
    stopped_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated_at: Mapped[float] = mapped_column(Float, default=0.0)


class WorkEdge(Base):
    """``parent`` produced results that ``child`` took as arguments."""

    __tablename__ = "iwf_work_edges"

    parent_id: Mapped[str] = mapped_column(ID, primary_key=True)
    child_id: Mapped[str] = mapped_column(ID, primary_key=True)
    workflow_id: Mapped[str | None] = mapped_column(ID, nullable=True, index=True)


class EventRecord(Base):
    """Every recorded event except heartbeats, once: ``digest`` makes a redelivered event a no-op."""

    __tablename__ = "iwf_events"
    __table_args__ = (Index("ix_iwf_events_job", "work_id", "job_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(32))
    workflow_id: Mapped[str | None] = mapped_column(ID, nullable=True, index=True)
    work_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    job_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    ts: Mapped[float] = mapped_column(Float)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
