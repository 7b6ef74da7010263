"""Admin commands: API keys (`keys create|list|revoke --tenant T`) and a stack's operations (`admin stuck`,
`admin redrive`). They find the stack as an operator has it: `--stack NAME` (its CloudFormation outputs,
with `--profile`/`--region` or the usual AWS environment), JOBGATE_TABLE_NAME, or else the `jobgate dev`
of this checkout, with no setup."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TextIO

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobgate.adapters import aws
from jobgate.adapters.dynamo import JobStore
from jobgate.adapters.keys import ApiKeyRecord, KeyStore
from jobgate.adapters.queue import QueueMover
from jobgate.adapters.stacks import StackOutputs
from jobgate.devstate import find_state_file, read_state
from jobgate.errors import JobgateError, NotFound
from jobgate.models import utcnow
from jobgate.services.keys import KeyService
from jobgate.services.operations import Operations

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class AdminSettings(BaseSettings):
    """What the key commands need: the table (JOBGATE_TABLE_NAME, as the functions have it)."""

    model_config = SettingsConfigDict(env_prefix="JOBGATE_", extra="ignore", frozen=True)

    table_name: str = Field(min_length=1)
    job_ttl_days: int = Field(default=30, ge=1)


def add_keys_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `keys create|list|revoke` to a CLI's sub-commands; run the parsed namespace with `run()`."""
    keys = subparsers.add_parser("keys", help="create, list and revoke per-tenant API keys")
    keys.add_argument(
        "--table",
        help="the DynamoDB table (default: --stack's, JOBGATE_TABLE_NAME, else this checkout's `make dev`)",
    )
    _add_stack_options(keys)
    actions = keys.add_subparsers(dest="keys_action", required=True)

    create = actions.add_parser("create", help="create a key and print it (the only time it is shown)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="", help="what the key is for, shown by `keys list`")
    expiry = create.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in-days", type=float, help="the key stops working after this many days")
    expiry.add_argument("--expires-at", type=_aware_datetime, help="ISO 8601 time the key stops working")
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(keys_func=_create)

    listing = actions.add_parser("list", help="list a tenant's keys (never the keys themselves)")
    listing.add_argument("--tenant", required=True)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(keys_func=_list)

    revoke = actions.add_parser("revoke", help="revoke a key: its next request is a 401")
    revoke.add_argument("--tenant", required=True)
    revoke.add_argument("key_id", help="the key's id, as `keys list` shows it")
    revoke.add_argument("--json", action="store_true", help="print JSON")
    revoke.set_defaults(keys_func=_revoke)


def add_admin_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `admin stuck|redrive` to a CLI's sub-commands; run the parsed namespace with `run()`."""
    admin = subparsers.add_parser("admin", help="a stack's stuck jobs and dead-letter queues")
    _add_stack_options(admin)
    actions = admin.add_subparsers(dest="admin_action", required=True)

    stuck = actions.add_parser("stuck", help="unfinished jobs past their lease, or queued too long")
    stuck.add_argument(
        "--queued-for", type=float, default=900, metavar="S", help="list jobs queued longer than this (s)"
    )
    stuck.add_argument("--json", action="store_true", help="print JSON")
    stuck.set_defaults(admin_func=_stuck)

    redrive = actions.add_parser(
        "redrive", help="move a dead-letter queue's messages back to the queue its consumer reads"
    )
    redrive.add_argument(
        "--queue",
        choices=sorted(REDRIVES),
        default="jobs",
        help="jobs: JobsDeadLetterQueue to JobsQueue; uploads: UploadEventsDeadLetterQueue to its queue",
    )
    redrive.add_argument("--max", type=int, default=1000, help="move at most this many messages")
    redrive.add_argument("--dry-run", action="store_true", help="only say how many messages wait")
    redrive.add_argument("--json", action="store_true", help="print JSON")
    redrive.set_defaults(admin_func=_redrive)


def _add_stack_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", help="the deployed stack's name (its resources from its outputs)")
    parser.add_argument("--profile", help="the AWS profile to use (else the usual AWS environment)")
    parser.add_argument("--region", help="the stack's region (else the profile's or the environment's)")


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`jobgate keys|admin ...` on their own: parse, run, answer the exit code."""
    parser = argparse.ArgumentParser(prog="jobgate", description="jobgate administration")
    commands = parser.add_subparsers(dest="command", required=True)
    add_keys_parser(commands)
    add_admin_parser(commands)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors and --help: argparse has printed why
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return run(args, out=out or sys.stdout, err=err or sys.stderr)


def run(args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    """Run a parsed `keys` or `admin` command; what a console script calls after its own parser."""
    try:
        _use_profile(args)
        if getattr(args, "admin_func", None) is not None:
            resources = _stack_resources(args.stack, err)
            admin: Callable[[Operations, dict[str, str], argparse.Namespace, TextIO], None] = args.admin_func
            admin(_operations(resources), resources, args, out)
            return EXIT_OK
        service = _service(args.table, args.stack, err)
        func: Callable[[KeyService, argparse.Namespace, TextIO], None] = args.keys_func
        func(service, args, out)
    except ValidationError as exc:
        err.write(f"jobgate: settings: {exc}\n")
        return EXIT_USAGE
    except JobgateError as exc:
        err.write(f"jobgate: {exc.detail}\n")
        return EXIT_USAGE if exc.status in (404, 422) else EXIT_FAILED
    return EXIT_OK


# What `admin redrive --queue` moves: from a dead-letter queue to the queue its consumer reads.
REDRIVES = {
    "jobs": ("JobsDeadLetterQueue", "JobsQueue"),
    "uploads": ("UploadEventsDeadLetterQueue", "UploadEventsQueue"),
}
# The stack outputs that name each resource (template.yaml, Outputs).
_OUTPUTS = {
    "JobsTable": "JobsTableName",
    "JobsQueue": "JobsQueueUrl",
    "JobsDeadLetterQueue": "JobsDeadLetterQueueUrl",
    "UploadEventsQueue": "UploadEventsQueueUrl",
    "UploadEventsDeadLetterQueue": "UploadEventsDeadLetterQueueUrl",
}


def _use_profile(args: argparse.Namespace) -> None:
    # Read by boto3 when the clients are made, which is after this.
    if getattr(args, "profile", None):
        os.environ["AWS_PROFILE"] = args.profile
    if getattr(args, "region", None):
        os.environ["AWS_DEFAULT_REGION"] = args.region


def _service(table: str | None, stack: str | None, err: TextIO) -> KeyService:
    if not table and stack:
        table = _stack_resources(stack, err).get("JobsTable")
    if not table and not os.environ.get("JOBGATE_TABLE_NAME"):
        table = _local_stack_resources(err).get("JobsTable")
    settings = AdminSettings(table_name=table) if table else AdminSettings()
    store = KeyStore(aws.dynamodb(), settings.table_name, timedelta(days=settings.job_ttl_days))
    return KeyService(store)


def _stack_resources(stack: str | None, err: TextIO) -> dict[str, str]:
    """Logical id -> name or URL: a deployed stack's (its outputs), else this checkout's `jobgate dev`."""
    if stack:
        outputs = StackOutputs(aws.cloudformation()).of(stack)
        return {lid: outputs[key] for lid, key in _OUTPUTS.items() if key in outputs}
    resources = _local_stack_resources(err)
    if not resources:
        raise NotFound("No stack: name one with --stack (and --profile), or start `jobgate dev` here.")
    return resources


def _operations(resources: dict[str, str]) -> Operations:
    table = resources.get("JobsTable")
    if not table:
        raise NotFound("The stack names no jobs table.")
    store = JobStore(aws.dynamodb(aws.BACKGROUND), table, timedelta(days=30))
    return Operations(store, QueueMover(aws.sqs(aws.BACKGROUND)))


def _local_stack_resources(err: TextIO) -> dict[str, str]:
    """The `jobgate dev` of this checkout, if one runs: its resources, reached at its local AWS endpoint
    with its admin credentials (never a real account's); empty when none runs."""
    path = find_state_file()
    state = read_state(path)
    resources = {str(k): str(v) for k, v in (state.get("resources") or {}).items()}
    table = resources.get("JobsTable")
    if not table or not state.get("aws_endpoint_url"):
        return {}
    os.environ.update(
        AWS_ENDPOINT_URL=str(state["aws_endpoint_url"]),
        AWS_ACCESS_KEY_ID=str(state["aws_access_key_id"]),
        AWS_SECRET_ACCESS_KEY=str(state["aws_secret_access_key"]),
        AWS_SESSION_TOKEN=str(state["aws_session_token"]),
        AWS_DEFAULT_REGION=str(state["region"]),
    )
    os.environ.pop("AWS_PROFILE", None)
    err.write(f"jobgate: the local stack of {path} (table {table})\n")
    return resources


def _stuck(ops: Operations, _resources: dict[str, str], args: argparse.Namespace, out: TextIO) -> None:
    now = utcnow()
    found = ops.stuck(queued_for_s=args.queued_for)
    if args.json:
        rows = [
            {
                "job_id": s.job.job_id,
                "tenant": s.job.tenant,
                "status": s.job.status.value,
                "attempts": s.job.attempts,
                "reason": s.reason,
                "since": _when(s.since),
                "age_s": round(s.age_s(now), 1),
            }
            for s in found
        ]
        out.write(json.dumps(rows) + "\n")
        return
    out.write(f"{'job_id':<26}  {'tenant':<16}  {'status':<8}  {'attempts':>8}  {'for':>8}  reason\n")
    for s in found:
        age = f"{s.age_s(now):.0f}s"
        row = (
            f"{s.job.job_id:<26}  {s.job.tenant:<16}  {s.job.status.value:<8}  {s.job.attempts:>8}  {age:>8}"
        )
        out.write(f"{row}  {s.reason}\n")
    if not found:
        out.write("no stuck jobs\n")


def _redrive(ops: Operations, resources: dict[str, str], args: argparse.Namespace, out: TextIO) -> None:
    source_id, destination_id = REDRIVES[args.queue]
    source, destination = resources.get(source_id), resources.get(destination_id)
    if not source or not destination:
        raise NotFound(f"The stack names no {source_id} or {destination_id} (an older template?).")
    waiting = ops.waiting(source)
    moved = 0 if args.dry_run else ops.redrive(source, destination, limit=args.max)
    if args.json:
        out.write(json.dumps({"queue": args.queue, "waiting": waiting, "moved": moved}) + "\n")
        return
    if args.dry_run:
        out.write(f"{waiting} message(s) wait in {source_id}\n")
    else:
        out.write(f"moved {moved} message(s) from {source_id} to {destination_id}\n")


def _create(service: KeyService, args: argparse.Namespace, out: TextIO) -> None:
    expires: datetime | None = args.expires_at
    if args.expires_in_days is not None:
        expires = utcnow() + timedelta(days=args.expires_in_days)
    issued = service.create(args.tenant, args.name, expires=expires)
    if args.json:
        out.write(json.dumps({"api_key": issued.api_key, **_public(issued.record)}) + "\n")
        return
    out.write(f"key_id  {issued.record.key_id}\ntenant  {issued.record.tenant}\n")
    out.write(f"expires {_when(issued.record.expires)}\n")
    out.write(f"api_key {issued.api_key}\n")
    out.write("Store the key now: only its hash is kept, it cannot be shown again.\n")


def _list(service: KeyService, args: argparse.Namespace, out: TextIO) -> None:
    records = service.list_keys(args.tenant)
    if args.json:
        out.write(json.dumps([_public(r) for r in records]) + "\n")
        return
    now = utcnow()
    out.write(f"{'key_id':<26}  {'state':<7}  {'created':<20}  {'expires':<20}  name\n")
    for r in records:
        created = _when(r.created_at)
        out.write(f"{r.key_id:<26}  {r.state(now):<7}  {created:<20}  {_when(r.expires):<20}  {r.name}\n")


def _revoke(service: KeyService, args: argparse.Namespace, out: TextIO) -> None:
    record = service.revoke(args.tenant, args.key_id)
    if args.json:
        out.write(json.dumps(_public(record)) + "\n")
        return
    out.write(f"revoked {record.key_id} of tenant {record.tenant}\n")


def _public(record: ApiKeyRecord) -> dict[str, object]:
    """What may be shown of a key record: everything but its hash."""
    doc = record.model_dump(mode="json", exclude={"key_hash"})
    doc["state"] = record.state(utcnow())
    return doc


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "never"


def _aware_datetime(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


if __name__ == "__main__":
    raise SystemExit(main())
