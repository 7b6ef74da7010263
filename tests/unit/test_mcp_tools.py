"""jobgate mcp's command tools against an in-process API: progress as the job goes, and a call the
caller gives up on cancels its job. The MCP side is the SDK's own client, connected in-process."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anyio
import httpx
import pytest
from jobgate.client import AsyncClient
from jobgate.mcp.server import build_server
from jobgate.mcp.tools import JobgateTools
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.unit.client_fakes import API, JOB_ID, KEY, job_doc, problem

pytestmark = pytest.mark.anyio

CONTRACT = {
    "command_set": "synth",
    "stage": "synth",
    "command": "generate",
    "summary": "write one chunk of rows",
    "params": [
        {"dest": "rows", "flags": ["--rows"], "kind": "option", "type": "integer", "required": True},
        {"dest": "output", "flags": ["--output"], "kind": "option", "role": "output", "required": True},
    ],
}
ARGS = {"rows": 5, "output": "part.csv"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeAPI:
    """Answers like jobgate for one job; its events come in the pages given, then none (the job runs on)."""

    def __init__(self, pages: list[dict[str, Any]], final: dict[str, Any], *, catalog: bool = True) -> None:
        self.catalog = catalog  # answers ?contracts=true (a deployment older than it does not)
        self.pages = list(pages)
        self.final = final
        self.seen: list[str] = []
        self.submitted: list[dict[str, Any]] = []
        self.polling = anyio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        path = request.url.path
        self.seen.append(f"{request.method} {path}")
        if path == "/v1/commands":
            with_contracts = self.catalog and request.url.params.get("contracts") == "true"
            item = {**CONTRACT, "contract": CONTRACT} if with_contracts else CONTRACT
            return httpx.Response(200, json={"stages": {"synth": ["generate"]}, "items": [item]})
        if path == "/v1/commands/synth/generate":
            return httpx.Response(200, json=CONTRACT)
        if request.method == "POST" and path == "/v1/jobs":
            self.submitted.append(json.loads(request.content))
            return httpx.Response(202, json=job_doc(stage="synth", command="generate"))
        if request.method == "DELETE":
            return httpx.Response(202, json=job_doc(status="cancelled", cancel_requested=True))
        if path == f"/v1/jobs/{JOB_ID}/events":
            return await self._events()
        if path == f"/v1/jobs/{JOB_ID}/outputs":
            return httpx.Response(200, json={"items": self.final.get("outputs", []), "next_cursor": None})
        if path == f"/v1/jobs/{JOB_ID}":
            done = not self.pages and self.final["status"] != "running"
            return httpx.Response(200, json=self.final if done else job_doc(status="running", progress=0.1))
        return httpx.Response(404, json={"title": "Not Found", "status": 404})

    async def _events(self) -> httpx.Response:
        if self.pages:
            return httpx.Response(200, json=self.pages.pop(0))
        self.polling.set()
        await asyncio.sleep(0.05)  # the long poll's wait, short
        return httpx.Response(200, json={"events": [], "next_after_seq": 9, "done": False})


def tools_for(api: FakeAPI) -> tuple[JobgateTools, AsyncClient]:
    client = AsyncClient(API, KEY, transport=httpx.MockTransport(api))
    return JobgateTools(client, uploads=False), client


def event(seq: int, kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "job_id": JOB_ID, "seq": seq, **fields}


async def test_progress_rises_with_the_job_and_the_last_notification_says_how_it_ended() -> None:
    output = {"name": "part.csv", "size": 40, "media_type": "text/csv", "url": "http://s3.test/part.csv"}
    final = job_doc(
        status="succeeded", exit_code=0, progress=1.0, stdout="5 rows\n", outputs=[output], output_count=1
    )
    pages = [
        {
            "events": [event(1, "status", status="running"), event(2, "progress", progress=0.5)],
            "next_after_seq": 2,
        },
        # A command may say 100% before its outputs are uploaded; the job has not ended yet.
        {"events": [event(3, "progress", progress=1.0)], "next_after_seq": 3},
        {"events": [event(4, "status", status="succeeded", exit_code=0)], "next_after_seq": 4, "done": True},
    ]
    api = FakeAPI(pages, final)
    tools, client = tools_for(api)
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        seen.append((value, total, message))

    async with client, Client(build_server(tools)) as mcp:
        result = await mcp.call_tool("synth_generate", ARGS, progress_callback=on_progress)

    assert not result.is_error, result.content
    assert result.structured_content["outputs"] == [output]
    assert result.structured_content["stdout"] == "5 rows\n"
    assert api.submitted[0]["args"] == ARGS
    # queued at the submission, the job as the watch began (running, 10%), its events, how it ended.
    assert seen == [
        (0.0, 1.0, "queued"),
        (0.1, 1.0, "running"),
        (0.5, 1.0, "running"),
        (0.99, 1.0, "running"),
        (1.0, 1.0, "succeeded"),
    ]


async def test_a_call_given_up_by_its_caller_cancels_the_job() -> None:
    api = FakeAPI([], job_doc(status="running"))
    tools, client = tools_for(api)
    async with client, Client(build_server(tools)) as mcp:
        async with anyio.create_task_group() as group:

            async def call() -> None:
                await mcp.call_tool("synth_generate", ARGS)

            group.start_soon(call)
            with anyio.fail_after(10):
                await api.polling.wait()  # the job is being followed
            group.cancel_scope.cancel()
        with anyio.fail_after(10):
            while f"DELETE /v1/jobs/{JOB_ID}" not in api.seen:
                await anyio.sleep(0.02)
    assert api.seen.count(f"DELETE /v1/jobs/{JOB_ID}") == 1


async def test_a_job_that_failed_is_an_error_result_with_its_exit_code() -> None:
    error = {"type": "exit_nonzero", "message": "the command exited with 1"}
    final = job_doc(status="failed", exit_code=1, stderr="bad schema\n", error=error)
    pages = [
        {"events": [event(1, "status", status="failed", exit_code=1)], "next_after_seq": 1, "done": True}
    ]
    tools, client = tools_for(FakeAPI(pages, final))
    async with client, Client(build_server(tools)) as mcp:
        result = await mcp.call_tool("synth_generate", ARGS)
    assert result.is_error
    assert result.structured_content["exit_code"] == 1
    assert result.structured_content["error"] == error
    assert "failed with exit code 1: the command exited with 1" in result.content[0].text
    assert "bad schema" in result.content[0].text


async def test_a_job_with_many_outputs_lists_the_first_and_says_how_many_more() -> None:
    outputs = [
        {"name": f"frames/{i:04d}.png", "size": 9, "media_type": "image/png", "url": f"http://s3.test/{i}"}
        for i in range(150)
    ]
    final = job_doc(status="succeeded", exit_code=0, outputs=outputs[:10], output_count=150)
    pages = [
        {"events": [event(1, "status", status="succeeded", exit_code=0)], "next_after_seq": 1, "done": True}
    ]
    tools, client = tools_for(FakeAPI(pages, {**final, "outputs": outputs}))
    async with client, Client(build_server(tools)) as mcp:
        result = await mcp.call_tool("synth_generate", ARGS)
    assert not result.is_error
    assert [o["name"] for o in result.structured_content["outputs"]] == [o["name"] for o in outputs[:100]]
    assert result.structured_content["outputs_truncated"] is True
    assert "50 more: jobgate_outputs lists them all" in result.content[0].text


async def test_a_job_tool_with_a_bad_argument_answers_an_error_and_asks_nothing() -> None:
    api = FakeAPI([], job_doc(status="running"))
    tools, client = tools_for(api)
    async with client, Client(build_server(tools)) as mcp:
        bad_tail = await mcp.call_tool("jobgate_logs", {"job_id": JOB_ID, "tail_chars": "all"})
        no_id = await mcp.call_tool("jobgate_status", {})
        listed = await mcp.list_tools()
    assert bad_tail.is_error and "tail_chars" in bad_tail.content[0].text
    assert no_id.is_error and "job_id" in no_id.content[0].text
    assert f"GET /v1/jobs/{JOB_ID}/logs" not in api.seen
    # Over a transport that reads no local files for its caller, there is no upload tool.
    assert "jobgate_upload" not in {tool.name for tool in listed.tools}


async def test_listing_the_tools_with_a_refused_key_says_why() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return problem(401, "unauthorized", "The API key is unknown or revoked.")

    client = AsyncClient(API, KEY, transport=httpx.MockTransport(refuse))
    async with client, Client(build_server(JobgateTools(client, uploads=True))) as mcp:
        with pytest.raises(MCPError) as refused:
            await mcp.list_tools()
        # The server goes on: a call answers the same reason as its result.
        called = await mcp.call_tool("jobgate_status", {"job_id": JOB_ID})
    assert "The API key is unknown or revoked." in refused.value.message
    assert called.is_error and called.structured_content["error"]["status"] == 401


async def test_a_status_the_schema_does_not_list_passes_the_clients_check() -> None:
    # A pipeline step waiting for its upstream steps is `blocked`; a newer API may add statuses.
    tools, client = tools_for(FakeAPI([], job_doc(status="blocked")))
    async with client, Client(build_server(tools)) as mcp:
        status = await mcp.call_tool("jobgate_status", {"job_id": JOB_ID})
    assert not status.is_error and status.structured_content["status"] == "blocked"


@pytest.mark.parametrize("catalog", [True, False])
async def test_the_tools_come_from_one_catalog_request_or_one_request_per_command(catalog: bool) -> None:
    api = FakeAPI([], job_doc(status="running"), catalog=catalog)
    tools, client = tools_for(api)
    async with client, Client(build_server(tools)) as mcp:
        listed = await mcp.list_tools()
    assert "synth_generate" in {tool.name for tool in listed.tools}
    per_command = ["GET /v1/commands/synth/generate"] if not catalog else []
    assert api.seen == ["GET /v1/commands", *per_command]
