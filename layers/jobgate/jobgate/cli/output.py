"""How the CLI answers: JSON for scripts (`--json`), short tables and lines for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, TextIO

from pydantic import BaseModel

from jobgate.client.models import Job, Pipeline, RunStatus

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TIMED_OUT, EXIT_INTERRUPTED = 0, 1, 2, 124, 130


def to_jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    return value


def print_json(value: Any, out: TextIO | None = None) -> None:
    stream = out or sys.stdout
    stream.write(json.dumps(to_jsonable(value), indent=2, default=str) + "\n")
    stream.flush()


def error(message: str) -> None:
    """The one line a failure prints on stderr."""
    sys.stderr.write(f"jobgate: {message}\n")
    sys.stderr.flush()


def note(message: str) -> None:
    """A remark for people (stderr, so stdout stays the command's)."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], out: TextIO | None = None) -> None:
    """Aligned columns: rich's table on a terminal, plain padded text for pipes (no wrapping)."""
    stream = out or sys.stdout
    rows = [list(row) for row in rows]
    if stream.isatty():
        from rich.console import Console
        from rich.table import Table

        grid = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for header in headers:
            grid.add_column(header, overflow="fold")
        for row in rows:
            grid.add_row(*row)
        Console(file=stream).print(grid)
        return
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    for row in [list(headers), *rows] if any(headers) else rows:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)]
        stream.write("  ".join(cells).rstrip() + "\n")
    stream.flush()


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def status_text(job: Job) -> str:
    text = job.status.replace("_", " ")
    if job.exit_code is not None:
        text += f" (exit {job.exit_code})"
    if job.cancel_requested and not job.terminal:
        text += ", cancel requested"
    return text


def job_lines(job: Job) -> list[tuple[str, str]]:
    rows = [
        ("job", job.job_id),
        ("command", f"{job.stage} {job.command}"),
        ("status", status_text(job)),
        ("progress", f"{job.progress:.0%}"),
        ("created", when(job.created_at)),
        ("started", when(job.started_at)),
        ("finished", when(job.finished_at)),
    ]
    if job.started_at and job.finished_at:
        rows.append(("took", f"{(job.finished_at - job.started_at).total_seconds():.1f} s"))
    if job.run_id:
        rows.append(("run_id", job.run_id))
    if job.finish_reason:
        rows.append(("ended by", job.finish_reason + (" (partial success)" if job.partial else "")))
    if job.error is not None:
        rows.append(("error", f"{job.error.type}: {job.error.message}"))
    for output in job.outputs:
        rows.append(("output", f"{output.name} ({size(output.size)}, {output.media_type})"))
    return rows


def run_lines(run: RunStatus) -> list[tuple[str, str]]:
    """A light status, as `jobgate status --run-id` shows it."""
    status = run.status.replace("_", " ") + (f" (exit {run.exit_code})" if run.exit_code is not None else "")
    rows = [
        ("run_id", run.run_id),
        ("job", run.job_id),
        ("command", f"{run.stage} {run.command}"),
        ("status", status),
        ("progress", f"{run.progress:.0%}"),
        ("created", when(run.created_at)),
        ("started", when(run.started_at)),
        ("finished", when(run.finished_at)),
    ]
    if run.finish_reason:
        rows.append(("ended by", run.finish_reason + (" (partial success)" if run.partial else "")))
    if run.error is not None:
        rows.append(("error", f"{run.error.type}: {run.error.message}"))
    rows.append(("outputs", f"{run.output_count} ({run.output_url})"))
    return rows


def pipeline_rows(pipeline: Pipeline) -> list[tuple[str, str, str]]:
    return [(step.name, step.job.job_id, status_text(step.job)) for step in pipeline.steps]


def pipeline_exit_code(pipeline: Pipeline) -> int:
    """0 when every step succeeded; else the first failed step's own status, as `job_exit_code` says."""
    for step in pipeline.steps:
        if not step.job.succeeded:
            return job_exit_code(step.job) or EXIT_FAILED
    return EXIT_OK


def job_exit_code(job: Job) -> int:
    """The exit status a shell sees: the command's own, or what ended the job.

    A job stopped from outside exits as a local command stopped the same way: 124 for a timeout
    (as `timeout(1)`), 130 for a cancel (as Ctrl-C), whatever status the signal left.
    """
    if job.status == "timed_out":
        return EXIT_TIMED_OUT
    if job.status == "cancelled":
        return EXIT_INTERRUPTED
    if job.status == "succeeded":
        return job.exit_code or 0
    if job.exit_code:
        return job.exit_code if 0 < job.exit_code < 256 else EXIT_FAILED
    return EXIT_FAILED


def report_failure(job: Job) -> None:
    """Say why a job did not succeed, in one line on stderr, unless its own stderr already did:
    a command that exited non-zero printed its reason itself, as it would have locally."""
    line = failure_line(job)
    if line is None:
        return
    if sys.stderr.isatty() or job.status != "failed" or job.error is None or job.error.type != "exit":
        error(line)


def failure_line(job: Job) -> str | None:
    """Why a job did not succeed, in one line; None when it did."""
    if job.status == "succeeded":
        return None
    what = f"job {job.job_id} ({job.stage} {job.command}) {job.status.replace('_', ' ')}"
    if job.error is not None and job.error.message:
        return f"{what}: {job.error.message}"
    if job.exit_code is not None:
        return f"{what} with exit code {job.exit_code}"
    return what
