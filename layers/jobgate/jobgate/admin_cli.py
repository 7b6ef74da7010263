"""Admin commands for API keys: `keys create|list|revoke --tenant T`, against the configured table."""

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
from jobgate.adapters.keys import ApiKeyRecord, KeyStore
from jobgate.devstate import find_state_file, read_state
from jobgate.errors import JobgateError
from jobgate.models import utcnow
from jobgate.services.keys import KeyService

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
        help="the DynamoDB table (default: JOBGATE_TABLE_NAME, else the `make dev` of this checkout)",
    )
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


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`jobgate keys ...` on its own: parse, run, answer the exit code."""
    parser = argparse.ArgumentParser(prog="jobgate", description="jobgate administration")
    add_keys_parser(parser.add_subparsers(dest="command", required=True))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors and --help: argparse has printed why
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return run(args, out=out or sys.stdout, err=err or sys.stderr)


def run(args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    """Run a parsed `keys` command; what a console script calls after its own parser."""
    try:
        service = _service(args.table)
        func: Callable[[KeyService, argparse.Namespace, TextIO], None] = args.keys_func
        func(service, args, out)
    except ValidationError as exc:
        err.write(f"jobgate: settings: {exc}\n")
        return EXIT_USAGE
    except JobgateError as exc:
        err.write(f"jobgate: {exc.detail}\n")
        return EXIT_USAGE if exc.status in (404, 422) else EXIT_FAILED
    return EXIT_OK


def _service(table: str | None) -> KeyService:
    if not table and not os.environ.get("JOBGATE_TABLE_NAME"):
        table = _local_stack_table()
    settings = AdminSettings(table_name=table) if table else AdminSettings()
    store = KeyStore(aws.dynamodb(), settings.table_name, timedelta(days=settings.job_ttl_days))
    return KeyService(store)


def _local_stack_table() -> str | None:
    """With no table named, the `jobgate dev` of this checkout, if one runs: its table, reached at its
    local AWS endpoint with its admin credentials (never a real account's)."""
    path = find_state_file()
    state = read_state(path)
    table = (state.get("resources") or {}).get("JobsTable")
    if not table or not state.get("aws_endpoint_url"):
        return None
    os.environ.update(
        AWS_ENDPOINT_URL=str(state["aws_endpoint_url"]),
        AWS_ACCESS_KEY_ID=str(state["aws_access_key_id"]),
        AWS_SECRET_ACCESS_KEY=str(state["aws_secret_access_key"]),
        AWS_SESSION_TOKEN=str(state["aws_session_token"]),
        AWS_DEFAULT_REGION=str(state["region"]),
    )
    os.environ.pop("AWS_PROFILE", None)
    sys.stderr.write(f"jobgate: the local stack of {path} (table {table})\n")
    return str(table)


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
