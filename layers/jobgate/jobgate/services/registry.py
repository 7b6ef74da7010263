"""The command registry: stage -> command -> contract, and the checks a request must pass."""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field, field_validator

from jobgate.errors import CommandSetUnavailable, NotFound, ValidationFailed
from jobgate.models import Runner
from jobgate.services.secrets import SECRET_NAME_RE

ENTRY_POINT_GROUP = "jobgate.command_sets"
ASSET_SCHEME = "asset://"
STEP_SCHEME = "step://"
JOB_SCHEME = "job://"
STEP_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ASSET_ID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
MAX_ARG_CHARS = 4096
MAX_LIST_ITEMS = 1000

ParamType = Literal["string", "integer", "number", "boolean"]
# value: passed as given; path: a relative path inside the job's work folder; input: a file the
# worker stages from an asset; output / output_dir: what the command writes, uploaded afterwards.
ParamRole = Literal["value", "path", "input", "output", "output_dir"]


class ParamSpec(BaseModel):
    """One argument of a command, as its parser defines it."""

    dest: str
    flags: list[str] = Field(default_factory=list)
    kind: Literal["positional", "option", "flag"]
    type: ParamType = "string"
    multiple: bool = False
    nargs: int | str | None = None
    required: bool = False
    choices: list[Any] | None = None
    default: Any = None
    help: str = ""
    role: ParamRole = "value"
    media_types: list[str] = Field(default_factory=list)
    # For an output: the command may leave it unwritten (else a job whose command exits 0 without
    # writing it ends failed, `missing_output`).
    optional: bool = False
    # For a number: the range a job may ask for (a width of 1e30 fails here, not in the worker).
    minimum: float | None = None
    maximum: float | None = None

    @property
    def spelling(self) -> str:
        """The flag used on the command line: the first long one, else the first."""
        longs = [f for f in self.flags if f.startswith("--")]
        return (longs or self.flags)[0]


class CommandContract(BaseModel):
    """Everything a client needs to call one command, and everything the worker needs to run it."""

    command_set: str
    stage: str
    command: str
    summary: str = ""
    params: list[ParamSpec] = Field(default_factory=list)
    max_timeout_s: int | None = None
    # Exit codes that mean the command did part of its work and says so (a run that answered some
    # questions, a dataset with gaps): the job ends `succeeded` with `partial: true`.
    partial_exit_codes: list[int] = Field(default_factory=list)
    # Secrets the command needs, by name: the worker puts each in its child's environment under that
    # name, read from where the operator maps it (jobgate.services.secrets).
    secrets: list[str] = Field(default_factory=list)
    # "container": every job of the command runs on the container runner, whatever its timeout_s;
    # "lambda": never; unset: the container runner only when timeout_s is past the Lambda's budget.
    runner: Runner | None = None

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not SECRET_NAME_RE.match(name):
                raise ValueError(f"'{name}' is not a secret name (capitals, digits and _)")
        return sorted(set(names))

    def param(self, name: str) -> ParamSpec | None:
        key = name.replace("-", "_")
        for p in self.params:
            if p.dest == key or p.dest == name:
                return p
        return None


class Invocation(BaseModel):
    """A request checked against its contract: normalized args and the inputs to stage."""

    contract: CommandContract
    args: dict[str, Any]
    inputs: dict[str, str]  # "<dest>" or "<dest>[i]" -> asset id
    steps: dict[str, str] = Field(default_factory=dict)  # "<dest>" or "<dest>[i]" -> "<step>/<path>"
    # "<dest>" or "<dest>[i]" -> "<job_id>/<output name>": an output of an earlier job of the tenant
    jobs: dict[str, str] = Field(default_factory=dict)


@runtime_checkable
class CommandSet(Protocol):
    """A pluggable CLI. `contracts()` must work where the CLI is installed; `run` runs in a child."""

    name: str

    def contracts(self) -> list[CommandContract]: ...

    def warm(self) -> None: ...

    def run(self, argv: list[str]) -> int: ...


def contracts_of(command_set: CommandSet) -> list[CommandContract]:
    """A command set's contracts, with the secrets it declares for all of its commands
    (`secrets = ["NAME", ...]` on the set) added to each."""
    shared = list(getattr(command_set, "secrets", ()) or ())
    if not shared:
        return command_set.contracts()
    return [c.model_copy(update={"secrets": sorted({*c.secrets, *shared})}) for c in command_set.contracts()]


