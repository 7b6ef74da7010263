"""synth as a command set: tabular synthetic data from a JSON schema, generated with Faker, in chunks.

    synth validate --schema S                       prints each issue of the schema, exit 1 when any
    synth generate --schema S --rows N --seed K --chunk I --output part.csv|part.jsonl

A chunk is deterministic for (seed, chunk): the same arguments write the same bytes. A `unique` field
stays unique across every chunk of a run of the same schema, seed and rows: its value is drawn from a
permutation of the global row index (`chunk * rows + row`), so chunks generated apart cannot collide.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import json
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from jobgate.commandsets.argparse_contracts import Override, Overrides, contracts_from_parser
from jobgate.services.registry import CommandContract

FIELD_TYPES = ("int", "float", "string", "name", "email", "date", "choice", "bool")
# A unique field draws from the permutation of a domain, so the domain must be finite and as large as
# the run; these types have one.
UNIQUE_TYPES = frozenset({"int", "float", "string", "email", "date"})
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
MAX_FIELDS = 200
MAX_ROWS = 1_000_000
MAX_CHUNK = 1_000_000
NULL_SHARE = 0.1
DATE_MIN = "1970-01-01"
DATE_MAX = "2037-12-31"
INT_SPAN = (0, 2**31 - 1)
FLOAT_DIGITS = 3  # a unique float is a permuted grid of 10^-3 steps

OVERRIDES: Overrides = {
    ("synth", "validate"): {"schema": Override(role="input", media_types=("application/json",))},
    ("synth", "generate"): {
        "schema": Override(role="input", media_types=("application/json",)),
        "output": Override(role="output"),
    },
}
BOUNDS = {"rows": (1, MAX_ROWS), "chunk": (0, MAX_CHUNK), "seed": (0, 2**53)}  # an exact float in JSON


def build_root_parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="synth")
    stages = root.add_subparsers(dest="stage", required=True)
    commands = stages.add_parser("synth").add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="check a schema; print each issue, exit 1 when any")
    validate.add_argument("--schema", required=True, help="the schema, a JSON file")
    generate = commands.add_parser("generate", help="write one chunk of rows, deterministic per seed+chunk")
    generate.add_argument("--schema", required=True, help="the schema, a JSON file")
    generate.add_argument("--rows", type=int, required=True, help="rows in this chunk")
    generate.add_argument("--seed", type=int, default=0, help="the run's seed")
    generate.add_argument("--chunk", type=int, default=0, help="this chunk's index in the run")
    generate.add_argument("--output", required=True, help="part.csv or part.jsonl")
    return root


class SynthCommandSet:
    """Synthetic tabular data (Faker): a schema's rows, one chunk per job."""

    name = "synth"

    def __init__(self) -> None:
        self._contracts: list[CommandContract] | None = None

    def contracts(self) -> list[CommandContract]:
        if self._contracts is None:
            self._contracts = contracts_from_parser(
                build_root_parser(), self.name, overrides=OVERRIDES, bounds=BOUNDS
            )
        return [c.model_copy(deep=True) for c in self._contracts]

    def warm(self) -> None:
        """Import Faker and build a generator, so forked jobs start warm."""
        generator = _faker(0)
        generator.name()

    def run(self, argv: list[str]) -> int:
        ns = build_root_parser().parse_args(argv)
        schema, issues = load_schema(Path(ns.schema))
        if ns.command == "validate":
            for issue in issues:
                sys.stdout.write(f"{issue}\n")
            if not issues:
                sys.stdout.write("schema ok\n")
            return 1 if issues else 0
        if issues:
            for issue in issues:
                sys.stderr.write(f"schema: {issue}\n")
            return 1
        output = Path(ns.output)
        problem = generate_problem(schema, output, ns.rows, ns.chunk)
        if problem:
            sys.stderr.write(f"{problem}\n")
            return 2
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("w", encoding="utf-8", newline="") as sink:
            write_rows(sink, FORMATS[output.suffix.lower()], schema, ns.rows, ns.seed, ns.chunk)
        return 0


def load_schema(path: Path) -> tuple[dict[str, Any], list[str]]:
    """The schema read from `path`, and each issue found in it (an empty list: usable)."""
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {}, [f"not a JSON file: {exc}"]
    return schema, schema_issues(schema)


