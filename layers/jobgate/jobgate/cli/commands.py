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
from jobgate.cli import output, runner
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

    status = add("status", _status, "show a job")
    status.add_argument("job_id", metavar="JOB_ID")

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


def _file_parsers(add: Callable[[str, Handler | None, str], argparse.ArgumentParser]) -> None:
    download = add("download", _download, "download a job's outputs")
    download.add_argument("job_id", metavar="JOB_ID")
    download.add_argument("--name", help="only this output (its relative path)")
    download.add_argument("--out", default=".", help="folder to write into (.)")

    upload = add("upload", _upload, "upload files; print their asset:// references, one a line")
    upload.add_argument("files", nargs="+", type=Path, metavar="FILE")
    upload.add_argument("--media-type", help="declare this media type (default: from the content or name)")


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
    job = client.get(args.job_id)
    if args.json:
        output.print_json(job)
    else:
        output.table(["", ""], output.job_lines(job))
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
        assets.append(client.upload(path, media_type=args.media_type))
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
