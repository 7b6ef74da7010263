"""`jobgate run`, `submit` and `watch`: a job that behaves like the local command it runs.

The job's stdout goes to stdout and its stderr to stderr, the exit status is the command's, and
its files land in `--out`. On a terminal, a progress bar runs on stderr while log lines stream.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jobgate.cli import output
from jobgate.cli.zyra_args import (
    STDIN,
    CommandArgs,
    UsageError,
    parse_command_words,
    replace_inputs,
    split_own_options,
)
from jobgate.client import Client
from jobgate.client._core import new_run_id
from jobgate.client.errors import JobgateClientError, NotFound
from jobgate.client.models import CommandContract, Job, JobEvent, Param, RunResult
from jobgate.media import guess_media_type

# jobgate's options that may also follow STAGE COMMAND (when the command has none of that name),
# and whether each takes a value.
RUN_OPTIONS = {
    "--out": True,
    "--run-id": True,
    "--timeout-s": True,
    "--json": False,
    "--no-progress": False,
    "--no-websocket": False,
    "--no-download": False,
    "--dry-run": False,
}


class JobDisplay:
    """Shows a job as it runs: log lines on their streams, a progress bar on a terminal's stderr.

    When stdout is not a terminal, the job's stdout is written once, whole, when the job ends:
    a pipe gets exactly the command's output whatever was lost or batched on the way.
    """

    def __init__(self, *, bar: bool) -> None:
        self._stream_stdout = sys.stdout.isatty()
        self._printed = {"stdout": "", "stderr": ""}
        self._progress: Any = None
        self._job_task: Any = None
        self._label = ""
        if bar:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                SpinnerColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )

    @contextmanager
    def shown(self) -> Iterator[JobDisplay]:
        if self._progress is not None:
            self._progress.start()
        try:
            yield self
        finally:
            self.stop()

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def transfer(self, what: str) -> Callable[[int, int], None] | None:
        """A progress callback for an upload or download, shown as its own bar."""
        if self._progress is None:
            return None
        task = self._progress.add_task(what, total=None)

        def report(done: int, total: int) -> None:
            if self._progress is not None:
                self._progress.update(task, completed=done, total=total or None)

        return report

    def job(self, job: Job) -> None:
        self._label = f"{job.stage} {job.command}"
        if self._progress is not None and self._job_task is None:
            self._job_task = self._progress.add_task(f"{self._label} · {job.status}", total=1.0)
        self._update(progress=job.progress, status=job.status)

    def event(self, event: JobEvent) -> None:
        if event.type == "log" and event.stream in self._printed and event.text:
            self._printed[event.stream] += event.text
            if event.stream == "stderr" or self._stream_stdout:
                self._write(event.stream, event.text)
        elif event.type in ("progress", "snapshot", "status"):
            self._update(progress=event.progress, status=event.status)

    def finish(self, stdout: str, stderr: str) -> None:
        """Write what the stream missed: all of stdout to a pipe, the rest of each log otherwise."""
        self.stop()
        for stream, whole in (("stdout", stdout), ("stderr", stderr)):
            printed = self._printed[stream]
            if stream == "stdout" and not self._stream_stdout:
                self._write(stream, whole)
            elif whole.startswith(printed):
                self._write(stream, whole[len(printed) :])

    def _update(self, *, progress: float | None, status: str | None) -> None:
        if self._progress is None or self._job_task is None:
            return
        fields: dict[str, Any] = {}
        if progress is not None:
            fields["completed"] = progress
        if status is not None:
            fields["description"] = f"{self._label} · {status.replace('_', ' ')}"
        self._progress.update(self._job_task, **fields)

    def _write(self, stream: str, text: str) -> None:
        if not text:
            return
        if self._progress is not None:
            from rich.text import Text

            self._progress.console.print(Text(text.rstrip("\n")), highlight=False, soft_wrap=True)
            return
        target = sys.stdout if stream == "stdout" else sys.stderr
        target.write(text)
        target.flush()


def _show_bar(args: argparse.Namespace) -> bool:
    return sys.stderr.isatty() and not args.json and not getattr(args, "no_progress", False)


def apply_own_options(args: argparse.Namespace, own: dict[str, str | bool]) -> None:
    """jobgate options found among the command's words, as if given before STAGE."""
    for flag, value in own.items():
        setattr(args, flag.lstrip("-").replace("-", "_"), value)
    if isinstance(getattr(args, "timeout_s", None), str):
        try:
            args.timeout_s = int(args.timeout_s)
        except ValueError:
            raise UsageError(f"--timeout-s: expected a number of seconds, got {args.timeout_s!r}") from None