def schema_issues(schema: Any) -> list[str]:
    """Each problem of a schema, naming the field by index and name."""
    if not isinstance(schema, dict) or not isinstance(schema.get("fields"), list):
        return ['the schema must be an object with a list "fields"']
    fields: list[Any] = schema["fields"]
    if not fields:
        return ["fields: at least one field is needed"]
    if len(fields) > MAX_FIELDS:
        return [f"fields: at most {MAX_FIELDS}"]
    issues: list[str] = []
    seen: set[str] = set()
    for index, field in enumerate(fields):
        if not isinstance(field, dict):
            issues.append(f"fields[{index}]: must be an object")
            continue
        name = field.get("name")
        where = f"fields[{index}] ({name})" if isinstance(name, str) else f"fields[{index}]"
        if not isinstance(name, str) or not name:
            issues.append(f"{where}: name must be a non-empty string")
        elif name in seen:
            issues.append(f"{where}: name repeats an earlier field")
        else:
            seen.add(name)
        issues.extend(f"{where}: {msg}" for msg in _field_issues(field))
    return issues


def _field_issues(field: dict[str, Any]) -> Iterator[str]:
    kind = field.get("type")
    if kind not in FIELD_TYPES:
        yield f"type must be one of {', '.join(FIELD_TYPES)}"
        return
    for flag in ("unique", "nullable"):
        if flag in field and not isinstance(field[flag], bool):
            yield f"{flag} must be true or false"
    if field.get("unique") and kind not in UNIQUE_TYPES:
        yield f"a {kind} field cannot be unique (unique types: {', '.join(sorted(UNIQUE_TYPES))})"
    if field.get("unique") and field.get("nullable"):
        yield "a unique field cannot be nullable"
    if kind == "choice":
        values = field.get("values")
        if not isinstance(values, list) or not values:
            yield "a choice needs a non-empty list of values"
    yield from _range_issues(field, kind)


def _range_issues(field: dict[str, Any], kind: str) -> Iterator[str]:
    if kind in ("int", "float", "string"):
        for key in ("min", "max"):
            value = field.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                yield f"{key} must be a number"
                return
            if kind != "float" and value is not None and not float(value).is_integer():
                yield f"{key} must be a whole number"
                return
        low, high = _bounds(field)
        if low > high:
            yield f"min ({low:g}) is greater than max ({high:g})"
        if kind == "string" and low < 1:
            yield "a string's min length is at least 1"
    elif kind == "date":
        try:
            low_date, high_date = _date_bounds(field)
        except ValueError as exc:
            yield f"min and max must be ISO dates (YYYY-MM-DD): {exc}"
            return
        if low_date > high_date:
            yield f"min ({low_date}) is after max ({high_date})"


def generate_problem(schema: dict[str, Any], output: Path, rows: int, chunk: int) -> str | None:
    """Why this chunk cannot be written as asked, or None."""
    if output.suffix.lower() not in FORMATS:
        return f"--output must end in {', '.join(FORMATS)}"
    if not 1 <= rows <= MAX_ROWS or not 0 <= chunk <= MAX_CHUNK:
        return f"--rows must be 1..{MAX_ROWS} and --chunk 0..{MAX_CHUNK}"
    last = (chunk + 1) * rows
    for field in schema["fields"]:
        if field.get("unique") and _domain_size(field) < last:
            return (
                f"field {field['name']!r} is unique but its domain holds {_domain_size(field)} values, "
                f"fewer than the {last} rows of chunks 0..{chunk}"
            )
    return None


