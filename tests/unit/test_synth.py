"""The synth command set: schema checks, chunks deterministic per seed and chunk, unique across chunks."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from jobgate.commandsets import manifest
from jobgate.commandsets.synth import SynthCommandSet
from jobgate.errors import ValidationFailed

SCHEMA = {
    "fields": [
        {"name": "id", "type": "int", "unique": True, "min": 1, "max": 1_000_000},
        {"name": "who", "type": "name"},
        {"name": "mail", "type": "email", "unique": True},
        {"name": "score", "type": "float", "min": 0, "max": 1, "nullable": True},
        {"name": "day", "type": "date", "min": "2020-01-01", "max": "2020-12-31"},
        {"name": "tier", "type": "choice", "values": ["gold", "silver"]},
        {"name": "active", "type": "bool"},
        {"name": "code", "type": "string", "unique": True, "max": 6},
    ]
}


@pytest.fixture
def schema(tmp_path: Path) -> Path:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    return path


def generate(
    folder: Path, schema: Path, chunk: int, *, rows: int = 50, seed: int = 7, ext: str = "csv"
) -> Path:
    out = folder / f"part-{seed}-{chunk}-{rows}.{ext}"
    argv = ["synth", "generate", f"--schema={schema}", f"--rows={rows}", f"--seed={seed}", f"--chunk={chunk}"]
    assert SynthCommandSet().run([*argv, f"--output={out}"]) == 0
    return out


def test_a_chunk_is_the_same_bytes_for_the_same_seed_and_chunk(tmp_path: Path, schema: Path) -> None:
    first = generate(tmp_path / "a", schema, 3).read_bytes()
    again = generate(tmp_path / "b", schema, 3).read_bytes()
    other_chunk = generate(tmp_path / "c", schema, 4).read_bytes()
    other_seed = generate(tmp_path / "d", schema, 3, seed=8).read_bytes()
    assert first == again
    assert first != other_chunk
    assert first != other_seed


def test_unique_fields_stay_unique_across_chunks_generated_apart(tmp_path: Path, schema: Path) -> None:
    rows: list[dict[str, str]] = []
    for chunk in range(8):
        with generate(tmp_path / str(chunk), schema, chunk, rows=1250).open(newline="") as f:
            rows.extend(csv.DictReader(f))
    assert len(rows) == 10_000
    for name in ("id", "mail", "code"):
        assert len({r[name] for r in rows}) == 10_000, name
    assert all(1 <= int(r["id"]) <= 1_000_000 for r in rows)
    assert {r["tier"] for r in rows} == {"gold", "silver"}
    assert {r["active"] for r in rows} == {"true", "false"}
    assert all(len(r["code"]) == 6 for r in rows)
    assert all("2020-01-01" <= r["day"] <= "2020-12-31" for r in rows)
    nulls = sum(r["score"] == "" for r in rows)
    assert 500 < nulls < 1500  # about a tenth
    assert all(0 <= float(r["score"]) <= 1 for r in rows if r["score"])


def test_jsonl_holds_typed_values_and_nulls(tmp_path: Path, schema: Path) -> None:
    lines = generate(tmp_path, schema, 0, rows=200, ext="jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 200
    assert all(isinstance(r["id"], int) and isinstance(r["active"], bool) for r in records)
    assert any(r["score"] is None for r in records)
    assert list(records[0]) == [f["name"] for f in SCHEMA["fields"]]


def test_validate_prints_each_issue_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = {
        "fields": [
            {"name": "a", "type": "int", "min": 5, "max": 1},
            {"name": "a", "type": "colour"},
            {"name": "c", "type": "choice"},
            {"name": "d", "type": "bool", "unique": True},
            {"name": "e", "type": "date", "min": "yesterday"},
        ]
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    assert SynthCommandSet().run(["synth", "validate", f"--schema={path}"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "fields[0] (a): min (5) is greater than max (1)",
        "fields[1] (a): name repeats an earlier field",
        "fields[1] (a): type must be one of int, float, string, name, email, date, choice, bool",
        "fields[2] (c): a choice needs a non-empty list of values",
        "fields[3] (d): a bool field cannot be unique (unique types: date, email, float, int, string)",
        "fields[4] (e): min and max must be ISO dates (YYYY-MM-DD): Invalid isoformat string: 'yesterday'",
    ]
    assert SynthCommandSet().run(["synth", "validate", f"--schema={path}", "--schema=x"]) == 1


def test_validate_passes_a_good_schema(schema: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert SynthCommandSet().run(["synth", "validate", f"--schema={schema}"]) == 0
    assert capsys.readouterr().out == "schema ok\n"


def test_generate_refuses_a_unique_domain_smaller_than_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "small.json"
    path.write_text(
        json.dumps({"fields": [{"name": "n", "type": "int", "unique": True, "min": 0, "max": 99}]})
    )
    argv = ["synth", "generate", f"--schema={path}", "--rows=50", "--seed=1", f"--output={tmp_path}/p.csv"]
    assert SynthCommandSet().run([*argv, "--chunk=1"]) == 0
    assert SynthCommandSet().run([*argv, "--chunk=2"]) == 2
    assert "holds 100 values, fewer than the 150 rows" in capsys.readouterr().err


def test_contracts_offer_schema_as_an_input_and_output_as_an_output() -> None:
    registry = manifest.load_manifest_registry()
    generate_contract = registry.get("synth", "generate")
    roles = {p.dest: p.role for p in generate_contract.params}
    assert roles == {
        "schema": "input",
        "rows": "value",
        "seed": "value",
        "chunk": "value",
        "output": "output",
    }
    assert generate_contract.command_set == "synth"
    assert registry.stages()["synth"] == ["generate", "validate"]
    with pytest.raises(ValidationFailed) as refused:
        registry.check("synth", "generate", {"schema": "asset://x", "rows": 0, "output": "p.csv"})
    assert any(e["loc"] == ["body", "args", "rows"] for e in refused.value.errors)


def test_jobgate_commands_lists_synth_from_the_entry_point() -> None:
    code = (
        "from importlib.metadata import entry_points\n"
        "print(sorted(ep.name for ep in entry_points(group='jobgate.command_sets')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "['merge', 'synth', 'zyra']"