class Registry:
    """Contracts of every command set, looked up by stage and command (aliases included)."""

    def __init__(
        self,
        contracts: Iterable[CommandContract],
        command_sets: Mapping[str, CommandSet] | None = None,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self._contracts: dict[tuple[str, str], CommandContract] = {}
        for c in contracts:
            self._contracts[(c.stage, c.command)] = c
        self._sets = dict(command_sets or {})
        self._aliases = dict(aliases or {})

    @classmethod
    def from_command_sets(cls, sets: Iterable[CommandSet]) -> Registry:
        sets = list(sets)
        contracts = [c for s in sets for c in contracts_of(s)]
        aliases: dict[str, str] = {}
        for s in sets:
            aliases.update(getattr(s, "stage_aliases", {}) or {})
        return cls(contracts, {s.name: s for s in sets}, aliases)

    @classmethod
    def from_entry_points(cls) -> Registry:
        """The live registry: every installed command set, instantiated."""
        sets = [ep.load()() for ep in entry_points(group=ENTRY_POINT_GROUP)]
        return cls.from_command_sets(sets)

    def stages(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for stage, command in sorted(self._contracts):
            out.setdefault(stage, []).append(command)
        return out

    def contracts(self) -> list[CommandContract]:
        return [self._contracts[k] for k in sorted(self._contracts)]

    def canonical_stage(self, stage: str) -> str:
        return self._aliases.get(stage, stage)

    def get(self, stage: str, command: str) -> CommandContract:
        key = (self.canonical_stage(stage), command)
        if key not in self._contracts:
            raise NotFound(f"No command '{command}' in stage '{stage}'.")
        return self._contracts[key]

    def warm(self) -> None:
        """Import and warm every command set in this process (the worker, before it forks)."""
        for command_set in self._sets.values():
            command_set.warm()

    def command_set(self, name: str) -> CommandSet:
        if name not in self._sets:
            raise CommandSetUnavailable(f"Command set '{name}' is not installed here.")
        return self._sets[name]

    def check(
        self, stage: str, command: str, args: Mapping[str, Any], *, allow_steps: bool = False
    ) -> Invocation:
        """Validate a request's args against the contract; raise ValidationFailed naming each field."""
        try:
            contract = self.get(stage, command)
        except NotFound as exc:
            loc = "stage" if self.canonical_stage(stage) not in self.stages() else "command"
            raise ValidationFailed(exc.detail, [{"loc": ["body", loc], "msg": exc.detail}]) from exc
        return check_args(contract, args, allow_steps=allow_steps)


def _err(name: str, msg: str) -> dict[str, Any]:
    return {"loc": ["body", "args", name], "msg": msg}


def _lookup(contract: CommandContract, name: str) -> ParamSpec | None:
    """The param named by its dest, or by one of its flag spellings (`no-coastline`, `--framerate`)."""
    spec = contract.param(name)
    if spec is not None:
        return spec
    spellings = {name, "--" + name.lstrip("-").replace("_", "-")}
    return next((p for p in contract.params if spellings.intersection(p.flags)), None)


def check_args(
    contract: CommandContract, args: Mapping[str, Any], *, allow_steps: bool = False
) -> Invocation:
    """Check args against the contract; in a pipeline, files may also come from `step://<name>/<path>`."""
    errors: list[dict[str, Any]] = []
    normalized: dict[str, Any] = {}
    inputs: dict[str, str] = {}
    steps: dict[str, str] = {}
    jobs: dict[str, str] = {}
    refused: set[str] = set()
    for name, raw in args.items():
        spec = _lookup(contract, name)
        if spec is None:
            errors.append(_err(name, f"unknown argument for {contract.stage} {contract.command}"))
            continue
        if spec.dest in normalized:
            errors.append(_err(name, f"given twice (as '{spec.dest}' and '{name}')"))
            continue
        value, problems = _coerce(spec, raw, allow_steps)
        if problems:
            errors.extend(_err(name, p) for p in problems)
            refused.add(spec.dest)
            continue
        if value is None:
            continue
        normalized[spec.dest] = value
        inputs.update(_asset_refs(spec, value))
        steps.update(_scheme_refs(spec, value, STEP_SCHEME))
        jobs.update(_scheme_refs(spec, value, JOB_SCHEME))
    for spec in contract.params:
        if spec.required and spec.dest not in normalized and spec.dest not in refused:
            errors.append(_err(spec.dest, "required"))
    if errors:
        raise ValidationFailed(
            f"{len(errors)} invalid argument(s) for {contract.stage} {contract.command}.", errors
        )
    return Invocation(contract=contract, args=normalized, inputs=inputs, steps=steps, jobs=jobs)


def _coerce(spec: ParamSpec, raw: Any, allow_steps: bool = False) -> tuple[Any, list[str]]:
    if spec.kind == "flag":
        if isinstance(raw, bool):
            return (True if raw else None), []
        return None, ["must be true or false"]
    if raw is None:
        return None, []
    if spec.multiple:
        items = raw if isinstance(raw, list) else [raw]
        if not items and spec.nargs == "+":
            return None, ["needs at least one value"]
        if len(items) > MAX_LIST_ITEMS:
            return None, [f"at most {MAX_LIST_ITEMS} values"]
        if isinstance(spec.nargs, int) and len(items) != spec.nargs:
            return None, [f"needs exactly {spec.nargs} values"]
        values: list[Any] = []
        problems: list[str] = []
        for i, item in enumerate(items):
            v, p = _coerce_scalar(spec, item, allow_steps)
            if not p and _spread(spec) and _reads_as_flag(_fmt(v)):
                # These values follow the flag as separate words, where argparse takes '-x' for a flag.
                p = ["must not start with '-' unless it is a number"]
            problems.extend(f"[{i}] {m}" for m in p)
            values.append(v)
        return values, problems
    if isinstance(raw, list):
        return None, ["takes one value, not a list"]
    v, p = _coerce_scalar(spec, raw, allow_steps)
    return v, p


def _coerce_scalar(spec: ParamSpec, raw: Any, allow_steps: bool = False) -> tuple[Any, list[str]]:
    value: Any
    if isinstance(raw, dict | list):
        return None, ["must be a single value"]
    if spec.type in ("integer", "number"):
        value, problems = _coerce_number(spec, raw)
        if problems:
            return None, problems
    else:
        if isinstance(raw, bool):
            return None, ["must be a string"]
        value = str(raw)
        if len(value) > MAX_ARG_CHARS:
            return None, [f"longer than {MAX_ARG_CHARS} characters"]
        if "\x00" in value:
            return None, ["contains a NUL character"]
        if value == "--":
            # argparse drops a '--' even from '--flag=--'; it can never arrive as a value.
            return None, ["cannot be '--'"]
    if spec.choices is not None and value not in spec.choices and str(value) not in map(str, spec.choices):
        return None, [f"must be one of {spec.choices}"]
    return value, _check_role(spec, value, allow_steps)


def _coerce_number(spec: ParamSpec, raw: Any) -> tuple[Any, list[str]]:
    value: int | float
    if spec.type == "integer":
        whole = isinstance(raw, float) and math.isfinite(raw) and raw.is_integer()  # 800.0, 1e3 from JSON
        if isinstance(raw, bool) or not (
            isinstance(raw, int) or whole or (isinstance(raw, str) and _is_int(raw))
        ):
            return None, ["must be an integer"]
        value = int(raw)
    else:
        if isinstance(raw, bool) or not isinstance(raw, int | float | str) or not _is_number(raw):
            return None, ["must be a number"]
        value = float(raw) if isinstance(raw, str) else raw
    return value, _out_of_range(spec, value)


def _out_of_range(spec: ParamSpec, value: float) -> list[str]:
    if spec.minimum is not None and value < spec.minimum:
        return [f"must be at least {_fmt_bound(spec.minimum)}"]
    if spec.maximum is not None and value > spec.maximum:
        return [f"must be at most {_fmt_bound(spec.maximum)}"]
    return []


def _fmt_bound(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def _is_int(s: str) -> bool:
    return re.fullmatch(r"[+-]?\d+", s.strip()) is not None


def _is_number(v: int | float | str) -> bool:
    try:
        return math.isfinite(float(v))
    except ValueError:
        return False


def _check_role(spec: ParamSpec, value: Any, allow_steps: bool = False) -> list[str]:
    if spec.role == "value":
        return []
    text = str(value)
    if text.startswith(STEP_SCHEME):
        if not allow_steps:
            return [f"'{STEP_SCHEME}' refers to a pipeline step; submit it as part of a pipeline"]
        if spec.role not in ("input", "path"):
            return [f"only a file or folder argument can come from '{STEP_SCHEME}'"]
        name, _, path = text[len(STEP_SCHEME) :].partition("/")
        if not STEP_NAME_RE.match(name):
            return [f"must be '{STEP_SCHEME}<step>/<output>' with a step name of letters, digits, '-' or '_'"]
        return check_relative_path(path) if path.strip("/") else []
    if spec.role == "input" and text.startswith(JOB_SCHEME):
        job_id, _, name = text[len(JOB_SCHEME) :].partition("/")
        if not ASSET_ID_RE.match(job_id) or not name.strip("/"):
            return [f"must be '{JOB_SCHEME}<job_id>/<output name>'"]
        return check_relative_path(name)
    if spec.role == "input":
        if not text.startswith(ASSET_SCHEME):
            return [
                f"must name an uploaded file as '{ASSET_SCHEME}<asset_id>' or an earlier job's output "
                f"as '{JOB_SCHEME}<job_id>/<output name>'"
            ]
        if not ASSET_ID_RE.match(text[len(ASSET_SCHEME) :]):
            return ["is not a valid asset id"]
        return []
    return check_relative_path(text)


def check_relative_path(text: str) -> list[str]:
    """A path the command may use: relative, normalized, and inside the work folder."""
    if not text or text.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", text):
        return ["must be a relative path inside the job's work folder"]
    parts = posixpath.normpath(text.replace("\\", "/")).split("/")
    if ".." in parts or parts == ["."] and text not in (".", "./"):
        return ["must not leave the job's work folder"]
    if text.startswith("-"):
        return ["must not start with '-'"]
    return []


def _scheme_refs(spec: ParamSpec, value: Any, scheme: str) -> dict[str, str]:
    """The values of one argument that name a file by `scheme` (step://, job://), by their key."""
    values = value if isinstance(value, list) else [value]
    refs = {}
    for i, v in enumerate(values):
        if isinstance(v, str) and v.startswith(scheme):
            key = f"{spec.dest}[{i}]" if isinstance(value, list) else spec.dest
            refs[key] = v[len(scheme) :]
    return refs


def _asset_refs(spec: ParamSpec, value: Any) -> dict[str, str]:
    if spec.role != "input":
        return {}
    if isinstance(value, list):
        return {
            f"{spec.dest}[{i}]": v[len(ASSET_SCHEME) :]
            for i, v in enumerate(value)
            if v.startswith(ASSET_SCHEME)
        }
    text = str(value)
    return {spec.dest: text[len(ASSET_SCHEME) :]} if text.startswith(ASSET_SCHEME) else {}


def build_argv(
    invocation_args: Mapping[str, Any], contract: CommandContract, paths: Mapping[str, str]
) -> list[str]:
    """The argv for a checked request; input refs are replaced by the staged local paths.

    Values go in `--flag=value` form so that a value starting with '-' can never be read as a flag.
    """
    argv = [contract.stage, contract.command]
    positionals: list[str] = []
    for spec in contract.params:
        if spec.dest not in invocation_args:
            continue
        value = invocation_args[spec.dest]
        if spec.kind == "flag":
            argv.append(spec.spelling)
            continue
        values = value if isinstance(value, list) else [value]
        strings = [
            paths.get(f"{spec.dest}[{i}]" if isinstance(value, list) else spec.dest, _fmt(v))
            for i, v in enumerate(values)
        ]
        if spec.kind == "positional":
            positionals.extend(strings)
        elif _spread(spec):
            argv.append(spec.spelling)
            argv.extend(strings)
        else:
            argv.extend(f"{spec.spelling}={s}" for s in strings)
    if positionals:
        argv.append("--")
        argv.extend(positionals)
    return argv


def _spread(spec: ParamSpec) -> bool:
    """Whether build_argv passes this option's values as separate words after its flag."""
    spread_nargs = spec.nargs in ("+", "*") or isinstance(spec.nargs, int)
    return spec.kind == "option" and spec.multiple and spread_nargs


# argparse's own test for a word that starts with '-' but is a negative number, not a flag.
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


def _reads_as_flag(word: str) -> bool:
    return word.startswith("-") and not _NEGATIVE_NUMBER.match(word)


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return repr(v)
    return str(v)


def declared_outputs(contract: CommandContract, args: Mapping[str, Any]) -> list[str]:
    """The output files a checked request's args name (not output folders, whose files are unknown)."""
    names: list[str] = []
    for spec in contract.params:
        value = args.get(spec.dest)
        if spec.role != "output" or value is None or value is False:
            continue
        names.extend(str(v) for v in (value if isinstance(value, list) else [value]))
    return names
