"""Command-line words in the command's own syntax (`--input x.npy --no-coastline`), read with a parser
rebuilt from the command's contract, so `jobgate run` takes exactly what the command itself takes."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

from jobgate.client.models import CommandContract, Param

ASSET_PREFIX = "asset://"
# What already names a file in the service (an uploaded asset, another job's output): never uploaded.
SERVICE_REFS = (ASSET_PREFIX, "job://")
STDIN = "-"


class UsageError(Exception):
    """The words do not fit the command (exit status 2, as the command's own parser gives)."""


class HelpShown(Exception):
    """`--help` was given and the command's help was printed."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog.removeprefix('jobgate ')}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message or status:
            raise UsageError((message or "").strip())
        raise HelpShown()


_TYPES: dict[str, type] = {"integer": int, "number": float, "string": str}


def command_parser(contract: CommandContract, prog: str) -> argparse.ArgumentParser:
    """An argparse parser equivalent to the command's own, from its contract."""
    parser = _Parser(
        prog=prog,
        description=contract.summary or None,
        allow_abbrev=False,
        epilog="Local files given to input arguments are uploaded; outputs are downloaded into --out.",
    )
    for param in contract.params:
        _add(parser, param)
    return parser


def _add(parser: argparse.ArgumentParser, param: Param) -> None:
    help_text = (param.help or "").replace("%", "%%")
    if param.role == "input":
        help_text = (help_text + " (a local file: uploaded)").strip()
    if param.kind == "flag":
        parser.add_argument(
            *param.flags, dest=param.dest, action="store_true", default=argparse.SUPPRESS, help=help_text
        )
        return
    kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_text}
    kwargs["type"] = _TYPES.get(param.type, str)
    if param.choices:
        kwargs["choices"] = param.choices
    if param.multiple and param.nargs is None:
        kwargs["action"] = "append"
    elif param.nargs is not None:
        kwargs["nargs"] = param.nargs
    if param.kind == "positional" or not param.flags:
        kwargs["metavar"] = param.dest.upper()
        parser.add_argument(param.dest, **kwargs)
        return
    kwargs["required"] = param.required
    parser.add_argument(*param.flags, dest=param.dest, **kwargs)


@dataclass
class CommandArgs:
    """A job's args keyed by dest; `inputs` are the local files to upload for input params."""

    args: dict[str, Any]
    inputs: dict[str, list[str]] = field(default_factory=dict)  # dest -> local paths (or "-")


def parse_command_words(contract: CommandContract, words: Sequence[str], prog: str) -> CommandArgs:
    namespace = command_parser(contract, prog).parse_args(list(words))
    values = vars(namespace)
    args: dict[str, Any] = {}
    inputs: dict[str, list[str]] = {}
    for param in contract.params:
        if param.dest not in values:
            continue
        value = values[param.dest]
        items = value if isinstance(value, list) else [value]
        if param.role == "input":
            local = [str(v) for v in items if not str(v).startswith(SERVICE_REFS)]
            for item in local:
                _check_local_input(param, item)
            if local:
                inputs[param.dest] = local
        elif param.role in ("output", "output_dir", "path"):
            for item in items:
                _check_relative(param, str(item))
        args[param.dest] = value
    return CommandArgs(args=args, inputs=inputs)


def _check_local_input(param: Param, value: str) -> None:
    if value == STDIN:
        return
    path = Path(value).expanduser()
    if not path.exists():
        raise UsageError(f"{param.spelling}: no such file: {value}")
    if not path.is_file():
        raise UsageError(f"{param.spelling}: not a file: {value}")


def _check_relative(param: Param, value: str) -> None:
    if value == STDIN:
        return
    pure = PurePosixPath(value.replace("\\", "/"))
    if pure.is_absolute() or value.startswith("~") or ".." in pure.parts:
        raise UsageError(
            f"{param.spelling}: '{value}' must be a relative path: the command writes in the job's "
            "folder, and its files are downloaded into --out"
        )


def replace_inputs(args: Mapping[str, Any], refs: Mapping[str, str]) -> dict[str, Any]:
    """The args with each local input path replaced by its uploaded `asset://` reference."""

    def one(value: Any) -> Any:
        return refs.get(str(value), value)

    return {
        k: [one(v) for v in value] if isinstance(value, list) else one(value) for k, value in args.items()
    }


def split_own_options(
    words: Sequence[str], contract: CommandContract, own: Mapping[str, bool]
) -> tuple[list[str], dict[str, str | bool]]:
    """Take jobgate's own options (`--out DIR`, `--json`...) out of the command's words.

    `own` maps each option to whether it takes a value. An option the command itself defines
    stays the command's; jobgate's can still be given before STAGE. Words after `--` are the
    command's.
    """
    taken = {flag for p in contract.params for flag in p.flags}
    rest: list[str] = []
    found: dict[str, str | bool] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            rest.extend(words[i:])
            break
        name, has_value, inline = word.partition("=")
        if name in own and name not in taken:
            if not own[name]:
                found[name] = True
            elif has_value:
                found[name] = inline
            elif i + 1 < len(words):
                found[name] = words[i + 1]
                i += 1
            else:
                raise UsageError(f"{name}: expected a value")
        else:
            rest.append(word)
        i += 1
    return rest, found
