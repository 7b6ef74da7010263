"""The typed shapes that services take and give: jobs, requests, outputs, assets."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from jobgate.settings import MAX_SYNC_WAIT_S

LOG_TAIL_BYTES = 16 * 1024
# An error's message as recorded on the job: enough to say what happened, bounded like every field.
ERROR_MESSAGE_BYTES = 4 * 1024


def utcnow() -> datetime:
    return datetime.now(UTC)


# A run_id the server makes for a job submitted without one: `run_<job_id>`. A client's run_id cannot
# contain `_` (JobRequest.run_id's pattern), so the two never collide, and a server-made one needs no
# reservation record: the job id it names is the lookup.
SERVER_RUN_ID_PREFIX = "run_"
# Where a job runs: the worker Lambda (up to its budget), or the container runner (docs/architecture.md).
Runner = Literal["lambda", "container"]


def server_run_id(job_id: str) -> str:
    return f"{SERVER_RUN_ID_PREFIX}{job_id}"


def job_id_of_server_run(run_id: str) -> str | None:
    """The job a server-made run_id names; None for a client's own run_id."""
    return run_id[len(SERVER_RUN_ID_PREFIX) :] if run_id.startswith(SERVER_RUN_ID_PREFIX) else None


class JobStatus(StrEnum):
    # A pipeline step waiting for the steps it reads from, or a map's chunk waiting for a free slot
    # (max_parallel) or the map's resume: no message is queued for it until it is released.
    BLOCKED = "blocked"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.TIMED_OUT, JobStatus.CANCELLED}
)


class AssetStatus(StrEnum):
    PENDING = "PENDING"
    AVAILABLE = "AVAILABLE"
    FAILED = "FAILED"


class JobError(BaseModel):
    type: str
    message: str

    @field_validator("message")
    @classmethod
    def _bounded(cls, message: str) -> str:
        return clip(message, ERROR_MESSAGE_BYTES)


class Output(BaseModel):
    name: str
    size: int
    media_type: str
    sha256: str | None = None


class InputObject(BaseModel):
    """Where an input asset's file is, recorded with the job so the worker stages it without reading
    the asset (its file name is the key's last part)."""

    key: str
    size: int


