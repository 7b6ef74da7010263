"""The API's answers as the client reads them: tolerant of fields a newer server adds."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "timed_out", "cancelled"})
ACTIVE_STATUSES = frozenset({"queued", "running"})


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class JobLinks(_Answer):
    self: str = ""
    logs: str = ""
    outputs: str = ""
    download: str = ""
    websocket: str | None = None


class JobError(_Answer):
    type: str
    message: str = ""


class Output(_Answer):
    """A file the command wrote, as a relative path; `url` is a presigned GET (GET .../outputs only)."""

    name: str
    size: int = 0
    media_type: str = "application/octet-stream"
    sha256: str | None = None
    url: str | None = None


class Job(_Answer):
    job_id: str
    run_id: str | None = None
    stage: str
    command: str
    args: dict[str, Any] = Field(default_factory=dict)
    status: str
    progress: float = 0.0
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    error: JobError | None = None
    outputs: list[Output] = Field(default_factory=list)  # the first of them when output_count is larger
    output_count: int = 0
    attempts: int = 0
    timeout_s: int | None = None
    cancel_requested: bool = False
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    links: JobLinks = Field(default_factory=JobLinks)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


class JobPage(_Answer):
    items: list[Job]
    next_cursor: str | None = None


class Asset(_Answer):
    asset_id: str
    filename: str
    media_type: str
    size: int
    status: str
    reason: str | None = None
    created_at: datetime | None = None
    available_at: datetime | None = None

    @property
    def ref(self) -> str:
        """How a job's args name this file."""
        return f"asset://{self.asset_id}"


class AssetPage(_Answer):
    items: list[Asset]
    next_cursor: str | None = None


class Param(_Answer):
    """One argument of a command, as the command's own parser defines it."""

    dest: str
    flags: list[str] = Field(default_factory=list)
    kind: Literal["positional", "option", "flag"] | str = "option"
    type: str = "string"
    multiple: bool = False
    nargs: int | str | None = None
    required: bool = False
    choices: list[Any] | None = None
    default: Any = None
    help: str = ""
    role: str = "value"  # value | path | input | output | output_dir
    media_types: list[str] = Field(default_factory=list)

    @property
    def spelling(self) -> str:
        longs = [f for f in self.flags if f.startswith("--")]
        return (longs or self.flags or [self.dest])[0]


class CommandContract(_Answer):
    command_set: str = ""
    stage: str
    command: str
    summary: str = ""
    params: list[Param] = Field(default_factory=list)
    max_timeout_s: int | None = None


class CommandSummary(_Answer):
    stage: str
    command: str
    command_set: str = ""
    summary: str = ""
    href: str = ""


class CommandList(_Answer):
    stages: dict[str, list[str]]
    items: list[CommandSummary]


class JobEvent(_Answer):
    """One event of a job, from the WebSocket (with its `seq`) or made up from polling (`seq` None).

    `type` is `snapshot` (the job as it was when watching began, in `job`), `log` (`stream`,
    `text`), `progress` (`progress`, 0..1) or `status` (`status`, `exit_code`, `error`); the last
    event of a watch is a `status` with a terminal status.
    """

    type: str
    job_id: str
    seq: int | None = None
    stream: str | None = None
    text: str | None = None
    progress: float | None = None
    status: str | None = None
    exit_code: int | None = None
    error: JobError | None = None
    job: Job | None = None
    source: Literal["websocket", "poll"] = "websocket"

    @property
    def terminal_status(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def terminal(self) -> bool:
        """The last event of a job: its final status."""
        return self.type == "status" and self.terminal_status


class RunResult(BaseModel):
    """A finished job with its whole logs, and the files downloaded from it (if asked)."""

    job: Job
    stdout: str
    stderr: str
    files: list[Path] = Field(default_factory=list)

    @property
    def status(self) -> str:
        return self.job.status

    @property
    def exit_code(self) -> int | None:
        return self.job.exit_code

    @property
    def outputs(self) -> list[Output]:
        return self.job.outputs

    @property
    def ok(self) -> bool:
        return self.job.succeeded

    @property
    def summary(self) -> str:
        job = self.job
        what = f"job {job.job_id} ({job.stage} {job.command}) {job.status.replace('_', ' ')}"
        if job.exit_code is not None:
            what += f" with exit code {job.exit_code}"
        if job.error is not None and job.error.message:
            what += f": {job.error.message}"
        return what
