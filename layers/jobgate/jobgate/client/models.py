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
    status: str = ""
    run: str = ""
    logs: str = ""
    outputs: str = ""
    download: str = ""
    events: str = ""
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
    finish_reason: str | None = None  # one word for why it ended: exit_0, exit_nonzero, timeout, ...
    partial: bool = False  # succeeded with an exit code its command names as partial success
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    status_url: str | None = None
    output_url: str | None = None
    links: JobLinks = Field(default_factory=JobLinks)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @property
    def summary(self) -> str:
        """One line: the job, how it stands or ended, its exit code and its error."""
        what = f"job {self.job_id} ({self.stage} {self.command}) {self.status.replace('_', ' ')}"
        if self.exit_code is not None:
            what += f" with exit code {self.exit_code}"
        if self.error is not None and self.error.message:
            what += f": {self.error.message}"
        return what


class RunLinks(_Answer):
    self: str = ""
    run: str = ""
    job: str = ""
    outputs: str = ""
    events: str = ""
    websocket: str | None = None


class RunStatus(_Answer):
    """A job's light status (GET /v1/runs/{run_id} or /v1/jobs/{id}/status): no args, no log tails."""

    run_id: str
    job_id: str
    stage: str = ""
    command: str = ""
    status: str
    progress: float = 0.0
    finish_reason: str | None = None
    partial: bool = False
    error: JobError | None = None
    exit_code: int | None = None
    output_count: int = 0
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    output_url: str | None = None
    links: RunLinks = Field(default_factory=RunLinks)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class CheckedInput(_Answer):
    arg: str
    ref: str
    source: str = "asset"
    media_type: str = ""
    size: int = 0
    path: str = ""


class DryRun(_Answer):
    """What a submit would run, checked as a submit is; nothing was written or queued."""

    valid: bool
    stage: str
    command: str
    argv: list[str]
    inputs: list[CheckedInput] = Field(default_factory=list)
    timeout_s: int | None = None
    warnings: list[str] = Field(default_factory=list)


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
    labels: dict[str, str] = Field(default_factory=dict)
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
    contract: CommandContract | None = None  # asked for with commands(contracts=True)


class CommandList(_Answer):
    stages: dict[str, list[str]]
    items: list[CommandSummary]


class JobEvent(_Answer):
    """One event of a job, from the WebSocket or the event long poll (with its `seq`), or made up from
    polling the job (`seq` None).

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
    # websocket: pushed; events: from the numbered log by the HTTP long poll; poll: made up from the job
    source: Literal["websocket", "events", "poll"] = "websocket"

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
        return self.job.summary


class EventPage(_Answer):
    """A page of the long poll GET /v1/jobs/{id}/events: pass `next_after_seq` as the next `after_seq`."""

    events: list[JobEvent] = Field(default_factory=list)
    next_after_seq: int
    done: bool = False


class StepView(_Answer):
    name: str
    after: list[str] = Field(default_factory=list)
    job: Job


class Pipeline(_Answer):
    """Steps as jobs: each step's job, and the pipeline's own status and progress."""

    pipeline_id: str
    run_id: str | None = None
    status: str
    progress: float = 0.0
    created_at: datetime | None = None
    steps: list[StepView] = Field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class PipelinePage(_Answer):
    items: list[Pipeline]
    next_cursor: str | None = None


class MapCounts(_Answer):
    waiting: int = 0
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0
    cancelled: int = 0


class MapMerge(_Answer):
    job_id: str
    status: str
    stage: str = ""
    command: str = ""


class Map(_Answer):
    """One command over many items: chunk counts per state, and the merge (a job of its own)."""

    map_id: str
    run_id: str | None = None
    status: str
    stage: str = ""
    command: str = ""
    over: str = ""
    count: int = 0
    max_parallel: int = 0
    paused: bool = False
    progress: float = 0.0
    counts: MapCounts = Field(default_factory=MapCounts)
    merge: MapMerge | None = None
    created_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        """Every chunk has ended, and the merge too when there is one."""
        merged = self.merge is None or self.merge.status in TERMINAL_STATUSES
        return self.status in TERMINAL_STATUSES and merged


class Chunk(_Answer):
    chunk: int
    job: Job
