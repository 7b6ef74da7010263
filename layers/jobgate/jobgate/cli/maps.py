"""`jobgate map` (one command over many items) and `jobgate maps VERB ID`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobgate.cli import output
from jobgate.cli.runner import JobDisplay, command_contract, upload_inputs
from jobgate.cli.zyra_args import UsageError, parse_command_words
from jobgate.client import Client
from jobgate.client.models import Map, Param

Handler = Callable[[Client, argparse.Namespace], int]
CONCAT = ("csv", "jsonl", "text")


def add_parsers(add: Callable[[str, Handler | None, str], argparse.ArgumentParser], common: Any) -> None:
    run = add("map", cmd_map, "run one command over many items, a job each (a map); print its id")
    run.usage = (
        "jobgate map [options] STAGE COMMAND --over ARG (--items V [V ...] | --range START STOP) "
        "[arguments...]"
    )
    run.epilog = (
        "--over, --items (local files for an input argument) and --range (START..STOP-1) come after "
        "STAGE COMMAND, among the command's own arguments; --items takes every word up to the next option."
    )
    run.add_argument("--over", metavar="ARG", help="the argument each item is given to")
    run.add_argument("--max-parallel", type=int, help="at most this many chunks at once (10)")
    run.add_argument("--merge-concat", choices=CONCAT, help="join the chunks' outputs into one file")
    run.add_argument("--run-id", help="idempotency key: the same run_id answers the same map")
    run.add_argument("--wait", action="store_true", help="wait until every chunk and the merge have ended")
    run.add_argument("stage", metavar="STAGE")
    run.add_argument("command", metavar="COMMAND")
    run.add_argument("words", nargs=argparse.REMAINDER, metavar="...", help="the command's own arguments")

    maps = add("maps", None, "a map's status, pause, resume, cancel, merge, retry of a chunk, download")
    verbs = maps.add_subparsers(dest="maps_verb", metavar="VERB", required=True, parser_class=type(common))
    for verb, handler, text in (
        ("status", _status, "show a map: its status, chunks per state and merge"),
        ("wait", _wait, "wait until every chunk and the merge have ended; exit 0 only if all succeeded"),
        ("pause", _pause, "start no new chunk (those running finish)"),
        ("resume", _resume, "start chunks again, up to max_parallel"),
        ("cancel", _cancel, "cancel every chunk that has not ended"),
    ):
        cmd = verbs.add_parser(verb, parents=[common], help=text, description=text)
        cmd.add_argument("map_id", metavar="MAP_ID")
        cmd.set_defaults(handler=handler)
    merge = verbs.add_parser("merge", parents=[common], help="merge the chunks' outputs (again)")
    merge.add_argument("map_id", metavar="MAP_ID")
    merge.add_argument("--force", action="store_true", help="though some chunks failed")
    merge.add_argument("--concat", choices=CONCAT, help="join into one file (instead of the map's merge)")
    merge.set_defaults(handler=_merge)
    retry = verbs.add_parser("retry", parents=[common], help="run an ended chunk again; print its new job id")
    retry.add_argument("map_id", metavar="MAP_ID")
    retry.add_argument("chunk", type=int, metavar="CHUNK")
    retry.set_defaults(handler=_retry)
    download = verbs.add_parser("download", parents=[common], help="download the merged file")
    download.add_argument("map_id", metavar="MAP_ID")
    download.add_argument("--out", default=".", help="folder to write into (.)")
    download.set_defaults(handler=_download)


def cmd_map(client: Client, args: argparse.Namespace) -> int:
    contract = command_contract(client, args.stage, args.command, "map")
    args.words = _map_options(args, args.words, {f for p in contract.params for f in p.flags})
    if args.over is None:
        raise UsageError("map: --over ARG names the argument each item is given to")
    if (args.items is None) == (args.range is None):
        raise UsageError("map: give --items or --range, one of them")
    spec = next((p for p in contract.params if args.over in (p.dest, p.dest.replace("_", "-"))), None)
    if spec is None or spec.kind == "positional":
        raise UsageError(f"map {args.stage} {args.command}: no option '{args.over}' to map over")
    # The command's words are checked with the first item in place, as each chunk will be.
    sample = args.items[0] if args.items else str(args.range[0])
    prog = f"jobgate map {args.stage} {args.command}"
    parsed = parse_command_words(contract, [*args.words, f"{spec.spelling}={sample}"], prog=prog)
    parsed.inputs.pop(spec.dest, None)
    display = JobDisplay(bar=False)
    with display.shown():
        job_args = upload_inputs(client, contract, parsed, display)
        job_args.pop(spec.dest, None)
        items = [_item(client, spec, v) for v in args.items] if args.items else None
    found = client.submit_map(
        args.stage,
        args.command,
        job_args,
        over=spec.dest,
        items=items,
        range_=tuple(args.range) if args.range else None,
        max_parallel=args.max_parallel,
        concat=args.merge_concat,
        run_id=args.run_id,
    )
    if args.wait:
        found = client.wait_map(found.map_id)
    if args.json:
        output.print_json(found)
    elif args.wait:
        _print(found)
    else:
        sys.stdout.write(found.map_id + "\n")
    return _exit_code(found) if args.wait else output.EXIT_OK


# The map's own options among the command's words, and how many values each takes (None: up to the
# next option).
MAP_OPTIONS: dict[str, int | None] = {
    "--over": 1,
    "--items": None,
    "--range": 2,
    "--max-parallel": 1,
    "--merge-concat": 1,
    "--run-id": 1,
    "--wait": 0,
    "--json": 0,
}


def _map_options(args: argparse.Namespace, words: list[str], taken: set[str]) -> list[str]:
    """Take the map's own options out of the command's words (an option the command defines stays its)."""
    args.items, args.range = None, None
    rest: list[str] = []
    i = 0
    while i < len(words):
        word, _, inline = words[i].partition("=")
        if word == "--":
            rest.extend(words[i:])
            break
        if word in taken or word not in MAP_OPTIONS:
            rest.append(words[i])
            i += 1
            continue
        wanted = MAP_OPTIONS[word]
        values = [inline] if inline else []
        i += 1
        while i < len(words) and not words[i].startswith("--") and (wanted is None or len(values) < wanted):
            values.append(words[i])
            i += 1
        if (wanted is None and not values) or (wanted is not None and len(values) != wanted):
            count = "one or more" if wanted is None else str(wanted)
            raise UsageError(f"map: {word} expects {count} value(s)")
        _set_option(args, word, values)
    return rest


def _set_option(args: argparse.Namespace, word: str, values: list[str]) -> None:
    name = word.lstrip("-").replace("-", "_")
    if not values:
        setattr(args, name, True)
    elif word == "--items":
        args.items = values
    elif word in ("--range", "--max-parallel"):
        try:
            numbers = [int(v) for v in values]
        except ValueError:
            raise UsageError(f"map: {word} takes integers, not {' '.join(values)}") from None
        setattr(args, name, numbers if word == "--range" else numbers[0])
    else:
        setattr(args, name, values[0])


def _item(client: Client, spec: Param, value: str) -> Any:
    """An item as the argument takes it: a local file is uploaded for an input, numbers are numbers."""
    if spec.role == "input" and not value.startswith(("asset://", "job://")):
        return client.upload(Path(value).expanduser()).ref
    if spec.type == "integer":
        return int(value)
    if spec.type == "number":
        return float(value)
    return value


def _print(found: Map) -> None:
    counts = found.counts
    sys.stdout.write(f"map {found.map_id}: {found.status} ({found.progress:.0%}), {found.count} chunks\n")
    states = ("succeeded", "running", "queued", "waiting", "failed", "timed_out", "cancelled")
    shown = [f"{name} {getattr(counts, name)}" for name in states if getattr(counts, name)]
    sys.stdout.write("  chunks: " + ", ".join(shown) + "\n")
    if found.merge is not None:
        sys.stdout.write(f"  merge: {found.merge.job_id} {found.merge.status}\n")


def _exit_code(found: Map) -> int:
    merged = found.merge is None or found.merge.status == "succeeded"
    return output.EXIT_OK if found.status == "succeeded" and merged else output.EXIT_FAILED


def _show(args: argparse.Namespace, found: Map) -> int:
    if args.json:
        output.print_json(found)
    else:
        _print(found)
    return output.EXIT_OK


def _status(client: Client, args: argparse.Namespace) -> int:
    return _show(args, client.get_map(args.map_id))


def _wait(client: Client, args: argparse.Namespace) -> int:
    found = client.wait_map(args.map_id)
    _show(args, found)
    return _exit_code(found)


def _pause(client: Client, args: argparse.Namespace) -> int:
    return _show(args, client.pause_map(args.map_id))


def _resume(client: Client, args: argparse.Namespace) -> int:
    return _show(args, client.resume_map(args.map_id))


def _cancel(client: Client, args: argparse.Namespace) -> int:
    return _show(args, client.cancel_map(args.map_id))


def _merge(client: Client, args: argparse.Namespace) -> int:
    return _show(args, client.merge_map(args.map_id, force=args.force, concat=args.concat))


def _retry(client: Client, args: argparse.Namespace) -> int:
    job = client.retry_chunk(args.map_id, args.chunk)
    if args.json:
        output.print_json(job)
    else:
        sys.stdout.write(job.job_id + "\n")
    return output.EXIT_OK


def _download(client: Client, args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # a folder: the file keeps its own name (merged.csv)
    path = client.download_map(args.map_id, out)
    if args.json:
        output.print_json({"files": [str(path)]})
    else:
        sys.stdout.write(f"{path}\n")
    return output.EXIT_OK