def prepare(client: Client, args: argparse.Namespace, verb: str) -> tuple[CommandContract, CommandArgs]:
    contract = command_contract(client, args.stage, args.command, verb)
    words, own = split_own_options(args.words, contract, RUN_OPTIONS)
    apply_own_options(args, own)
    parsed = parse_command_words(contract, words, prog=f"jobgate {verb} {args.stage} {args.command}")
    return contract, parsed


def command_contract(client: Client, stage: str, command: str, verb: str) -> CommandContract:
    """The command's contract; an unknown stage or command is a usage error (exit 2), as zyra's
    own parser makes it."""
    try:
        return client.command(stage, command)
    except NotFound:
        pass
    stages = client.commands().stages
    if stage not in stages:
        choices = ", ".join(sorted(stages))
        raise UsageError(f"{verb}: invalid stage '{stage}' (choose from {choices})") from None
    choices = ", ".join(sorted(stages[stage]))
    raise UsageError(f"{verb} {stage}: invalid command '{command}' (choose from {choices})") from None


def upload_inputs(
    client: Client, contract: CommandContract, parsed: CommandArgs, display: JobDisplay | None
) -> dict[str, Any]:
    """Upload each local file named by an input argument; the args with `asset://` references."""
    refs: dict[str, str] = {}
    params = {p.dest: p for p in contract.params}
    for dest, values in parsed.inputs.items():
        for value in values:
            if value in refs:
                continue
            with _local_file(value) as path:
                media_type = _media_type(path, params[dest])
                report = display.transfer(f"upload {path.name}") if display else None
                refs[value] = client.upload(path, media_type=media_type, progress=report).ref
    return replace_inputs(parsed.args, refs)


@contextmanager
def _local_file(value: str) -> Iterator[Path]:
    if value != STDIN:
        yield Path(value).expanduser()
        return
    # A command reading `-` reads stdin: send what this process's stdin holds.
    with tempfile.TemporaryDirectory(prefix="jobgate-stdin-") as folder:
        path = Path(folder) / "stdin"
        with path.open("wb") as fh:
            shutil.copyfileobj(sys.stdin.buffer, fh)
        yield path


def _media_type(path: Path, param: Param) -> str:
    guessed = guess_media_type(path)
    if guessed == "application/octet-stream" and param.media_types:
        return param.media_types[0]  # nothing tells: declare what the command reads
    return guessed


def cmd_run(client: Client, args: argparse.Namespace) -> int:
    contract, parsed = prepare(client, args, "run")
    display = JobDisplay(bar=_show_bar(args))
    with display.shown():
        job_args = upload_inputs(client, contract, parsed, display)
        started = time.monotonic()
        job = client.submit(
            args.stage, args.command, job_args, run_id=args.run_id or new_run_id(), timeout_s=args.timeout_s
        )
        display.job(job)
        try:
            if not job.terminal:
                job = client.wait(job.job_id, on_event=display.event, websocket=not args.no_websocket)
        except KeyboardInterrupt:
            display.stop()
            return _interrupted_run(client, job)
        result = client.result(job)
        files: list[Path] = []
        if result.outputs and not args.no_download:
            files = client.download_outputs(job.job_id, Path(args.out), progress=display.transfer("download"))
    return _report(args, display, result, files, time.monotonic() - started)


