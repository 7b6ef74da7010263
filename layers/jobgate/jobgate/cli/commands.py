"""The `jobgate` sub-commands that talk to an API, their parser, and how failures are reported."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from jobgate import __version__
from jobgate.cli import maps, output, runner
from jobgate.cli.zyra_args import HelpShown, UsageError
from jobgate.client import Client
from jobgate.client._core import safe_join
from jobgate.client.config import ConfigError
from jobgate.client.errors import (
    BadRequest,
    JobgateAPIError,
    JobgateClientError,
    ValidationError,
)
from jobgate.client.models import CommandContract

Handler = Callable[[Client, argparse.Namespace], int]

EPILOG = """\
Where the API is: --url/--api-key, else JOBGATE_URL/JOBGATE_API_KEY, else a profile of
~/.config/jobgate/config.toml (--profile NAME), else the `jobgate dev` running in this folder.

examples:
  jobgate run visualize heatmap --input field.npy --output map.png --no-coastline
  jobgate submit visualize heatmap --input field.npy --output map.png   # prints the job id
  jobgate watch JOB_ID            jobgate logs JOB_ID        jobgate download JOB_ID --out results
  jobgate status --run-id RUN     jobgate cat JOB_ID map.png > map.png     jobgate events JOB_ID
  jobgate submit --dry-run visualize heatmap ...          jobgate retry JOB_ID
  jobgate pipeline submit pipeline.yaml --wait            jobgate pipeline status PIPELINE_ID
  jobgate map --over chunk --range 0 8 --merge-concat csv synth generate --schema s.json --rows 1250 ...
  jobgate maps status|wait|pause|resume|cancel|download MAP_ID     jobgate maps retry MAP_ID CHUNK
  jobgate list --status failed    jobgate commands visualize heatmap
  jobgate smoke --url https://... --api-key ...
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("jobgate").strip()
        raise UsageError(f"{where}: {message}" if where else message)


