"""Pydantic shapes of the REST API's answers (published in the OpenAPI schema)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Counts(BaseModel):
    """Jobs by status."""

    total: int = 0
    queued: int = 0
    running: int = 0
    retrying: int = 0
    finished: int = 0
    failed: int = 0
    cancelled: int = 0


class WorkflowOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    status: str
    parent_id: str | None = None
    error: str | None = None
    submitted_at: float | None = None
    finished_at: float | None = None
    n_works: int = 0
    #: workflows started inside this one's driver (nested ``@workflow`` calls)
    n_children: int = 0
    counts: Counts = Field(default_factory=Counts)


class WorkOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    workflow_id: str | None = None
    name: str
    executor: str
    queue: str
    status: str
    n_jobs: int
    max_walltime: float | None = None
    submitted_at: float | None = None
    finished_at: float | None = None
    counts: Counts = Field(default_factory=Counts)


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    work_id: str
    workflow_id: str | None = None
    job_key: str
    args: str | None = None
    status: str
    attempt: int
    worker: str | None = None
    lost_workers: str | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    last_seen: float | None = None
    error: str | None = None
    result_ref: str | None = None
    #: the result was reused from an earlier identical call (resume or cache=True), not computed
    cached: bool = False
    duration: float | None = None


class WorkflowDetail(WorkflowOut):
    works: list[WorkOut] = Field(default_factory=list)


class WorkDetail(WorkOut):
    jobs: list[JobOut] = Field(default_factory=list)


class Edge(BaseModel):
    source: str
    target: str


class Dag(BaseModel):
    """A workflow's works as nodes, work -> work edges, and each node's jobs."""

    workflow: WorkflowOut
    nodes: list[WorkDetail]
    edges: list[Edge]
    #: the workflow this one was started in, if nested, and the workflows started in this one
    parent: WorkflowOut | None = None
    children: list[WorkflowOut] = Field(default_factory=list)


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    type: str
    attempt: int
    ts: float
    worker: str | None = None
    message: str | None = None


class JobLog(BaseModel):
    """A job's error, traceback, captured output tail and event timeline; ``text`` is all of it as text."""

    job: JobOut
    error: str | None = None
    traceback: str | None = None
    output: str | None = None
    events: list[EventOut]
    text: str


class CancelResult(BaseModel):
    workflow_id: str
    status: str
    jobs_cancelled: int


class RetryRefusal(BaseModel):
    work_id: str
    reason: str


class RetryResult(BaseModel):
    """What a retry of failed jobs did: jobs sent again (each with its next attempt), and works that could not."""

    workflow_id: str
    jobs_retried: int
    refused: list[RetryRefusal] = []


class SourceStored(BaseModel):
    digest: str
    size: int
    created: bool


class WorkerOut(BaseModel):
    """A worker as it last reported itself; ``running_jobs``: jobs the server records as running on it."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    queue: str
    slots: int
    state: str
    running: int
    held: int
    served: int
    started_at: float | None = None
    last_heartbeat: float | None = None
    stopped_at: float | None = None
    running_jobs: int = 0


class TimelineJob(BaseModel):
    """One job's run on a worker: from its start to its end (None while running)."""

    id: int
    work_id: str
    work_name: str
    workflow_id: str | None = None
    job_key: str
    worker: str | None = None
    status: str
    attempt: int
    started_at: float
    finished_at: float | None = None


class Timeline(BaseModel):
    """Jobs per worker over time (a task stream); ``truncated`` when more jobs matched than ``limit``."""

    workers: list[str]
    jobs: list[TimelineJob]
    truncated: bool = False


class Durations(BaseModel):
    """The run times (seconds) of a work's finished jobs: summary numbers and a histogram."""

    work_id: str
    name: str
    count: int
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    #: ``len(counts) + 1`` bin edges
    edges: list[float] = Field(default_factory=list)
    counts: list[int] = Field(default_factory=list)
