"""`jobgate run STAGE COMMAND ...`: the command's own words, read against its contract as zyra reads them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jobgate.cli import main
from jobgate.cli.output import failure_line, job_exit_code
from jobgate.cli.runner import RUN_OPTIONS
from jobgate.cli.zyra_args import (
    HelpShown,
    UsageError,
    parse_command_words,
    replace_inputs,
    split_own_options,
)
from jobgate.client.models import CommandContract, Job

from tests.unit.client_fakes import job_doc

MANIFEST = Path(__file__).resolve().parents[2] / "layers/jobgate/jobgate/manifests/zyra.json"


def contract(stage: str, command: str) -> CommandContract:
    for doc in json.loads(MANIFEST.read_text())["contracts"]:
        if (doc["stage"], doc["command"]) == (stage, command):
            return CommandContract.model_validate(doc)
    raise AssertionError(f"no {stage} {command} in the manifest")


HEATMAP = contract("visualize", "heatmap")


def parse(words: list[str], which: CommandContract = HEATMAP) -> Any:
    return parse_command_words(which, words, prog=f"jobgate run {which.stage} {which.command}")


def test_flags_options_and_lists_become_args_keyed_by_dest(tmp_path: Path) -> None:
    field = tmp_path / "local.npy"
    field.write_bytes(b"\x93NUMPY")
    parsed = parse(
        [
            f"--input={field}",
            "--output",
            "map.png",
            "--no-coastline",
            "--width",
            "640",
            "--extent",
            "-10",
            "10",
            "-5",
            "5",
        ]
    )
    assert parsed.args == {
        "input": str(field),
        "output": "map.png",
        "no_coastline": True,
        "width": 640,
        "extent": [-10.0, 10.0, -5.0, 5.0],
    }
    assert parsed.inputs == {"input": [str(field)]}


def test_local_inputs_are_replaced_by_their_asset_references(tmp_path: Path) -> None:
    field = tmp_path / "local.npy"
    field.write_bytes(b"\x93NUMPY")
    parsed = parse(["--input", str(field), "--output", "map.png"])
    args = replace_inputs(parsed.args, {str(field): "asset://01JD7Q9A1B2C3D4E5F6G7H8J9A"})
    assert args == {"input": "asset://01JD7Q9A1B2C3D4E5F6G7H8J9A", "output": "map.png"}


def test_an_asset_reference_is_passed_as_it_is() -> None:
    parsed = parse(["--input", "asset://01JD7Q9A1B2C3D4E5F6G7H8J9A", "--output", "map.png"])
    assert parsed.inputs == {}
    assert parsed.args["input"] == "asset://01JD7Q9A1B2C3D4E5F6G7H8J9A"


def test_positionals_and_repeatable_options_of_another_command() -> None:
    http = contract("acquire", "http")
    parsed = parse(["https://example.com/a.nc", "-o", "a.nc", "--header", "A: 1", "--header", "B: 2"], http)
    assert parsed.args == {"url": "https://example.com/a.nc", "output": "a.nc", "header": ["A: 1", "B: 2"]}


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["--nope"], "run visualize heatmap: unrecognized arguments: --nope"),
        (["--width", "wide"], "argument --width: invalid int value: 'wide'"),
        (["--input", "missing.npy"], "--input: no such file: missing.npy"),
        (["--output", "/tmp/map.png"], "--output: '/tmp/map.png' must be a relative path"),
        (["--output", "../map.png"], "--output: '../map.png' must be a relative path"),
    ],
)
def test_words_the_command_would_refuse_are_usage_errors(words: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse(words)


def test_help_prints_the_commands_own_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(HelpShown):
        parse(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "usage: jobgate run visualize heatmap" in text
    assert "--no-coastline" in text and "(a local file: uploaded)" in text


def test_jobgates_own_options_may_follow_the_command_unless_the_command_has_them() -> None:
    words = [
        "--input",
        "x.npy",
        "--out",
        "results",
        "--json",
        "--no-progress",
        "--timeout-s=30",
        "--",
        "--out",
    ]
    rest, own = split_own_options(words, HEATMAP, RUN_OPTIONS)
    assert own == {"--out": "results", "--json": True, "--no-progress": True, "--timeout-s": "30"}
    assert rest == ["--input", "x.npy", "--", "--out"]
    # `search api` has its own --json: it stays the command's.
    search = contract("search", "api")
    rest, own = split_own_options(["--json", "--out", "d"], search, RUN_OPTIONS)
    assert (rest, own) == (["--json"], {"--out": "d"})


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"status": "succeeded", "exit_code": 0}, 0),
        ({"status": "failed", "exit_code": 2}, 2),
        ({"status": "failed", "exit_code": None, "error": {"type": "input", "message": "gone"}}, 1),
        ({"status": "timed_out", "exit_code": None}, 124),
        # A job killed for its timeout exits as `timeout(1)` makes it, whatever its signal left.
        ({"status": "timed_out", "exit_code": 143}, 124),
        ({"status": "cancelled", "exit_code": None}, 130),
        ({"status": "cancelled", "exit_code": 143}, 130),
    ],
)
def test_a_jobs_exit_status_is_the_commands_or_says_what_ended_it(fields: dict[str, Any], code: int) -> None:
    assert job_exit_code(Job.model_validate(job_doc(**fields))) == code


def test_a_job_that_ended_without_an_exit_code_says_why_in_one_line() -> None:
    job = Job.model_validate(
        job_doc(
            status="timed_out",
            error={"type": "timeout", "message": "Killed after 5.0 s: it ran past its timeout_s."},
        )
    )
    line = failure_line(job)
    assert line is not None and "\n" not in line
    assert line.endswith("timed out: Killed after 5.0 s: it ran past its timeout_s.")


def test_usage_errors_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--limit", "many"]) == 2
    assert capsys.readouterr().err == "jobgate: list: argument --limit: invalid int value: 'many'\n"


def test_no_configured_api_exits_2_saying_how_to_configure(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("JOBGATE_URL", "JOBGATE_API_KEY", "JOBGATE_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JOBGATE_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.chdir(tmp_path)
    assert main(["list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jobgate: no API URL: pass --url, set JOBGATE_URL") and err.count("\n") == 1


def test_importing_jobgate_loads_none_of_the_clients_dependencies() -> None:
    import subprocess
    import sys

    code = (
        "import sys, jobgate; print(sorted(m for m in ('httpx', 'websockets', 'rich') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_jobgate_dev_is_handed_to_the_local_stack(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["dev", "--help"])
    assert stopped.value.code == 0
    assert "usage: jobgate dev" in capsys.readouterr().out


def test_jobgate_keys_is_handed_to_the_admin_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "--help"]) == 0
    assert "usage: jobgate keys" in capsys.readouterr().out
