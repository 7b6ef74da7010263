"""Hostile input: path escapes, flag-shaped values, oversized bodies and args, CORS, what a command writes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from jobgate.services.registry import Registry, build_argv
from jobgate.settings import Settings
from pydantic import ValidationError

from tests.security.conftest import Api, assert_problem, create_key
from tests.support.lambdas import HttpAnswer

ASSET = "01M80G82VFZG5B1Y0MBH77WVV5"
ESCAPES = ["/etc/passwd", "../outside.png", "a/../../outside.png", "~/x.png", "-x.png", "--output=/etc/x",
           "C:\\x.png", "..\\..\\x.png", "/dev/stdout", "/proc/self/environ"]  # fmt: skip


def _nothing_recorded(api: Api, key: str) -> None:
    assert api.queued_messages() == 0
    assert api.call("GET", "/v1/jobs", key).json()["items"] == []


@pytest.mark.parametrize("param", ["output", "output_dir", "basemap", "legend_file"])
def test_a_path_argument_that_leaves_the_work_folder_is_a_422(api: Api, param: str) -> None:
    key = create_key("acme")
    for value in ESCAPES:
        args = {"output": "map.png", param: value} if param != "output" else {"output": value}
        body = {"stage": "visualize", "command": "heatmap", "args": args}
        problem = assert_problem(api.call("POST", "/v1/jobs", key, body=body), 422, "validation")
        assert ["body", "args", param] in [e["loc"] for e in problem["errors"]], value
    _nothing_recorded(api, key)


@pytest.mark.parametrize(
    "value", ["/etc/passwd", "../field.npy", "file:///etc/passwd", f"asset://../{ASSET}"]
)
def test_an_input_must_be_an_uploaded_asset(api: Api, value: str) -> None:
    key = create_key("acme")
    body = {"stage": "visualize", "command": "heatmap", "args": {"input": value, "output": "m.png"}}
    problem = assert_problem(api.call("POST", "/v1/jobs", key, body=body), 422, "validation")
    assert problem["errors"][0]["loc"] == ["body", "args", "input"]
    _nothing_recorded(api, key)


@pytest.mark.parametrize("filename", ["../../etc/passwd", "/etc/passwd", "a/b.npy", "..", ".", "a\\b.npy",
                                      "x\x00.npy", "x\n.npy"])  # fmt: skip
def test_an_asset_file_name_with_a_path_is_a_422(api: Api, filename: str) -> None:
    key = create_key("acme")
    body = {"filename": filename, "media_type": "application/x-npy", "size": 10}
    problem = assert_problem(api.call("POST", "/v1/uploads", key, body=body), 422, "validation")
    assert problem["errors"][0]["loc"] == ["body", "filename"]
    assert api.call("GET", "/v1/assets", key).json()["items"] == []


@pytest.mark.zyra
def test_flag_shaped_values_reach_zyra_as_values() -> None:
    from jobgate.commandsets.zyra import ZyraCommandSet

    from tests.unit.test_zyra_contracts import zyra_parse

    registry = Registry.from_command_sets([ZyraCommandSet()])
    inv = registry.check(
        "acquire",
        "http",
        {"url": "--output=/etc/passwd", "output": "x.bin", "pattern": "--output=/etc/y", "since": "-V"},
    )
    ns = zyra_parse(build_argv(inv.args, inv.contract, {}))
    assert ns.output == "x.bin"
    assert (ns.url, ns.pattern, ns.since) == ("--output=/etc/passwd", "--output=/etc/y", "-V")


# -- sizes ------------------------------------------------------------------------------------------


def _raw_call(api: Api, body: bytes, headers: dict[str, str]) -> HttpAnswer:
    return api.call(
        "POST", "/v1/jobs", None, body=body, headers={"content-type": "application/json", **headers}
    )


def _job_body(size: int) -> bytes:
    """A valid job request padded with spaces to exactly `size` bytes."""
    body = json.dumps({"stage": "visualize", "command": "heatmap", "args": {"output": "map.png"}}).encode()
    return body + b" " * (size - len(body))


def test_a_body_over_the_limit_is_a_413_by_its_content_length(api_with: Callable[..., Api]) -> None:
    api = api_with(max_body_bytes="4096")
    key = create_key("acme")
    answer = _raw_call(api, _job_body(4097), {"X-API-Key": key, "content-length": "4097"})
    problem = assert_problem(answer, 413, "payload-too-large")
    assert problem["limit"] == 4096
    assert api.queued_messages() == 0
    assert _raw_call(api, _job_body(4096), {"X-API-Key": key}).status == 202


def test_a_body_that_understates_its_length_is_a_413_by_its_bytes(api_with: Callable[..., Api]) -> None:
    api = api_with(max_body_bytes="4096")
    key = create_key("acme")
    answer = _raw_call(api, _job_body(100_000), {"X-API-Key": key, "content-length": "10"})
    assert_problem(answer, 413, "payload-too-large")
    assert api.queued_messages() == 0


def test_args_over_the_limit_are_a_422(api_with: Callable[..., Api]) -> None:
    api = api_with(max_args_bytes="1024")
    key = create_key("acme")
    labels = {"output": "map.png", "label": "x" * 1100}
    body = {"stage": "visualize", "command": "heatmap", "args": labels}
    problem = assert_problem(api.call("POST", "/v1/jobs", key, body=body), 422, "validation")
    assert problem["errors"][0]["loc"] == ["body", "args"]
    too_long = {"output": "map.png", "label": "x" * 5000}  # one value past the per-value limit
    body = {"stage": "visualize", "command": "heatmap", "args": too_long}
    assert_problem(api.call("POST", "/v1/jobs", key, body=body), 422, "validation")
    _nothing_recorded(api, key)


# -- CORS -------------------------------------------------------------------------------------------


def _preflight(api: Api, origin: str) -> HttpAnswer:
    headers = {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "x-api-key",
    }
    return api.call("OPTIONS", "/v1/jobs", None, headers=headers)


def test_cors_answers_only_the_configured_origins(api_with: Callable[..., Api]) -> None:
    api = api_with(cors_origins="https://app.example.org,https://ops.example.org")
    allowed = _preflight(api, "https://app.example.org")
    assert allowed.status == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.org"
    assert "access-control-allow-credentials" not in allowed.headers
    refused = _preflight(api, "https://evil.example.com")
    assert "access-control-allow-origin" not in refused.headers
    simple = api.call("GET", "/health/live", None, headers={"origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in simple.headers


def test_without_cors_origins_no_cors_headers_are_sent(api: Api) -> None:
    answer = api.call("GET", "/health/live", None, headers={"origin": "https://app.example.org"})
    assert answer.status == 200
    assert not any(h.startswith("access-control-") for h in answer.headers)


def test_a_wildcard_origin_with_credentials_fails_the_cold_start() -> None:
    base: dict[str, Any] = {"table_name": "t", "queue_url": "q", "bucket_name": "b"}
    with pytest.raises(ValidationError, match="cannot be '\\*'"):
        Settings(**base, cors_origins="*", cors_allow_credentials=True)
    assert Settings(**base, cors_origins="*").cors_origins == ("*",)  # without credentials it may


def test_a_streamed_body_is_cut_off_once_it_passes_the_limit() -> None:
    # Behind uvicorn (`make dev`) a body arrives in chunks with no Content-Length: the middleware
    # stops reading at the limit, and the route never runs.
    import asyncio

    from jobgate.api.middleware import BodySizeLimit

    reached: list[bool] = []
    read_chunks: list[int] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(True)

    async def receive() -> dict[str, Any]:
        read_chunks.append(1)
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}  # an endless stream

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/jobs", "headers": [], "query_string": b""}
    asyncio.run(BodySizeLimit(app, max_bytes=4096)(scope, receive, send))
    assert not reached
    assert len(read_chunks) == 5  # 5000 bytes read, then it stopped
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["type"] == "urn:jobgate:problem:payload-too-large"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"stage": "visualize", ', "application/json"),  # cut short
        (b"stage=visualize&command=heatmap", "application/x-www-form-urlencoded"),
        (b"{'stage': 'visualize'}", "application/json"),  # Python, not JSON
        (b"stage: visualize\n", "text/plain"),
    ],
)
def test_a_body_that_is_not_json_is_a_400_as_docs_api_says(api: Api, body: bytes, content_type: str) -> None:
    key = create_key("acme")
    answer = api.call("POST", "/v1/jobs", key, body=body, headers={"content-type": content_type})
    problem = assert_problem(answer, 400, "bad-request")
    assert problem["detail"].startswith("The body is not JSON")
    _nothing_recorded(api, key)


def test_json_of_the_wrong_shape_is_still_a_422_naming_the_field(api: Api) -> None:
    key = create_key("acme")
    answer = api.call("POST", "/v1/jobs", key, body=[1, 2])
    assert_problem(answer, 422, "validation")
