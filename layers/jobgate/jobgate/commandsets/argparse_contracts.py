"""Command contracts read from an argparse parser tree: one per stage command, one spec per argument."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jobgate.services.registry import CommandContract, ParamRole, ParamSpec, ParamType


@dataclass(frozen=True)
class Override:
    """What introspection cannot tell about one argument: what it names, or that it is not offered."""

    role: ParamRole | None = None
    media_types: tuple[str, ...] = ()
    exclude: bool = False
    # An output the command may rightly leave unwritten (it writes it only under some other flag).
    optional: bool = False


# (stage, command) -> dest -> override
Overrides = Mapping[tuple[str, str], Mapping[str, Override]]
# dest -> (minimum, maximum), for a numeric argument of that name in any command
Bounds = Mapping[str, tuple[float, float]]

# Spelled like argparse's own %-directives: "%%", "%(name)s", "%(name)-10.3f".
_PERCENT_TOKEN = re.compile(r"%%|%\([^)]*\)[#0 +-]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]|%")


def contracts_from_parser(
    root: argparse.ArgumentParser,
    command_set: str,
    *,
    overrides: Overrides | None = None,
    bounds: Bounds | None = None,
    skip_stages: Collection[str] = (),
) -> list[CommandContract]:
    """Every command below `root`, sorted by (stage, command).

    A stage's sub-parsers are its commands. A stage that takes its arguments itself (no sub-parsers,
    or arguments of its own beside them) is also a command, named like the stage. Overrides that
    name no command or argument raise ValueError, so the table cannot rot silently; so do bounds
    that no numeric argument takes.
    """
    overrides = overrides or {}
    contracts: list[CommandContract] = []
    dests: dict[tuple[str, str], set[str]] = {}
    for stage, stage_parser, stage_help in _subcommands(root):
        if stage in skip_stages:
            continue
        commands = [
            (name, parser, summary, _own_actions(parser))
            for name, parser, summary in _subcommands(stage_parser)
        ]
        own = _own_form(stage_parser)
        if own is not None:
            if any(name == stage for name, *_ in commands):
                raise ValueError(f"Stage '{stage}' takes arguments itself and has a command named like it.")
            commands.insert(0, (stage, stage_parser, stage_help, own))
        for command, parser, summary, actions in commands:
            dests[(stage, command)] = {a.dest for a in actions}
            table = overrides.get((stage, command), {})
            contracts.append(_contract(command_set, stage, command, parser.prog, actions, summary, table))
    _check_overrides(dests, overrides)
    _apply_bounds(contracts, bounds or {})
    return sorted(contracts, key=lambda c: (c.stage, c.command))


def _apply_bounds(contracts: list[CommandContract], bounds: Bounds) -> None:
    used: set[str] = set()
    for contract in contracts:
        for spec in contract.params:
            if spec.dest in bounds and spec.type in ("integer", "number"):
                spec.minimum, spec.maximum = bounds[spec.dest]
                used.add(spec.dest)
    unused = sorted(set(bounds) - used)
    if unused:
        raise ValueError(f"Bounds for argument(s) {unused} that no command takes as a number.")


def param_spec(action: argparse.Action, prog: str, override: Override | None = None) -> ParamSpec:
    """One argument as a contract describes it."""
    kind = "positional" if not action.option_strings else "flag" if action.nargs == 0 else "option"
    multiple = kind != "flag" and (
        action.nargs in ("+", "*")
        or (isinstance(action.nargs, int) and action.nargs > 1)
        or isinstance(action, argparse._AppendAction | argparse._ExtendAction)
    )
    override = override or Override()
    return ParamSpec(
        dest=action.dest,
        flags=list(action.option_strings),
        kind=kind,
        type=_param_type(action.type) if kind != "flag" else "boolean",
        multiple=multiple,
        nargs=action.nargs if kind != "flag" else None,
        # argparse marks a `nargs="*"` positional required, though no word satisfies it.
        required=bool(action.required) and not (kind == "positional" and action.nargs in ("?", "*")),
        choices=_choices(action.choices),
        default=_json_value(action.default),
        help=help_text(action, prog),
        role=override.role or "value",
        media_types=list(override.media_types),
        optional=override.optional,
    )


def help_text(action: argparse.Action, prog: str) -> str:
    """The action's help as argparse would print it, but never raising on a stray '%'."""
    text = action.help
    if not text or text == argparse.SUPPRESS:
        return ""
    params: dict[str, Any] = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
    params["prog"] = prog
    for name, value in list(params.items()):
        if hasattr(value, "__name__"):
            params[name] = value.__name__
    if params.get("choices") is not None:
        params["choices"] = ", ".join(map(str, params["choices"]))
    return expand_percent(text, params)


