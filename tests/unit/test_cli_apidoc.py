"""docs/api.md from the OpenAPI schema, and the check CI runs to keep it (and docs/deploy.md) current."""

from __future__ import annotations

from pathlib import Path

import pytest
from jobgate.cli import apidoc


@pytest.fixture(scope="module")
def schema() -> dict[str, object]:
    return apidoc.openapi_schema()


def test_every_operation_of_the_schema_is_documented(schema: dict[str, object]) -> None:
    text = apidoc.render(schema)  # type: ignore[arg-type]
    paths: dict[str, dict[str, object]] = schema["paths"]  # type: ignore[assignment]
    for path, item in paths.items():
        for method in item:
            assert f"### {method.upper()} {path}\n" in text
    assert "| `limit` | query | integer |  | (>= 1; <= 100; default `20`) |" in text
    assert '<a id="schema-jobrequest"></a>' in text and "[JobRequest](#schema-jobrequest)" in text


def test_the_document_does_not_depend_on_this_machines_settings(
    schema: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBGATE_CORS_ORIGINS", "https://app.example.com")
    monkeypatch.setenv("JOBGATE_EGRESS_ALLOW", "not a host!")  # a function would refuse to start
    assert apidoc.render(apidoc.openapi_schema()) == apidoc.render(schema)  # type: ignore[arg-type]


def test_check_fails_on_a_stale_file_and_passes_once_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "api.md"
    target.write_text("# an old version\n")
    assert apidoc.main(["--check", str(target)]) == 1
    assert "api.md is stale" in capsys.readouterr().err
    assert apidoc.main([str(target)]) == 0
    assert apidoc.main(["--check", str(target)]) == 0


def test_the_template_parameters_the_deploy_guide_must_explain(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(
        "Parameters:\n  ApiKey:\n    Type: String\n  LogLevel:\n    Default: INFO\n"
        "Conditions:\n  Jwt: !Equals [a, b]\nResources:\n  Table:\n    Type: X\n"
    )
    assert apidoc.template_parameters(template.read_text()) == ["ApiKey", "LogLevel"]
    guide = tmp_path / "deploy.md"
    guide.write_text("| `ApiKey` | the key |\n")
    assert apidoc.undocumented_parameters(template, guide) == ["LogLevel"]


def test_the_websocket_section_comes_from_the_asyncapi_document(schema: dict[str, object]) -> None:
    asyncapi = apidoc.asyncapi_document(Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml")
    assert asyncapi is not None
    text = apidoc.render(schema, asyncapi)  # type: ignore[arg-type]
    section = text[text.index("## WebSocket\n") : text.index("## Schemas\n")]
    assert 'wscat -c "ws://127.0.0.1:8001/?api_key=$KEY"' in section
    for message in asyncapi["components"]["messages"].values():  # type: ignore[index]
        assert f"- `{message['name']}` (" in section
    assert '<a id="schema-ws-logevent"></a>' in section and "[Seq](#schema-ws-seq)" in section
    assert "## WebSocket" not in apidoc.render(schema)  # type: ignore[arg-type]