def write_rows(sink: IO[str], fmt: str, schema: dict[str, Any], rows: int, seed: int, chunk: int) -> None:
    fields = schema["fields"]
    names = [f["name"] for f in fields]
    makers = [_maker(f, seed, chunk, rows) for f in fields]
    writer = csv.writer(sink, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(names)
    for row in range(rows):
        values = [make(row) for make in makers]
        if writer is not None:
            writer.writerow([_csv_cell(v) for v in values])
        else:
            sink.write(json.dumps(dict(zip(names, values, strict=True)), ensure_ascii=False) + "\n")


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _faker(seed: int) -> Any:
    from faker import Faker

    generator = Faker("en_US")
    generator.seed_instance(seed)
    return generator


def _derived_seed(*parts: object) -> int:
    """A seed of 64 bits for these parts, stable across processes (hash() is salted per process)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _maker(field: dict[str, Any], seed: int, chunk: int, rows: int) -> Callable[[int], Any]:
    """The value of `field` for each row of the chunk; every field draws from its own seeded generator."""
    name = field["name"]
    fake = _faker(_derived_seed(seed, chunk, name))
    draw = _unique_drawer(field, seed, chunk, rows) if field.get("unique") else _drawer(field, fake)
    if not field.get("nullable"):
        return draw

    def nullable(row: int) -> Any:
        return None if fake.random.random() < NULL_SHARE else draw(row)

    return nullable


def _drawer(field: dict[str, Any], fake: Any) -> Callable[[int], Any]:
    kind = field["type"]
    low, high = _bounds(field) if kind in ("int", "float", "string") else (0, 0)
    if kind == "int":
        return lambda _row: fake.random.randint(int(low), int(high))
    if kind == "float":
        return lambda _row: round(fake.random.uniform(low, high), 6)
    if kind == "string":
        return lambda _row: fake.pystr(min_chars=int(low), max_chars=int(high))
    if kind == "name":
        return lambda _row: fake.name()
    if kind == "email":
        return lambda _row: fake.email()
    if kind == "date":
        first, last = _date_bounds(field)
        return lambda _row: fake.date_between_dates(first, last).isoformat()
    if kind == "choice":
        values = field["values"]
        return lambda _row: values[fake.random.randrange(len(values))]
    return lambda _row: fake.random.random() < 0.5  # a bool


def _unique_drawer(field: dict[str, Any], seed: int, chunk: int, rows: int) -> Callable[[int], Any]:
    kind = field["type"]
    size = _domain_size(field)
    permute = _permutation(size, _derived_seed(seed, field["name"], "unique"))
    if kind == "int":
        low = int(_bounds(field)[0])
        return lambda row: low + permute(chunk * rows + row)
    if kind == "float":
        start = _bounds(field)[0]
        return lambda row: round(start + permute(chunk * rows + row) / 10**FLOAT_DIGITS, FLOAT_DIGITS)
    if kind == "date":
        first = _date_bounds(field)[0]
        return lambda row: (first + dt.timedelta(days=permute(chunk * rows + row))).isoformat()
    if kind == "email":
        domains = ("example.com", "example.org", "example.net")
        return lambda row: f"user{permute(chunk * rows + row)}@{domains[(chunk * rows + row) % 3]}"
    width = int(_bounds(field)[1])
    return lambda row: _base36(permute(chunk * rows + row)).rjust(width, "0")


def _domain_size(field: dict[str, Any]) -> int:
    """How many distinct values a unique field can take."""
    kind = field["type"]
    if kind == "int":
        low, high = _bounds(field)
        return int(high) - int(low) + 1
    if kind == "float":
        low, high = _bounds(field)
        return int(math.floor((high - low) * 10**FLOAT_DIGITS)) + 1
    if kind == "date":
        first, last = _date_bounds(field)
        return (last - first).days + 1
    if kind == "email":
        return 10**12
    # string: base-36 words of exactly `max` characters
    return int(36 ** min(int(_bounds(field)[1]), 12))


def _bounds(field: dict[str, Any]) -> tuple[float, float]:
    if field["type"] == "string":
        high = float(field.get("max", 16))
        return float(field.get("min", min(8.0, high))), high
    return float(field.get("min", INT_SPAN[0])), float(field.get("max", INT_SPAN[1]))


def _date_bounds(field: dict[str, Any]) -> tuple[dt.date, dt.date]:
    return (
        dt.date.fromisoformat(str(field.get("min", DATE_MIN))),
        dt.date.fromisoformat(str(field.get("max", DATE_MAX))),
    )


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if number == 0:
            return out


def _permutation(size: int, key: int) -> Callable[[int], int]:
    """A bijection of range(size) onto itself, keyed: an affine map modulo `size`, whose multiplier is
    coprime with it. Unique values spread over the domain without remembering what was drawn."""
    if size <= 1:
        return lambda _index: 0
    multiplier = (key % size) | 1
    while math.gcd(multiplier, size) != 1:
        multiplier = (multiplier + 2) % size or 1
    offset = (key >> 32) % size
    return lambda index: (multiplier * index + offset) % size