class JobRequest(BaseModel):
    """What a client submits; `args` are keyed by the command's argparse dest names."""

    model_config = ConfigDict(extra="forbid")

    stage: str = Field(min_length=1, max_length=64)
    command: str = Field(min_length=1, max_length=64)
    args: dict[str, Any] = Field(default_factory=dict)
    mode: Literal["async", "sync"] = "async"
    run_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")
    wait_s: float = Field(default=MAX_SYNC_WAIT_S, gt=0, le=MAX_SYNC_WAIT_S)
    timeout_s: int | None = Field(default=None, ge=1)
    max_attempts: int | None = Field(
        default=None, ge=1, le=5, description="Runs allowed for failures the worker marks retriable."
    )
    retry_on_exit: bool = Field(default=False, description="Also retry a non-zero exit (up to max_attempts).")
    zip_outputs: bool = Field(
        default=False, description="Also pack every output into one zip (download ?zip=1)."
    )
    dry_run: bool = Field(
        default=False,
        description="Check the request as a submit would (contract, inputs, limits) and answer 200 with"
        " the argv it would run; nothing is written, queued or counted.",
    )

    def fingerprint(self) -> str:
        """Hash of what makes two submissions the same job (mode and wait_s do not)."""
        body = {
            "stage": self.stage,
            "command": self.command,
            "args": self.args,
            "timeout_s": self.timeout_s,
            "max_attempts": self.max_attempts,
            "retry_on_exit": self.retry_on_exit,
            "zip_outputs": self.zip_outputs,
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


class Job(BaseModel):
    """A job record as the store keeps it; the API adds `links` when it answers."""

    job_id: str
    tenant: str
    run_id: str | None = None
    stage: str
    command: str
    args: dict[str, Any] = Field(default_factory=dict)
    argv: list[str] = Field(default_factory=list)
    inputs: dict[str, str] = Field(default_factory=dict)
    input_objects: dict[str, InputObject] = Field(default_factory=dict)  # by asset id; may be left out
    status: JobStatus = JobStatus.QUEUED
    progress: float = 0.0
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    error: JobError | None = None
    # The outputs, or their first page when there are too many for the record: then the whole list
    # is in the manifest object `outputs_manifest` (S3), and `output_count` says how many there are.
    outputs: list[Output] = Field(default_factory=list)
    output_count: int | None = None
    outputs_manifest: str | None = None
    # The token of the last conditional write (JobStore._update): lets a writer whose answer was lost
    # recognise its own write.
    write_token: str | None = None
    attempts: int = 0
    timeout_s: int
    request_hash: str
    cancel_requested: bool = False
    lease_until: int | None = None  # epoch milliseconds: compared in DynamoDB conditions
    event_seq: int = 0  # the last event's number (WebSocket stream)
    watchers: int = 0  # WebSocket subscriptions (it may overstate: expired ones are not counted off)
    requeues: int = 0  # times the sweeper re-sent this queued spell's message (it failed to send)
    queued_at: datetime | None = None  # when it last became queued (written, unblocked, retried)
    enqueued_at: datetime | None = None  # when that spell's message was confirmed sent to the queue
    pipeline_id: str | None = None
    step: str | None = None
    upstream: dict[str, str] = Field(default_factory=dict)  # "<dest>[i]" -> "<job_id>/<path>"
    map_id: str | None = None  # a map's chunk (or its retry): `chunk` is its index among the items
    chunk: int | None = None
    merge_of: str | None = None  # a map's merge: the worker stages every succeeded chunk's outputs
    max_attempts: int | None = None
    retry_on_exit: bool = False
    retry_of: str | None = None
    retried_by: str | None = None
    zip_outputs: bool = False
    archive: Output | None = None  # the zip of every output, when asked
    # Where it runs: the worker Lambda, or a task of its own on the container runner (ECS Fargate).
    runner: Runner = "lambda"
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @model_validator(mode="after")
    def _has_a_run_id(self) -> Job:
        # Every job answers to a run_id: the client's, or one the server makes from the job id.
        if self.run_id is None:
            self.run_id = server_run_id(self.job_id)
        return self

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @property
    def partial(self) -> bool:
        """Succeeded with an exit code its command's contract names as partial success."""
        return self.status == JobStatus.SUCCEEDED and bool(self.exit_code)

    @property
    def finish_reason(self) -> str | None:
        """Why the job ended, in one word (None while it has not)."""
        if not self.terminal:
            return None
        if self.status == JobStatus.SUCCEEDED:
            return "exit_nonzero" if self.exit_code else "exit_0"
        if self.status == JobStatus.CANCELLED:
            return "cancelled"
        if self.status == JobStatus.TIMED_OUT:
            return "timeout"
        kind = self.error.type if self.error is not None else ""
        return FINISH_REASONS.get(kind, kind or "failed")

    @property
    def total_outputs(self) -> int:
        """How many outputs the job wrote (`outputs` may hold only the first page of them)."""
        return self.output_count if self.output_count is not None else len(self.outputs)


# error.type -> finish_reason, for jobs that failed.
FINISH_REASONS = {
    "exit": "exit_nonzero",
    "signal": "signal",
    "timeout": "timeout",
    "input": "input_error",
    "missing_output": "missing_output",
    "worker_lost": "worker_lost",
    "dead_letter": "dead_letter",
    "never_started": "never_started",
    "enqueue": "never_started",
    "queue_expired": "queue_expired",
    "capacity": "capacity",
}


class JobPage(BaseModel):
    items: list[Job]
    next_cursor: str | None = None


class JobResult(BaseModel):
    """What a worker reports when a job's command has ended."""

    status: JobStatus
    exit_code: int | None
    stdout_tail: str
    stderr_tail: str
    error: JobError | None = None
    outputs: list[Output] = Field(default_factory=list)  # every output, or the first page of a manifest
    output_count: int | None = None
    outputs_manifest: str | None = None
    archive: Output | None = None


class Asset(BaseModel):
    asset_id: str
    tenant: str
    filename: str
    media_type: str
    size: int
    status: AssetStatus = AssetStatus.PENDING
    key: str
    etag: str | None = None
    reason: str | None = None
    upload_id: str | None = None  # set while a multipart upload is open
    labels: dict[str, str] = Field(default_factory=dict)
    created_at: datetime
    available_at: datetime | None = None


class AssetPage(BaseModel):
    items: list[Asset]
    next_cursor: str | None = None


def tail(text: bytes, limit: int = LOG_TAIL_BYTES) -> str:
    """The last `limit` bytes of a log, decoded; at most `limit` bytes as UTF-8 too.

    Each undecodable byte becomes U+FFFD, three bytes in UTF-8: binary output would triple in size
    on the job record, so the decoded text is cut again from the front.
    """
    decoded = text[-limit:].decode("utf-8", errors="replace")
    encoded = decoded.encode()
    if len(encoded) <= limit:
        return decoded
    return encoded[-limit:].decode("utf-8", errors="ignore")


def clip(text: str, limit: int) -> str:
    """The start of `text`, at most `limit` bytes as UTF-8, never splitting a character."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode("utf-8", errors="ignore") + "..."


class JobEvent(BaseModel):
    """One event of a job's stream, as subscribers receive it; `seq` orders a job's events."""

    model_config = ConfigDict(extra="allow")

    type: Literal["log", "progress", "status"]
    job_id: str
    seq: int = 0
    stream: Literal["stdout", "stderr"] | None = None
    text: str | None = None
    progress: float | None = None
    status: JobStatus | None = None
    exit_code: int | None = None
    error: JobError | None = None

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class Subscription(BaseModel):
    job_id: str
    connection_id: str
    delivered_seq: int = 0


class SubscribeRequest(BaseModel):
    """What a WebSocket client sends: follow a job (or every step of a pipeline, or a map's chunks and its
    merge), or stop following it (docs/asyncapi.yaml)."""

    action: Literal["subscribe", "unsubscribe"]
    job_id: str | None = Field(default=None, min_length=1, max_length=64)
    pipeline_id: str | None = Field(default=None, min_length=1, max_length=64)
    map_id: str | None = Field(default=None, min_length=1, max_length=64)
    after_seq: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_target(self) -> SubscribeRequest:
        if sum(target is not None for target in (self.job_id, self.pipeline_id, self.map_id)) != 1:
            raise ValueError("name exactly one of job_id, pipeline_id and map_id")
        return self
