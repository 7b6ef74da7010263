"""Secrets for commands: the operator's map, and masking what a command prints of them."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from jobgate.errors import SecretUnavailable
from jobgate.services.executor import execute
from jobgate.services.registry import CommandContract, Registry
from jobgate.services.secrets import CommandSecrets, Redactor, masked_parts, parse_secret_map
from jobgate.settings import Settings

SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:jobgate/token-AbCdEf"
PARAMETER_ARN = "arn:aws:ssm:us-east-1:123456789012:parameter/jobgate/key"


def test_the_map_names_secrets_by_arn() -> None:
    assert parse_secret_map(f"DATA_TOKEN={SECRET_ARN}, KEY={PARAMETER_ARN}\n") == {
        "DATA_TOKEN": SECRET_ARN,
        "KEY": PARAMETER_ARN,
    }
    assert parse_secret_map("") == {}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"data_token={SECRET_ARN}", "not a secret name"),
        (f"PATH={SECRET_ARN}", "the worker sets itself"),
        (f"AWS_SECRET_ACCESS_KEY={SECRET_ARN}", "the worker sets itself"),
        ("TOKEN=jobgate/token", "not the ARN"),
        ("TOKEN=arn:aws:s3:::bucket/key", "not the ARN"),
        (f"TOKEN={SECRET_ARN},TOKEN={PARAMETER_ARN}", "mapped twice"),
    ],
)
def test_a_bad_map_fails_at_cold_start(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Settings(table_name="t", queue_url="q", bucket_name="b", command_secrets=text)


def test_a_command_set_declares_secrets_for_all_its_commands() -> None:
    class Keyed:
        name = "keyed"
        secrets = ["SHARED"]

        def contracts(self) -> list[CommandContract]:
            return [
                CommandContract(command_set="keyed", stage="k", command="a", secrets=["OWN"]),
                CommandContract(command_set="keyed", stage="k", command="b"),
            ]

        def warm(self) -> None: ...

        def run(self, argv: list[str]) -> int:
            return 0

    registry = Registry.from_command_sets([Keyed()])
    assert registry.get("k", "a").secrets == ["OWN", "SHARED"]
    assert registry.get("k", "b").secrets == ["SHARED"]


def test_resolving_an_unmapped_secret_names_it_and_nothing_else() -> None:
    secrets = CommandSecrets({"TOKEN": SECRET_ARN})
    assert secrets.resolve([]) == {}
    with pytest.raises(SecretUnavailable, match="'OTHER' is not configured"):
        secrets.resolve(["OTHER"])


def test_masking_holds_back_only_what_could_start_a_secret() -> None:
    redactor = Redactor([b"s3cr3t-value"])
    out = [
        redactor.feed(b"line one\nthe key is s3cr"),
        redactor.feed(b"3t-value, done\nnext s3"),
        redactor.flush(),
    ]
    assert out == [b"line one\nthe key is ", b"***, done\nnext ", b"s3"]
    assert b"".join(out) == b"line one\nthe key is ***, done\nnext s3"


def test_a_secret_split_over_every_byte_never_gets_out() -> None:
    secret = b"correct-horse-battery"
    text = b"before " + secret + b" middle " + secret + b" after"
    redactor = Redactor([secret])
    out = b"".join(redactor.feed(text[i : i + 1]) for i in range(len(text))) + redactor.flush()
    assert out == b"before *** middle *** after"


def test_the_strings_of_a_json_secret_are_masked_too() -> None:
    parts = masked_parts(
        ['{"username": "svc-reader", "password": "hunter2hunter2", "port": 5432, "x": "ab"}']
    )
    assert b"svc-reader" in parts and b"hunter2hunter2" in parts
    assert b"ab" not in parts  # too short to mask on its own


def _print_secret_in_pieces(argv: list[str]) -> int:
    value = os.environ["TOKEN"]
    for i in range(0, len(value), 3):
        sys.stdout.write(value[i : i + 3])
        sys.stdout.flush()
        time.sleep(0.02)
    sys.stdout.write("\n")
    sys.stderr.write(f"error: bad token {value}\n")
    return 0


def test_the_executor_masks_a_secret_the_command_prints_in_pieces(tmp_path: Path) -> None:
    secret = "tok-0123456789abcdef"
    chunks: list[tuple[str, bytes]] = []
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = execute(
        _print_secret_in_pieces,
        [],
        workdir=workdir,
        env={"PATH": "/usr/bin:/bin", "TOKEN": secret},
        timeout_s=10,
        stdout_path=tmp_path / "stdout",
        stderr_path=tmp_path / "stderr",
        on_output=lambda name, chunk: chunks.append((name, chunk)),
        redact=(secret.encode(),),
    )
    assert result.exit_code == 0
    assert (tmp_path / "stdout").read_bytes() == b"***\n"
    assert (tmp_path / "stderr").read_bytes() == b"error: bad token ***\n"
    assert len([c for name, c in chunks if name == "stdout"]) > 1  # it did arrive in pieces
    assert secret.encode() not in b"".join(c for _, c in chunks)
