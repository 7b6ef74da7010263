"""The API's answers: jobs as clients see them, pages, commands."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, Field

from jobgate.models import Job, JobError, JobStatus, Output, Runner
from jobgate.services.jobs import OutputLink
from jobgate.services.registry import CommandContract

FINISH_REASON_DOC = (
    "Why the job ended, in one word (null until it has): exit_0, exit_nonzero (with partial: true for an"
    " exit code the command's contract names as partial success), signal, timeout, cancelled,"
    " input_error, missing_output, worker_lost, dead_letter, never_started, queue_expired."
)


class JobLinks(BaseModel):
    self: str
    status: str
    run: str
    logs: str
    outputs: str
    download: str
    events: str
    websocket: str | None = None


def job_links(job: Job, websocket_url: str | None) -> JobLinks:
    base = f"/v1/jobs/{job.job_id}"
    return JobLinks(
        self=base,
        status=f"{base}/status",
        run=f"/v1/runs/{quote(job.run_id or '', safe='')}",
        logs=f"{base}/logs",
        outputs=f"{base}/outputs",
        download=f"{base}/download",
        events=f"{base}/events",
        websocket=websocket_url,
    )


def output_url(job: Job, declared: list[str] | None = None) -> str:
    """Where a client fetches the job's result: its one output (written, or the one its args declare),
    else the list of outputs."""
    base = f"/v1/jobs/{job.job_id}/outputs"
    if job.terminal:
        names = [job.outputs[0].name] if job.total_outputs == 1 and job.outputs else []
    else:
        names = declared or []
    return f"{base}/{quote(names[0])}" if len(names) == 1 else base


class JobView(BaseModel):
    job_id: str
    run_id: str | None
    stage: str
    command: str
    args: dict[str, Any]
    status: JobStatus
    progress: float
    exit_code: int | None
    stdout: str
    stderr: str
    error: JobError | None
    outputs: list[Output] = Field(
        description="The outputs; only the first of them when output_count is larger (GET .../outputs pages"
        " through all)."
    )
    output_count: int = Field(description="How many outputs the job wrote.")
    attempts: int
    timeout_s: int
    cancel_requested: bool
    pipeline_id: str | None = None
    step: str | None = None
    max_attempts: int | None = None
    retry_on_exit: bool = False
    retry_of: str | None = None
    retried_by: str | None = None
    zip_outputs: bool = False
    archive: Output | None = None
    runner: Runner = Field(
        default="lambda",
        description="Where it runs: the worker Lambda, or a container task (a timeout_s past the Lambda's"
        " budget, or a command that asks for one).",
    )
    finish_reason: str | None = Field(description=FINISH_REASON_DOC)
    partial: bool = Field(description="Succeeded, with an exit code that means partial success.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    status_url: str = Field(description="The light status to poll (GET; no log tails).")
    output_url: str = Field(
        description="The result: the one output the job writes (GET answers it inline when small), else"
        " the list of outputs."
    )
    links: JobLinks

    @classmethod
    def of(cls, job: Job, websocket_url: str | None = None, *, declared: list[str] | None = None) -> JobView:
        """The job as answered; `declared` names the outputs its args ask for (its contract's)."""
        computed = {"links", "output_count", "finish_reason", "partial", "status_url", "output_url"}
        fields = job.model_dump(include=set(cls.model_fields) - computed)
        links = job_links(job, websocket_url)
        return cls(
            **fields,
            output_count=job.total_outputs,
            finish_reason=job.finish_reason,
            partial=job.partial,
            status_url=links.status,
            output_url=output_url(job, declared),
            links=links,
        )


class RunLinks(BaseModel):
    self: str
    run: str
    job: str
    outputs: str
    events: str
    websocket: str | None = None


class RunStatus(BaseModel):
    """A job's light status, to poll every few seconds: no args, no log tails, no outputs list."""

    run_id: str
    job_id: str
    stage: str
    command: str
    status: JobStatus
    progress: float
    finish_reason: str | None = Field(description=FINISH_REASON_DOC)
    partial: bool
    error: JobError | None
    exit_code: int | None
    output_count: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    output_url: str
    links: RunLinks

    @classmethod
    def of(
        cls, job: Job, websocket_url: str | None = None, *, declared: list[str] | None = None
    ) -> RunStatus:
        links = job_links(job, websocket_url)
        return cls(
            run_id=job.run_id or "",
            job_id=job.job_id,
            stage=job.stage,
            command=job.command,
            status=job.status,
            progress=job.progress,
            finish_reason=job.finish_reason,
            partial=job.partial,
            error=job.error,
            exit_code=job.exit_code,
            output_count=job.total_outputs,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            output_url=output_url(job, declared),
            links=RunLinks(
                self=links.status,
                run=links.run,
                job=links.self,
                outputs=links.outputs,
                events=links.events,
                websocket=websocket_url,
            ),
        )


class JobList(BaseModel):
    items: list[JobView]
    next_cursor: str | None


class CommandSummary(BaseModel):
    stage: str
    command: str
    command_set: str
    summary: str
    href: str
    contract: CommandContract | None = None  # with ?contracts=true: what GET {href} answers


class CommandList(BaseModel):
    stages: dict[str, list[str]]
    items: list[CommandSummary]


class OutputList(BaseModel):
    items: list[OutputLink]
    next_cursor: str | None


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}
