"""The ``jobgate`` command: ``jobgate dev`` runs the whole system locally; more subcommands can join."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from . import tools
from .components import Component
from .containers import ContainerTasks
from .gateway_http import HttpGatewayComponent
from .gateway_ws import WebSocketGatewayComponent
from .logs import setup_logging
from .poller import SqsEventSources
from .schedules import ScheduleSources
from .stack import DevOptions, DevStack, serve
from .strict import KINDS, FaultSettings


def _env_port(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    if not value.isdigit():
        raise SystemExit(f"jobgate: {name}={value!r} is not a port number")
    return int(value)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text}")
    return value


def _rate(text: str) -> float:
    value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1 (or a percentage), got {text}")
    return value


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(
            f"unknown fault kinds {', '.join(unknown)}; choose from {', '.join(KINDS)}"
        )
    return kinds


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobgate", description="jobgate developer tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dev = commands.add_parser(
        "dev",
        help="run the whole system locally (moto, the functions, the gateways)",
        description="Run jobgate on this machine: moto provisions template.yaml's resources, and the "
        "handlers run in local Lambda sandboxes behind a local API Gateway and SQS pollers. "
        "No AWS account, no Docker.",
    )
    dev.add_argument(
        "--template", type=Path, default=Path("template.yaml"), help="the SAM template (template.yaml)"
    )
    dev.add_argument("--host", default="127.0.0.1", help="address the gateways listen on (127.0.0.1)")
    dev.add_argument(
        "--port",
        type=int,
        default=_env_port("JOBGATE_HTTP_PORT", 8000),
        help="HTTP API port (8000; JOBGATE_HTTP_PORT)",
    )
    dev.add_argument(
        "--ws-port",
        type=int,
        default=_env_port("JOBGATE_WS_PORT", 8001),
        help="WebSocket API port (8001; JOBGATE_WS_PORT): clients and the @connections endpoint",
    )
    dev.add_argument("--moto-port", type=int, default=0, help="moto's port (0: any free port)")
    dev.add_argument(
        "--workers", type=_positive, default=2, help="sandboxes (and pollers) per SQS-fed function (2)"
    )
    dev.add_argument("--api-concurrency", type=_positive, default=4, help="sandboxes behind the HTTP API (4)")
    dev.add_argument(
        "--ws-concurrency", type=_positive, default=2, help="sandboxes behind the WebSocket API (2)"
    )
    dev.add_argument(
        "--param",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a template parameter (repeatable)",
    )
    dev.add_argument(
        "--env",
        type=_key_value,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set an environment variable of every function and container task, over the template's "
        "(repeatable): JOBGATE_LEASE_S=5 makes a dead worker's job free for the sweeper in seconds",
    )
    dev.add_argument(
        "--schedules-every",
        type=_positive,
        metavar="SECONDS",
        help="run the template's schedules (the sweeper's) every SECONDS instead of at their rate",
    )
    dev.add_argument("--worker-timeout", type=int, metavar="SECONDS", help="sets WorkerTimeoutSeconds")
    dev.add_argument(
        "--queue-visibility-timeout", type=int, metavar="SECONDS", help="sets QueueVisibilityTimeoutSeconds"
    )
    dev.add_argument(
        "--state-dir",
        type=Path,
        help="where the stack keeps its dev API key and its saved data across restarts, and writes "
        "dev.json while it runs (.jobgate; the folder of --state-file when only that is given)",
    )
    dev.add_argument(
        "--state-file",
        type=Path,
        help="where the URLs, API key, local AWS endpoint and credentials are written for tools while the "
        "stack runs (STATE_DIR/dev.json)",
    )
    dev.add_argument(
        "--fresh",
        action="store_true",
        help="start empty: forget the jobs, assets and files saved by the last run (the dev API key stays)",
    )
    faults = dev.add_argument_group(
        "fault injection",
        "make a fraction of the functions' AWS calls fail as AWS calls fail (throttling, 500s, connections "
        "reset before or after the call is applied, answers held past the client's read timeout, slow S3 "
        "transfers); also settable at run time: POST <AWS endpoint>/_jobgate/faults",
    )
    faults.add_argument(
        "--faults", type=_rate, default=0.0, metavar="RATE", help="fraction of calls that fail (0.05 or 5%%)"
    )
    faults.add_argument(
        "--faults-kinds", type=_kinds, default=KINDS, metavar="K,K", help=f"which faults ({','.join(KINDS)})"
    )
    faults.add_argument(
        "--faults-seed", type=int, metavar="N", help="seed the choice of calls, for reproducible runs"
    )
    faults.add_argument(
        "--faults-slow-s3",
        type=_positive,
        default=256 * 1024,
        metavar="BYTES",
        help="bytes/s of a slowed S3 transfer",
    )
    faults.add_argument(
        "--faults-stall",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="longest an answer is held (timeout)",
    )
    dev.add_argument("--log-file", type=Path, help="write logs and function output there instead of stderr")
    dev.add_argument("-v", "--verbose", action="store_true", help="log every invoke")
    dev.set_defaults(run=run_dev)
    dev_tools = dev.add_subparsers(dest="dev_tool", metavar="[env]")
    env = dev_tools.add_parser(
        "env",
        help='print `export` lines for the running stack (eval "$(jobgate dev env)")',
        description="Print the running stack's API URL and key, local AWS endpoint, region and admin "
        'credentials and table name as `export` lines for a shell: eval "$(jobgate dev env)".',
    )
    env.set_defaults(run=lambda _args: tools.main_tool(tools.print_environment, sys.stdout))
    _tool_parsers(commands)
    return parser


def _tool_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    invoke = commands.add_parser(
        "invoke",
        help="run one function's handler on one event against the running `jobgate dev`",
        description="Run FUNCTION's handler on the event in a sandbox of its own, with the environment "
        "and role credentials the running stack gives it (.jobgate/env-vars.json): what "
        "`sam local invoke FUNCTION -e EVENT` does in Docker, without Docker. Its answer goes to stdout.",
    )
    invoke.add_argument("function", metavar="FUNCTION", help="logical id (WorkerFunction) or short (Worker)")
    invoke.add_argument("-e", "--event", type=Path, required=True, metavar="EVENT", help="the event (JSON)")
    invoke.set_defaults(
        run=lambda args: tools.main_tool(tools.invoke, args.function, args.event, sys.stdout, sys.stderr)
    )
    events = commands.add_parser("events", help="sample events for `jobgate invoke` and `sam local invoke`")
    kinds = events.add_subparsers(dest="events_action", required=True, metavar="new")
    new = kinds.add_parser(
        "new",
        help="write a sample event naming the running stack's newest job and asset",
        description="Copy events/NAME.json with the running stack's newest job and asset, its dev key, "
        "bucket and queues in place of the sample's (to events/local/NAME.json, or -o FILE; -o - prints it).",
    )
    new.add_argument("name", metavar="NAME", help="a sample of events/, such as api-get-job")
    new.add_argument("-o", "--output", type=Path, help="where to write it (- for stdout)")
    new.set_defaults(run=lambda args: tools.main_tool(tools.new_event, args.name, args.output, sys.stdout))


def dev_components(args: argparse.Namespace) -> list[Component]:
    """The parts `jobgate dev` runs on top of moto and the sandboxes."""
    return [
        HttpGatewayComponent(args.host, args.port, concurrency=args.api_concurrency),
        WebSocketGatewayComponent(args.host, args.ws_port, concurrency=args.ws_concurrency),
        SqsEventSources(args.workers),
        ScheduleSources(every_s=args.schedules_every),
        ContainerTasks(dict(args.env)),
    ]


def dev_parameters(args: argparse.Namespace) -> dict[str, str]:
    parameters = dict(args.param)
    if args.worker_timeout is not None:
        parameters.setdefault("WorkerTimeoutSeconds", str(args.worker_timeout))
    if args.queue_visibility_timeout is not None:
        parameters.setdefault("QueueVisibilityTimeoutSeconds", str(args.queue_visibility_timeout))
    return parameters


def fault_settings(args: argparse.Namespace) -> FaultSettings | None:
    if not args.faults:
        return None
    return FaultSettings(
        rate=args.faults,
        kinds=args.faults_kinds,
        seed=args.faults_seed,
        slow_bytes_per_s=args.faults_slow_s3,
        stall_s=args.faults_stall,
    )


def dev_api_key(state_dir: Path) -> str:
    """JOBGATE_DEV_API_KEY, else the key made for this checkout the first time (STATE_DIR/api-key)."""
    given = os.environ.get("JOBGATE_DEV_API_KEY")
    if given:
        return given
    path = state_dir / "api-key"
    try:
        kept = path.read_text().strip()
    except FileNotFoundError:
        kept = ""
    if kept:
        return kept
    key = secrets.token_urlsafe(24)
    state_dir.mkdir(parents=True, exist_ok=True)
    pending = path.with_suffix(".tmp")
    pending.write_text(key + "\n")
    pending.chmod(0o600)
    pending.replace(path)
    return key


def run_dev(args: argparse.Namespace) -> int:
    if not args.template.is_file():
        sys.stderr.write(
            f"jobgate dev: no template at {args.template}; run from the repository root or pass --template\n"
        )
        return 1
    state_dir: Path = args.state_dir or (args.state_file.parent if args.state_file else Path(".jobgate"))
    log_stream = args.log_file.open("a", buffering=1) if args.log_file else None
    try:
        setup_logging(log_stream, verbose=args.verbose)
        options = DevOptions(
            template=args.template,
            host=args.host,
            moto_port=args.moto_port,
            parameters=dev_parameters(args),
            api_key=dev_api_key(state_dir),
            state_file=args.state_file or state_dir / "dev.json",
            state_dir=state_dir,
            fresh=args.fresh,
            faults=fault_settings(args),
            environment=dict(args.env),
        )
        return asyncio.run(serve(DevStack(options, dev_components(args))))
    finally:
        if log_stream is not None:
            log_stream.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
