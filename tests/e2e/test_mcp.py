"""`jobgate mcp` as an agent meets it: the MCP SDK's own client, against the local stack.

Over stdio the server is a subprocess (the `jobgate` console script) with the stack's URL and key in
its environment; over streamable HTTP it listens on a free port. Each tool call goes to the stack
over real HTTP and WebSocket, and each job runs a real zyra command on data the test makes.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from jobgate.client import Client as JobgateClient
from jobgate_local.testing import DevProcess
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.e2e.test_cli import environment, jobgate_command

pytestmark = [pytest.mark.e2e, pytest.mark.zyra, pytest.mark.anyio]

JOB_TOOLS = {"jobgate_status", "jobgate_logs", "jobgate_outputs", "jobgate_cancel", "jobgate_upload"}
PNG = b"\x89PNG\r\n\x1a\n"
FLAGS = {"no_coastline": True, "no_borders": True, "no_gridlines": True}
SCHEMA = {
    "fields": [
        {"name": "id", "type": "int", "unique": True, "min": 1, "max": 1000},
        {"name": "who", "type": "name"},
    ]
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def stdio_session(stack: DevProcess, home: Path) -> AsyncIterator[Client]:
    command, *args = jobgate_command()
    server = StdioServerParameters(
        command=command, args=[*args, "mcp"], env=environment(stack, home), cwd=str(home)
    )
    async with Client(server, read_timeout_seconds=120) as client:
        yield client


async def test_stdio_lists_a_tool_per_command_whose_schema_is_its_contract(
    local_stack: DevProcess, tmp_path: Path
) -> None:
    async with stdio_session(local_stack, tmp_path) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    with JobgateClient(local_stack.http_url, local_stack.api_key) as jobgate:
        listed = jobgate.commands()
        heatmap = jobgate.command("visualize", "heatmap")
    assert {f"{item.stage}_{item.command}" for item in listed.items} <= set(tools)
    assert JOB_TOOLS <= set(tools)
    schema = tools["visualize_heatmap"].input_schema
    assert set(schema["properties"]) == {p.dest for p in heatmap.params}
    assert schema["additionalProperties"] is False
    by_dest = {p.dest: p for p in heatmap.params}
    assert schema["properties"]["no_coastline"]["type"] == "boolean" == by_dest["no_coastline"].type
    assert schema["properties"]["extent"]["type"] == "array"
    assert schema["properties"]["extent"]["items"]["type"] == "number"
    assert schema["properties"]["input"]["type"] == "string"
    assert "asset://" in schema["properties"]["input"]["description"]


async def test_stdio_upload_then_heatmap_reports_progress_and_answers_a_link_that_downloads(
    local_stack: DevProcess, tmp_path: Path, npy_file: Path
) -> None:
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async with stdio_session(local_stack, tmp_path) as client:
        uploaded = await client.call_tool("jobgate_upload", {"path": str(npy_file)})
        assert not uploaded.is_error, uploaded.content
        ref = uploaded.structured_content["ref"]
        assert ref.startswith("asset://")
        result = await client.call_tool(
            "visualize_heatmap",
            {"input": ref, "output": "map.png", **FLAGS},
            progress_callback=on_progress,
        )
        assert not result.is_error, result.content
        done = result.structured_content
        status = await client.call_tool("jobgate_status", {"job_id": done["job_id"]})
        logs = await client.call_tool("jobgate_logs", {"job_id": done["job_id"], "tail_chars": 50})

    assert done["status"] == "succeeded" and done["exit_code"] == 0
    assert isinstance(done["stdout"], str) and isinstance(done["stderr"], str)
    [output] = done["outputs"]
    assert output["name"] == "map.png" and output["media_type"] == "image/png"
    picture = httpx.get(output["url"], timeout=30)
    assert picture.status_code == 200 and picture.content.startswith(PNG)
    assert output["url"] in result.content[0].text
    [shown] = [c for c in result.content if c.type == "image"]  # the model sees the picture itself
    assert (shown.mime_type, base64.b64decode(shown.data)) == ("image/png", picture.content)
    assert status.structured_content["status"] == "succeeded"
    assert not logs.is_error and len(logs.structured_content["stderr"]) <= 50
    # Progress rises from the submission to the end, with the job's status as the message.
    values = [value for value, _, _ in progress]
    assert len(values) >= 2 and values == sorted(set(values)), progress
    assert values[-1] == 1.0 and all(total == 1.0 for _, total, _ in progress)
    assert progress[-1][2] == "succeeded", progress


async def test_stdio_bad_argument_and_failed_job_are_error_results(
    local_stack: DevProcess, tmp_path: Path
) -> None:
    broken = tmp_path / "schema.json"
    broken.write_text(json.dumps({"fields": [{"name": "id", "type": "no-such-type"}]}))
    async with stdio_session(local_stack, tmp_path) as client:
        uploaded = await client.call_tool("jobgate_upload", {"path": str(broken)})
        ref = uploaded.structured_content["ref"]
        # The schema takes any string for an output; the API's contract check refuses one that leaves
        # the work folder (422), and the server answers its detail as an error, then goes on serving.
        refused = await client.call_tool(
            "synth_generate", {"schema": ref, "rows": 3, "output": "../part.csv"}
        )
        failed = await client.call_tool("synth_validate", {"schema": ref})
        unknown = await client.call_tool("jobgate_status", {"job_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV"})
        missing = await client.call_tool("jobgate_upload", {"path": str(tmp_path / "absent.npy")})
    assert refused.is_error
    assert refused.structured_content["error"]["status"] == 422
    assert "output" in refused.content[0].text and "work folder" in refused.content[0].text
    # A job that ran and failed: its exit code and stdout say why.
    assert failed.is_error
    assert failed.structured_content["status"] == "failed"
    assert failed.structured_content["exit_code"] == 1
    assert "type must be one of" in failed.structured_content["stdout"]
    assert unknown.is_error and unknown.structured_content["error"]["status"] == 404
    assert missing.is_error and "absent.npy" in missing.content[0].text


def serve_http(
    stack: DevProcess, home: Path, *options: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [*jobgate_command(), "mcp", "--transport", "http", "--port", str(port), *options],
        env=env or environment(stack, home),
        cwd=home,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def http_server(local_stack: DevProcess, tmp_path: Path) -> Iterator[str]:
    yield from serve_http(local_stack, tmp_path)


@pytest.fixture
def caller_keys_server(local_stack: DevProcess, tmp_path: Path) -> Iterator[str]:
    """The server holds no key: JOBGATE_URL only."""
    env = {k: v for k, v in environment(local_stack, tmp_path).items() if k != "JOBGATE_API_KEY"}
    yield from serve_http(local_stack, tmp_path, "--caller-keys", env=env)


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.stderr.read().decode() if process.stderr else "exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"jobgate mcp did not listen on {port}")


async def test_streamable_http_lists_tools_and_runs_a_command(
    http_server: str, local_stack: DevProcess, tmp_path: Path
) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    with JobgateClient(local_stack.http_url, local_stack.api_key) as jobgate:
        asset = jobgate.upload(schema)
    progress: list[tuple[float, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, message))

    async with Client(http_server, read_timeout_seconds=120) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        result = await client.call_tool(
            "synth_generate",
            {"schema": asset.ref, "rows": 5, "seed": 7, "output": "part.csv"},
            progress_callback=on_progress,
        )
    assert "visualize_heatmap" in names and "jobgate_status" in names
    # A path of the server's machine means nothing to a caller over HTTP.
    assert "jobgate_upload" not in names
    assert not result.is_error, result.content
    assert result.structured_content["exit_code"] == 0
    [output] = result.structured_content["outputs"]
    rows = httpx.get(output["url"], timeout=30).text.splitlines()
    assert rows[0].split(",")[0] == "id" and len(rows) == 6
    # Progress notifications reach an HTTP caller too (on the call's SSE stream).
    assert progress and progress[-1] == (1.0, "succeeded"), progress


async def test_with_caller_keys_each_http_caller_brings_its_own_key(
    caller_keys_server: str, local_stack: DevProcess
) -> None:
    # No key: refused before any MCP session is made.
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    bare = httpx.post(caller_keys_server, json=initialize, headers={"Accept": "application/json"}, timeout=10)
    assert bare.status_code == 401 and bare.headers["www-authenticate"] == "Bearer"

    async def with_key(key: str) -> Client:
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
        return Client(streamable_http_client(caller_keys_server, http_client=http), read_timeout_seconds=60)

    async with await with_key(local_stack.api_key) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        unknown = await client.call_tool("jobgate_status", {"job_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV"})
    assert "visualize_heatmap" in names
    assert unknown.is_error and unknown.structured_content["error"]["status"] == 404
    # A key jobgate does not know: the API's own answer, passed on.
    async with await with_key("not-a-key-of-this-stack") as client:
        with pytest.raises(MCPError) as refused:
            await client.list_tools()
    assert "401" in refused.value.message or "Unauthorized" in refused.value.message