def expand_percent(text: str, params: Mapping[str, Any]) -> str:
    """`text % params` with lone '%' signs kept literally; the raw text when formatting still fails."""

    def escape(match: re.Match[str]) -> str:
        token = match.group(0)
        return "%%" if token == "%" else token

    try:
        expanded = _PERCENT_TOKEN.sub(escape, text) % params
    except (KeyError, ValueError, TypeError):
        expanded = text.replace("%%", "%")
    return " ".join(expanded.split())


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser, str]]:
    """(name, parser, help) of each sub-parser, in registration order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                raw = helps.get(name) or sub.description or ""
                text = "" if raw == argparse.SUPPRESS else expand_percent(raw, {"prog": sub.prog})
                yield name, sub, text


def _own_form(parser: argparse.ArgumentParser) -> list[argparse.Action] | None:
    """The arguments of a stage called without a command word, or None when it cannot be."""
    own = _own_actions(parser)
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        return own
    if not own or subparsers[0].required:
        return None
    # A positional declared after the sub-parsers action is unreachable: the sub-parsers action
    # takes the first word as a command name (`zyra search tsunami`: invalid choice 'tsunami').
    position = parser._actions.index(subparsers[0])
    return [a for a in own if a.option_strings or parser._actions.index(a) < position]


def _own_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The arguments a parser takes itself: not help, version or its sub-parsers."""
    skipped = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
    return [a for a in parser._actions if not isinstance(a, skipped)]


def _contract(
    command_set: str,
    stage: str,
    command: str,
    prog: str,
    actions: list[argparse.Action],
    summary: str,
    table: Mapping[str, Override],
) -> CommandContract:
    params: list[ParamSpec] = []
    by_dest: dict[str, ParamSpec] = {}
    for action in actions:
        override = table.get(action.dest)
        if override is not None and override.exclude:
            continue
        spec = param_spec(action, prog, override)
        first = by_dest.get(spec.dest)
        if first is None:
            by_dest[spec.dest] = spec
            params.append(spec)
        elif first.kind == spec.kind and first.type == spec.type:
            # Alias spellings of one argument (--fps/--framerate): one param, every spelling.
            first.flags.extend(f for f in spec.flags if f not in first.flags)
        # Else an opposite flag on the same dest (--parallel/--no-parallel): the first one stands,
        # since a contract keys args by dest and can hold one meaning per dest.
    return CommandContract(
        command_set=command_set, stage=stage, command=command, summary=summary, params=params
    )


def _check_overrides(dests: Mapping[tuple[str, str], set[str]], overrides: Overrides) -> None:
    for key, table in overrides.items():
        if key not in dests:
            raise ValueError(f"Override for unknown command '{' '.join(key)}'.")
        unknown = sorted(set(table) - dests[key])
        if unknown:
            raise ValueError(f"Override for unknown argument(s) {unknown} of '{' '.join(key)}'.")


def _param_type(type_: Any) -> ParamType:
    if type_ is int:
        return "integer"
    if type_ is float:
        return "number"
    return "string"


def _choices(choices: Any) -> list[Any] | None:
    if choices is None:
        return None
    values = list(choices)
    if isinstance(choices, set | frozenset):
        values.sort(key=str)
    return [v if _is_json_scalar(v) else str(v) for v in values]


def _json_value(value: Any) -> Any:
    """The value when a manifest can hold it as is; None otherwise (and for argparse.SUPPRESS)."""
    if value is argparse.SUPPRESS:
        return None
    if _is_json_scalar(value):
        return value
    if isinstance(value, list | tuple) and all(_is_json_scalar(v) for v in value):
        return list(value)
    return None


def _is_json_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int | bool)