def _interrupted_run(client: Client, job: Job) -> int:
    # Ctrl-C stops a local command; here it stops the job.
    try:
        client.cancel(job.job_id)
        output.error(f"interrupted: cancelled job {job.job_id}")
    except (JobgateClientError, OSError) as exc:
        output.error(f"interrupted; job {job.job_id} may still run (jobgate cancel {job.job_id}): {exc}")
    return output.EXIT_INTERRUPTED


def _report(
    args: argparse.Namespace, display: JobDisplay, result: RunResult, files: list[Path], took: float
) -> int:
    job = result.job
    if args.json:
        display.stop()
        doc = output.to_jsonable(job)
        doc.update(stdout=result.stdout, stderr=result.stderr, files=[str(f) for f in files])
        output.print_json(doc)
        return output.job_exit_code(job)
    display.finish(result.stdout, result.stderr)
    output.report_failure(job)
    if job.succeeded and sys.stderr.isatty() and not args.no_progress:
        saved = ", ".join(str(f) for f in files) or "no files"
        output.note(f"✓ {job.stage} {job.command} succeeded in {took:.1f} s · {saved}")
    return output.job_exit_code(job)


def cmd_submit(client: Client, args: argparse.Namespace) -> int:
    contract, parsed = prepare(client, args, "submit")
    display = JobDisplay(bar=_show_bar(args))
    with display.shown():
        job_args = upload_inputs(client, contract, parsed, display)
    if getattr(args, "dry_run", False):
        return _dry_run(client, args, job_args)
    job = client.submit(
        args.stage, args.command, job_args, run_id=args.run_id, timeout_s=args.timeout_s, wait_s=args.wait
    )
    if args.json:
        output.print_json(job)
    else:
        sys.stdout.write(job.job_id + "\n")
    return output.EXIT_OK


def _dry_run(client: Client, args: argparse.Namespace, job_args: dict[str, Any]) -> int:
    """What a submit would run, checked as a submit is (a refusal exits as the submit's would)."""
    dry = client.dry_run(args.stage, args.command, job_args, run_id=args.run_id, timeout_s=args.timeout_s)
    if args.json:
        output.print_json(dry)
        return output.EXIT_OK
    sys.stdout.write(" ".join(shlex.quote(word) for word in dry.argv) + "\n")
    for item in dry.inputs:
        output.note(
            f"input {item.arg}: {item.ref} -> {item.path} ({item.media_type}, {output.size(item.size)})"
        )
    for warning in dry.warnings:
        output.note(f"warning: {warning}")
    return output.EXIT_OK


def cmd_watch(client: Client, args: argparse.Namespace) -> int:
    job = client.get(args.job_id)
    events = client.watch(args.job_id, after_seq=args.after_seq, websocket=not args.no_websocket)
    if args.json:
        return _watch_json(client, args.job_id, events)
    display = JobDisplay(bar=_show_bar(args))
    try:
        with display.shown():
            display.job(job)
            for event in events:
                display.event(event)
                if event.terminal:
                    break
    except KeyboardInterrupt:
        display.stop()
        output.error(f"stopped watching; job {args.job_id} goes on (`jobgate cancel {args.job_id}` stops it)")
        return output.EXIT_INTERRUPTED
    finally:
        events.close()
    result = client.result(args.job_id)
    display.finish(result.stdout, result.stderr)
    output.report_failure(result.job)
    return output.job_exit_code(result.job)


def _watch_json(client: Client, job_id: str, events: Generator[JobEvent, None, None]) -> int:
    """One JSON object per event, a line each (NDJSON), as they come."""
    try:
        for event in events:
            sys.stdout.write(event.model_dump_json(exclude_none=True) + "\n")
            sys.stdout.flush()
            if event.terminal:
                break
    except KeyboardInterrupt:
        output.error(f"stopped watching; job {job_id} goes on (`jobgate cancel {job_id}` stops it)")
        return output.EXIT_INTERRUPTED
    finally:
        events.close()
    return output.job_exit_code(client.get(job_id))