def _connection_options(*, top: bool) -> _Parser:
    """Options every sub-command takes, before or after its name.

    The top-level copy holds the defaults; the sub-commands' copy defaults to SUPPRESS so that it
    never overwrites what was given before the sub-command's name.
    """
    common = _Parser(add_help=False)
    unset: dict[str, Any] = {"default": None} if top else {"default": argparse.SUPPRESS}
    common.add_argument("--url", **unset, help="the API's base URL (JOBGATE_URL)")
    common.add_argument("--api-key", **unset, help="the API key (JOBGATE_API_KEY)")
    common.add_argument("--profile", **unset, help="a profile of the config file")
    common.add_argument("--ws-url", **unset, help="the WebSocket URL, when the job's link is not usable")
    flag: dict[str, Any] = {"default": False} if top else {"default": argparse.SUPPRESS}
    common.add_argument("--json", action="store_true", **flag, help="print JSON")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _connection_options(top=False)
    parser = _Parser(
        prog="jobgate",
        description="Run data-pipeline commands (Zyra) as jobs on a jobgate API, like local commands.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_connection_options(top=True)],
    )
    parser.add_argument("--version", action="version", version=f"jobgate {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True, parser_class=_Parser)

    def add(name: str, handler: Handler | None, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        cmd.set_defaults(handler=handler)
        return cmd

    _job_parsers(add)
    _pipeline_parsers(add, common)
    maps.add_parsers(add, common)
    _file_parsers(add)

    commands = add("commands", _commands, "list stages and commands, or show one command's arguments")
    commands.add_argument("stage", nargs="?")
    commands.add_argument("command", nargs="?")

    from jobgate.cli import smoke

    check = add("smoke", None, "check a deployment end to end as a frontend would")
    smoke.add_arguments(check)
    check.set_defaults(handler=None, smoke=smoke.cmd_smoke)

    # Handled before this parser (jobgate.cli.main); listed so that --help shows them.
    sub.add_parser("dev", help="run the whole system on this machine (jobgate dev --help)", add_help=False)
    sub.add_parser("keys", help="create, list and revoke API keys (jobgate keys --help)", add_help=False)
    sub.add_parser(
        "admin", help="a stack's stuck jobs and dead-letter queues (jobgate admin --help)", add_help=False
    )
    sub.add_parser("mcp", help="serve the API's commands as MCP tools (jobgate mcp --help)", add_help=False)
    sub.add_parser(
        "invoke", help="run a function's handler on an event against `jobgate dev`", add_help=False
    )
    return parser


def _job_parsers(add: Callable[[str, Handler | None, str], argparse.ArgumentParser]) -> None:
    for verb, handler, text in (
        ("run", runner.cmd_run, "run a command as a job: upload inputs, follow it, download outputs"),
        ("submit", runner.cmd_submit, "submit a command as a job and print its id"),
    ):
        cmd = add(verb, handler, text)
        cmd.usage = f"jobgate {verb} [options] STAGE COMMAND [command arguments...]"
        cmd.add_argument("stage", metavar="STAGE")
        cmd.add_argument("command", metavar="COMMAND")
        cmd.add_argument("words", nargs=argparse.REMAINDER, metavar="...", help="the command's own arguments")
        cmd.add_argument("--run-id", help="idempotency key: the same run_id answers the same job")
        cmd.add_argument("--timeout-s", type=int, help="kill the job after this many seconds")
        if verb == "run":
            cmd.add_argument("--out", default=".", help="folder the outputs are downloaded into (.)")
            cmd.add_argument("--no-download", action="store_true", help="leave the outputs in the service")
            cmd.add_argument("--no-progress", action="store_true", help="no progress bar")
            cmd.add_argument("--no-websocket", action="store_true", help="poll instead of the WebSocket")
        else:
            cmd.add_argument(
                "--wait", type=float, metavar="S", help="hold the answer up to S seconds (<= 25)"
            )
            cmd.add_argument(
                "--dry-run",
                action="store_true",
                help="check the request as a submit would and print what would run; nothing is queued",
            )

    status = add("status", _status, "show a job, or (--run-id) the light status of a run")
    status.add_argument("job_id", metavar="JOB_ID", nargs="?")
    status.add_argument("--run-id", help="the job submitted with this run_id (`run_<job_id>` when none was)")

    cat = add("cat", _cat, "write one output of an ended job to stdout")
    cat.add_argument("job_id", metavar="JOB_ID")
    cat.add_argument("name", metavar="NAME", help="the output's relative path, as `jobgate status` lists it")

    events = add("events", _events, "print a job's numbered events as JSON lines (HTTP long poll)")
    events.add_argument("job_id", metavar="JOB_ID")
    events.add_argument("--after-seq", type=int, default=0, help="events after this one (0: all)")
    events.add_argument(
        "--wait", type=float, default=20.0, metavar="S", help="wait up to S s for events (20)"
    )
    events.add_argument("--once", action="store_true", help="one page, not until the job ends")

    retry = add("retry", _retry, "submit an ended job's request again; print the new job's id")
    retry.add_argument("job_id", metavar="JOB_ID")

    listing = add("list", _list, "list jobs, newest first")
    listing.add_argument("--status", help="only jobs in this status (queued, running, succeeded, failed...)")
    listing.add_argument("--limit", type=int, default=20, help="at most this many jobs (20)")
    listing.add_argument("--all", action="store_true", help="every job, page after page")

    logs = add("logs", _logs, "print a job's logs: stdout to stdout, stderr to stderr (or --stream one)")
    logs.add_argument("job_id", metavar="JOB_ID")
    logs.add_argument(
        "--stream", choices=["stdout", "stderr", "both"], default="both", help="one log, printed on stdout"
    )

    watch = add("watch", runner.cmd_watch, "follow a job until it ends; exit with its exit status")
    watch.add_argument("job_id", metavar="JOB_ID")
    watch.add_argument("--after-seq", type=int, default=0, help="events after this one (0: all)")
    watch.add_argument("--no-progress", action="store_true", help="no progress bar")
    watch.add_argument("--no-websocket", action="store_true", help="poll instead of the WebSocket")

    cancel = add("cancel", _cancel, "cancel a queued or running job")
    cancel.add_argument("job_id", metavar="JOB_ID")
    cancel.add_argument("--wait", action="store_true", help="wait until the job has stopped")


def _pipeline_parsers(
    add: Callable[[str, Handler | None, str], argparse.ArgumentParser], common: _Parser
) -> None:
    pipeline = add("pipeline", None, "pipelines: steps that read each other's outputs, each step a job")
    verbs = pipeline.add_subparsers(dest="pipeline_verb", metavar="VERB", required=True, parser_class=_Parser)
    submit = verbs.add_parser(
        "submit",
        parents=[common],
        help="submit a pipeline file (JSON steps, or zyra's own YAML with stages:); print its id",
    )
    submit.add_argument("file", type=Path, metavar="FILE")
    submit.add_argument(
        "--run-id", help="idempotency key (JSON steps only): the same run_id, the same pipeline"
    )
    submit.add_argument("--wait", action="store_true", help="wait until every step has ended")
    submit.set_defaults(handler=_pipeline_submit)
    for verb, handler, text in (
        ("status", _pipeline_status, "show a pipeline and its steps"),
        ("wait", _pipeline_wait, "wait until every step has ended; exit 0 only if all succeeded"),
        ("cancel", _pipeline_cancel, "cancel every step that has not ended"),
    ):
        cmd = verbs.add_parser(verb, parents=[common], help=text, description=text)
        cmd.add_argument("pipeline_id", metavar="PIPELINE_ID")
        cmd.set_defaults(handler=handler)
    listing = verbs.add_parser("list", parents=[common], help="list pipelines, newest first")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(handler=_pipeline_list)


def _file_parsers(add: Callable[[str, Handler | None, str], argparse.ArgumentParser]) -> None:
    download = add("download", _download, "download a job's outputs")
    download.add_argument("job_id", metavar="JOB_ID")
    download.add_argument("--name", help="only this output (its relative path)")
    download.add_argument("--out", default=".", help="folder to write into (.)")

    upload = add("upload", _upload, "upload files; print their asset:// references, one a line")
    upload.add_argument("files", nargs="+", type=Path, metavar="FILE")
    upload.add_argument("--media-type", help="declare this media type (default: from the content or name)")
    upload.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY:VALUE",
        help="label the assets (repeat; up to 10)",
    )

    assets = add("assets", _assets, "list uploaded files, newest first")
    assets.add_argument(
        "--label", action="append", default=[], metavar="KEY:VALUE", help="only with this label"
    )
    assets.add_argument("--status", help="PENDING, AVAILABLE or FAILED")
    assets.add_argument("--limit", type=int, default=20, help="at most this many (20)")


def run_cli(argv: Sequence[str]) -> int:
    try:
        args = build_parser().parse_args(list(argv))
    except UsageError as exc:
        output.error(str(exc))
        return output.EXIT_USAGE
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else output.EXIT_OK
    if getattr(args, "smoke", None) is not None:
        return int(args.smoke(args))
    try:
        with Client(args.url, args.api_key, profile=args.profile, websocket_url=args.ws_url) as client:
            handler: Handler = args.handler
            return handler(client, args)
    except HelpShown:
        return output.EXIT_OK
    except KeyboardInterrupt:
        output.error("interrupted")
        return output.EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as a command killed by SIGPIPE does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except (UsageError, ConfigError) as exc:
        output.error(str(exc))
        return output.EXIT_USAGE
    except (ValidationError, BadRequest) as exc:
        output.error(exc.message)
        return output.EXIT_USAGE
    except JobgateAPIError as exc:
        output.error(exc.message)
        return output.EXIT_FAILED
    except (JobgateClientError, OSError) as exc:
        output.error(str(exc))
        return output.EXIT_FAILED


def _status(client: Client, args: argparse.Namespace) -> int:
    if args.run_id is not None:
        light = client.run_status(args.run_id)
        if args.json:
            output.print_json(light)
        else:
            output.table(["", ""], output.run_lines(light))
        return output.EXIT_OK
    if args.job_id is None:
        raise UsageError("status: name a JOB_ID, or a run with --run-id")
    job = client.get(args.job_id)
    if args.json:
        output.print_json(job)
    else:
        output.table(["", ""], output.job_lines(job))
    return output.EXIT_OK


def _cat(client: Client, args: argparse.Namespace) -> int:
    data = client.read_output(args.job_id, args.name)
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return output.EXIT_OK


def _events(client: Client, args: argparse.Namespace) -> int:
    """One JSON line per event (NDJSON), page after page, until the job's last event."""
    after = args.after_seq
    while True:
        page = client.events(args.job_id, after_seq=after, wait_s=args.wait)
        for event in page.events:
            sys.stdout.write(event.model_dump_json(exclude_none=True, exclude={"source"}) + "\n")
        sys.stdout.flush()
        after = page.next_after_seq
        if page.done or args.once:
            return output.EXIT_OK


def _retry(client: Client, args: argparse.Namespace) -> int:
    job = client.retry(args.job_id)
    if args.json:
        output.print_json(job)
    else:
        sys.stdout.write(job.job_id + "\n")
    return output.EXIT_OK


def _pipeline_submit(client: Client, args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise UsageError(f"no such file: {args.file}")
    text = args.file.read_text()
    if args.file.suffix.lower() == ".json":
        import json

        doc = json.loads(text)
        steps = doc["steps"] if isinstance(doc, dict) else doc
        pipeline = client.submit_pipeline(
            steps, run_id=args.run_id or (doc.get("run_id") if isinstance(doc, dict) else None)
        )
    else:
        pipeline = client.submit_pipeline(text)
    if args.wait:
        pipeline = client.wait_pipeline(pipeline.pipeline_id)
    if args.json:
        output.print_json(pipeline)
    elif args.wait:
        output.table(["STEP", "JOB", "STATUS"], output.pipeline_rows(pipeline))
    else:
        sys.stdout.write(pipeline.pipeline_id + "\n")
    return output.pipeline_exit_code(pipeline) if args.wait else output.EXIT_OK


def _pipeline_status(client: Client, args: argparse.Namespace) -> int:
    pipeline = client.get_pipeline(args.pipeline_id)
    if args.json:
        output.print_json(pipeline)
    else:
        sys.stdout.write(f"pipeline {pipeline.pipeline_id}: {pipeline.status} ({pipeline.progress:.0%})\n")
        output.table(["STEP", "JOB", "STATUS"], output.pipeline_rows(pipeline))
    return output.EXIT_OK


def _pipeline_wait(client: Client, args: argparse.Namespace) -> int:
    pipeline = client.wait_pipeline(args.pipeline_id)
    if args.json:
        output.print_json(pipeline)
    else:
        output.table(["STEP", "JOB", "STATUS"], output.pipeline_rows(pipeline))
    return output.pipeline_exit_code(pipeline)


def _pipeline_cancel(client: Client, args: argparse.Namespace) -> int:
    pipeline = client.cancel_pipeline(args.pipeline_id)
    if args.json:
        output.print_json(pipeline)
    else:
        output.table(["STEP", "JOB", "STATUS"], output.pipeline_rows(pipeline))
    return output.EXIT_OK


def _pipeline_list(client: Client, args: argparse.Namespace) -> int:
    pipelines = list(client.list_pipelines(limit=args.limit))
    if args.json:
        output.print_json(pipelines)
        return output.EXIT_OK
    rows = [(p.pipeline_id, p.status, str(len(p.steps)), output.when(p.created_at)) for p in pipelines]
    output.table(["PIPELINE", "STATUS", "STEPS", "CREATED"], rows)
    return output.EXIT_OK


def _labels(texts: list[str]) -> dict[str, str]:
    labels = {}
    for text in texts:
        key, sep, value = text.partition(":")
        if not sep or not key:
            raise UsageError(f"--label {text!r}: expected KEY:VALUE")
        labels[key.strip()] = value.strip()
    return labels


def _assets(client: Client, args: argparse.Namespace) -> int:
    assets = list(client.list_assets(args.status, limit=args.limit, label=_labels(args.label)))
    if args.json:
        output.print_json(assets)
        return output.EXIT_OK
    rows = [
        (a.ref, a.status, a.filename, output.size(a.size), " ".join(f"{k}:{v}" for k, v in a.labels.items()))
        for a in assets
    ]
    output.table(["ASSET", "STATUS", "FILE", "SIZE", "LABELS"], rows)
    return output.EXIT_OK


def _list(client: Client, args: argparse.Namespace) -> int:
    jobs = list(client.list(args.status, limit=None if args.all else args.limit))
    if args.json:
        output.print_json(jobs)
        return output.EXIT_OK
    rows = [
        (j.job_id, output.status_text(j), f"{j.stage} {j.command}", output.when(j.created_at)) for j in jobs
    ]
    output.table(["JOB", "STATUS", "COMMAND", "CREATED"], rows)
    return output.EXIT_OK


def _logs(client: Client, args: argparse.Namespace) -> int:
    streams = ["stdout", "stderr"] if args.stream == "both" else [args.stream]
    texts = {stream: client.logs(args.job_id, stream) for stream in streams}
    if args.json:
        output.print_json(texts)
        return output.EXIT_OK
    for stream, text in texts.items():
        # Both: each to its own stream, as the command wrote them. One asked for: to stdout, to pipe on.
        target = sys.stderr if stream == "stderr" and len(texts) == 2 else sys.stdout
        target.write(text)
        target.flush()
    return output.EXIT_OK


def _cancel(client: Client, args: argparse.Namespace) -> int:
    job = client.cancel(args.job_id)
    if args.wait and not job.terminal:
        job = client.wait(job.job_id)
    if args.json:
        output.print_json(job)
    elif job.terminal:
        sys.stdout.write(f"{job.job_id} {output.status_text(job)}\n")
    else:
        sys.stdout.write(f"{job.job_id} cancel requested; its worker stops it\n")
    return output.EXIT_OK


def _download(client: Client, args: argparse.Namespace) -> int:
    job = client.get(args.job_id)
    if not job.terminal:
        raise JobgateClientError(
            f"job {job.job_id} is {output.status_text(job)}: its outputs come when it ends "
            f"(`jobgate watch {job.job_id}` waits for it)"
        )
    out = Path(args.out)
    if args.name:
        # The output keeps its relative path (frames/0001.png), as when downloading them all.
        files = [client.download(args.job_id, safe_join(out, args.name), name=args.name)]
    else:
        files = client.download_outputs(args.job_id, out)
    if not files:
        raise JobgateClientError(f"job {job.job_id} ({output.status_text(job)}) wrote no files")
    if args.json:
        output.print_json({"files": [str(f) for f in files]})
    else:
        sys.stdout.writelines(f"{f}\n" for f in files)
    return output.EXIT_OK


def _upload(client: Client, args: argparse.Namespace) -> int:
    assets = []
    for path in args.files:
        if not path.is_file():
            raise UsageError(f"no such file: {path}")
        assets.append(client.upload(path, media_type=args.media_type, labels=_labels(args.label)))
    if args.json:
        output.print_json(assets)
        return output.EXIT_OK
    # Only the references on stdout, one a line in the order given: `--input $(jobgate upload f.npy)`.
    sys.stdout.writelines(f"{a.ref}\n" for a in assets)
    if sys.stderr.isatty():
        for asset, path in zip(assets, args.files, strict=True):
            output.note(f"{path} → {asset.ref} ({asset.media_type})")
    return output.EXIT_OK


def _commands(client: Client, args: argparse.Namespace) -> int:
    if args.stage and args.command:
        contract = client.command(args.stage, args.command)
        if args.json:
            output.print_json(contract)
        else:
            _print_contract(contract)
        return output.EXIT_OK
    listed = client.commands()
    items = [c for c in listed.items if args.stage in (None, c.stage)]
    if args.stage and not items:
        raise UsageError(f"no stage '{args.stage}' (stages: {', '.join(sorted(listed.stages))})")
    if args.json:
        output.print_json(listed if args.stage is None else items)
        return output.EXIT_OK
    output.table(
        ["STAGE", "COMMAND", "SUMMARY"], [(c.stage, c.command, _first_line(c.summary)) for c in items]
    )
    return output.EXIT_OK


def _print_contract(contract: CommandContract) -> None:
    sys.stdout.write(f"{contract.stage} {contract.command}: {_first_line(contract.summary)}\n\n")
    rows = []
    for p in contract.params:
        name = p.dest.upper() if p.kind == "positional" else ", ".join(p.flags)
        kind = "flag" if p.kind == "flag" else p.type + ("..." if p.multiple else "")
        role = {"input": "file, uploaded", "output": "output", "output_dir": "output folder"}.get(p.role, "")
        default = "" if p.default in (None, False) or p.kind == "flag" else str(p.default)
        rows.append((name, kind, "yes" if p.required else "", role, default, _first_line(p.help)))
    output.table(["ARGUMENT", "TYPE", "REQUIRED", "FILE", "DEFAULT", "HELP"], rows)


def _first_line(text: str) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""
