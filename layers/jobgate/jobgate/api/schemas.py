"""The API's answers: jobs as clients see them, pages, commands."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from jobgate.models import Job, JobError, JobStatus, Output
from jobgate.services.jobs import OutputLink


class JobLinks(BaseModel):
    self: str
    logs: str
    outputs: str
    download: str
    websocket: str | None = None


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
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: JobLinks

    @classmethod
    def of(cls, job: Job, websocket_url: str | None = None) -> JobView:
        base = f"/v1/jobs/{job.job_id}"
        links = JobLinks(
            self=base,
            logs=f"{base}/logs",
            outputs=f"{base}/outputs",
            download=f"{base}/download",
            websocket=websocket_url,
        )
        fields = job.model_dump(include=set(cls.model_fields) - {"links", "output_count"})
        return cls(**fields, output_count=job.total_outputs, links=links)


class JobList(BaseModel):
    items: list[JobView]
    next_cursor: str | None


class CommandSummary(BaseModel):
    stage: str
    command: str
    command_set: str
    summary: str
    href: str


class CommandList(BaseModel):
    stages: dict[str, list[str]]
    items: list[CommandSummary]


class OutputList(BaseModel):
    items: list[OutputLink]
    next_cursor: str | None


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}
