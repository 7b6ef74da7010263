"""`jobgate mcp` on the command line: handed over by `jobgate`, and a clear line when no API is named."""

from __future__ import annotations

from pathlib import Path

import pytest
from jobgate.cli import main
from jobgate.mcp.callers import api_key_of


def test_jobgate_mcp_is_handed_to_the_mcp_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mcp", "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: jobgate mcp" in out and "--transport {stdio,http}" in out


def test_jobgate_help_lists_mcp(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "serve the API's commands as MCP tools" in capsys.readouterr().out


def test_no_api_named_anywhere_exits_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("JOBGATE_URL", "JOBGATE_API_KEY", "JOBGATE_PROFILE", "JOBGATE_WS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JOBGATE_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.chdir(tmp_path)  # no .jobgate/dev.json here or above
    assert main(["mcp"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jobgate mcp: ") and err.count("\n") == 1


def test_a_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mcp", "--transport", "carrier-pigeon"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_caller_keys_is_for_http_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mcp", "--caller-keys", "--url", "http://api.test"]) == 2
    assert main(["mcp", "--transport", "http", "--caller-keys", "--api-key", "k", "--url", "http://x"]) == 2
    assert capsys.readouterr().err.count("--caller-keys is for --transport http") == 2


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({"authorization": "Bearer abc123"}, "abc123"),
        ({"authorization": "bearer  abc123 "}, "abc123"),
        ({"x-api-key": "abc123"}, "abc123"),
        ({"authorization": "Basic dXNlcjpwdw==", "x-api-key": "abc123"}, "abc123"),
        ({"authorization": "Bearer "}, None),
        ({}, None),
    ],
)
def test_a_callers_key_is_its_bearer_token_or_x_api_key(headers: dict[str, str], key: str | None) -> None:
    assert api_key_of(headers) == key
