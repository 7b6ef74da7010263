"""The MCP tools of one jobgate deployment: a tool per command, and the tools that look after jobs.

Every call goes through `jobgate.client.AsyncClient`; nothing here speaks HTTP itself. A tool's
answer is an MCP `CallToolResult`: structured content for programs, a text summary for models, and
`isError` when the job did not succeed or the API refused the request. Nothing the API answers
raises out of a tool: the caller reads the problem in the result.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types

from jobgate.client import AsyncClient
from jobgate.client._core import new_run_id
from jobgate.client.errors import JobgateAPIError, JobgateClientError
from jobgate.client.models import CommandContract, Job, JobEvent, Output
from jobgate.mcp.schema import (
    JOB_SCHEMA,
    OUTPUT_SCHEMA,
    RESULT_SCHEMA,
    TOOL_NAME_RE,
    input_schema,
    tool_description,
    tool_name,
)

# stdout is the protocol on the stdio transport: the server logs on stderr (the CLI sets it up).
logger = logging.getLogger("jobgate.mcp")

# How much of a log a tool answers, from its end: a model reads the tail, the whole log stays a
# jobgate_logs call (or `jobgate logs`) away.
LOG_TAIL_CHARS = 20_000
# Outputs a command tool lists (a job may write thousands of frames); jobgate_outputs lists them all.
OUTPUTS_LISTED = 100
# Pictures a command tool answers as image content too, so a model sees what the job drew: the first
# few PNG or JPEG outputs, each no larger than this (the rest stay links).
PICTURES_SHOWN = 4
PICTURE_MAX_BYTES = 1024 * 1024
PICTURE_TYPES = frozenset({"image/png", "image/jpeg"})
# Contracts fetched at once when a deployment lists commands without them (one GET each).
CONTRACT_FETCHES = 8

# The most progress a job that has not ended is reported at.
RUNNING_MAX = 0.99

Report = Callable[[float, str | None], Awaitable[None]]

STATUS_TOOL = "jobgate_status"
LOGS_TOOL = "jobgate_logs"
OUTPUTS_TOOL = "jobgate_outputs"
CANCEL_TOOL = "jobgate_cancel"
UPLOAD_TOOL = "jobgate_upload"

_JOB_ID = {"job_id": {"type": "string", "description": "The job's id, as a command tool answers it."}}


def _job_tools(*, uploads: bool) -> list[types.Tool]:
    read_only = types.ToolAnnotations(read_only_hint=True, open_world_hint=False)
    tools = [
        types.Tool(
            name=STATUS_TOOL,
            description="A job's status, progress, exit code and error.",
            input_schema=_object(_JOB_ID, ["job_id"]),
            output_schema=JOB_SCHEMA,
            annotations=read_only,
        ),
        types.Tool(
            name=LOGS_TOOL,
            description=f"The tails (last {LOG_TAIL_CHARS} characters by default) of a job's logs.",
            input_schema=_object(
                {
                    **_JOB_ID,
                    "tail_chars": {
                        "type": "integer",
                        "minimum": 1,
                        "default": LOG_TAIL_CHARS,
                        "description": "How many characters of each log to answer, from its end.",
                    },
                },
                ["job_id"],
            ),
            annotations=read_only,
        ),
        types.Tool(
            name=OUTPUTS_TOOL,
            description="A job's output files, each with a presigned download link (valid for a while).",
            input_schema=_object(_JOB_ID, ["job_id"]),
            output_schema={
                "type": "object",
                "properties": {
                    "job_id": {"type": "string"},
                    "outputs": {"type": "array", "items": OUTPUT_SCHEMA},
                },
                "required": ["job_id", "outputs"],
            },
            annotations=read_only,
        ),
        types.Tool(
            name=CANCEL_TOOL,
            description="Cancel a queued or running job.",
            input_schema=_object(_JOB_ID, ["job_id"]),
            output_schema=JOB_SCHEMA,
            annotations=types.ToolAnnotations(destructive_hint=True, idempotent_hint=True),
        ),
    ]
    if uploads:
        tools.append(
            types.Tool(
                name=UPLOAD_TOOL,
                description=(
                    "Upload a file of this machine to jobgate; answers the 'asset://<id>' reference a "
                    "command tool's file argument takes."
                ),
                input_schema=_object(
                    {
                        "path": {
                            "type": "string",
                            "description": "The local file's path (absolute, or from the server's folder).",
                        },
                        "media_type": {
                            "type": "string",
                            "description": "Its media type (guessed from the name when not given).",
                        },
                    },
                    ["path"],
                ),
            )
        )
    return tools


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


class JobgateTools:
    """The tools over one client. `uploads` offers jobgate_upload: only where the server and its
    caller share a file system (stdio), since the path is read by the server."""

    def __init__(self, client: AsyncClient, *, uploads: bool) -> None:
        self._client = client
        self._uploads = uploads
        self._contracts: dict[str, CommandContract] = {}
        self._loaded = False
        self._load_lock = anyio.Lock()

    async def list_tools(self) -> list[types.Tool]:
        await self._load_contracts()
        commands = [
            types.Tool(
                name=name,
                title=f"{contract.stage} {contract.command}",
                description=tool_description(contract),
                input_schema=input_schema(contract),
                output_schema=RESULT_SCHEMA,
                annotations=types.ToolAnnotations(open_world_hint=True),
            )
            for name, contract in self._contracts.items()
        ]
        return [*commands, *_job_tools(uploads=self._uploads)]

    async def call(self, name: str, arguments: Mapping[str, Any], report: Report) -> types.CallToolResult:
        """Run one tool; every failure of the API or of the job is an error result, not an exception."""
        try:
            job_tool = self._job_tool(name)
            if job_tool is not None:
                return await job_tool(arguments)
            await self._load_contracts()
            contract = self._contracts.get(name)
            if contract is None:
                return error_result(f"unknown tool '{name}'", {"error": {"type": "unknown_tool"}})
            return await self.run_command(contract, arguments, report)
        except JobgateAPIError as exc:
            logger.info("tool refused by the API: %s %s", name, exc.message)
            return error_result(exc.message, {"error": _problem(exc)})
        except (JobgateClientError, OSError) as exc:
            logger.info("tool failed: %s %s", name, exc)
            return error_result(str(exc), {"error": {"type": type(exc).__name__, "message": str(exc)}})

    def _job_tool(self, name: str) -> Callable[[Mapping[str, Any]], Awaitable[types.CallToolResult]] | None:
        tools: dict[str, Callable[[Mapping[str, Any]], Awaitable[types.CallToolResult]]] = {
            STATUS_TOOL: self.status,
            LOGS_TOOL: self.logs,
            OUTPUTS_TOOL: self.outputs,
            CANCEL_TOOL: self.cancel,
        }
        if self._uploads:
            tools[UPLOAD_TOOL] = self.upload
        return tools.get(name)

    async def _load_contracts(self) -> None:
        """Every command's contract, once: a deployment's commands change with a deploy, not a session."""
        async with self._load_lock:
            if self._loaded:
                return
            listing = await self._client.commands(contracts=True)
            limit = asyncio.Semaphore(CONTRACT_FETCHES)

            async def fetch(stage: str, command: str) -> CommandContract:
                async with limit:
                    return await self._client.command(stage, command)

            # One request for them all; a deployment older than `?contracts=` answers summaries only.
            contracts = await asyncio.gather(
                *(fetch(i.stage, i.command) for i in listing.items if i.contract is None)
            )
            contracts += [i.contract for i in listing.items if i.contract is not None]
            reserved = {tool.name for tool in _job_tools(uploads=True)}
            for contract in contracts:
                name = tool_name(contract.stage, contract.command)
                if name in reserved or not TOOL_NAME_RE.match(name):
                    logger.warning("command left out of the tools: %s %s", contract.stage, contract.command)
                    continue
                self._contracts[name] = contract
            self._loaded = True

    # -- a command -------------------------------------------------------------------------

    async def run_command(
        self, contract: CommandContract, arguments: Mapping[str, Any], report: Report
    ) -> types.CallToolResult:
        """Submit the job, follow it (progress notifications on the way), answer how it ended."""
        job = await self._client.submit(contract.stage, contract.command, arguments, run_id=new_run_id())
        logger.info("job submitted: %s %s %s", job.job_id, contract.stage, contract.command)
        progress = _ProgressReport(report)
        await progress.job(job)
        try:
            if not job.terminal:
                job = await self._client.wait(job.job_id, on_event=progress.event)
        except anyio.get_cancelled_exc_class():
            # The caller gave up on the call (notifications/cancelled, or the connection went away):
            # the job it started must not run on unwatched.
            with anyio.CancelScope(shield=True):
                await self._cancel_quietly(job.job_id)
            raise
        result = await self._client.result(job)
        outputs = await self._client.outputs(job.job_id) if job.output_count or job.outputs else []
        await progress.done(result.job)
        answer = job_result(result.job, result.stdout, result.stderr, outputs)
        answer.content.extend(await self._pictures(job.job_id, outputs))
        return answer

    async def _pictures(self, job_id: str, outputs: list[Output]) -> list[types.ImageContent]:
        shown = [o for o in outputs if o.media_type in PICTURE_TYPES and o.size <= PICTURE_MAX_BYTES]
        pictures = []
        for output in shown[:PICTURES_SHOWN]:
            try:
                data = await self._client.read_output(job_id, output.name)
            except JobgateClientError as exc:  # the link in the answer still serves
                logger.info("picture not read: %s %s %s", job_id, output.name, exc)
                continue
            encoded = base64.b64encode(data).decode("ascii")
            pictures.append(types.ImageContent(data=encoded, mime_type=output.media_type))
        return pictures

    async def _cancel_quietly(self, job_id: str) -> None:
        try:
            await self._client.cancel(job_id)
            logger.info("job cancelled with its call: %s", job_id)
        except JobgateClientError as exc:
            logger.info("job not cancelled: %s %s", job_id, exc)

    # -- the job tools ---------------------------------------------------------------------

    async def status(self, arguments: Mapping[str, Any]) -> types.CallToolResult:
        job = await self._client.get(_text(arguments, "job_id"))
        view = _job_view(job)
        return types.CallToolResult(
            content=[types.TextContent(text=job.summary)], structured_content=view, is_error=False
        )

    async def logs(self, arguments: Mapping[str, Any]) -> types.CallToolResult:
        job_id = _text(arguments, "job_id")
        tail = _positive_int(arguments, "tail_chars", LOG_TAIL_CHARS)
        stdout = await self._client.logs(job_id, "stdout")
        stderr = await self._client.logs(job_id, "stderr")
        logs = {"job_id": job_id, **_tail("stdout", stdout, tail), **_tail("stderr", stderr, tail)}
        text = f"--- stdout ---\n{logs['stdout']}\n--- stderr ---\n{logs['stderr']}"
        return types.CallToolResult(content=[types.TextContent(text=text)], structured_content=logs)

    async def outputs(self, arguments: Mapping[str, Any]) -> types.CallToolResult:
        job_id = _text(arguments, "job_id")
        outputs = [_output_view(o) for o in await self._client.outputs(job_id)]
        text = "\n".join(_output_line(o) for o in outputs) or "no outputs"
        return types.CallToolResult(
            content=[types.TextContent(text=text)], structured_content={"job_id": job_id, "outputs": outputs}
        )

    async def cancel(self, arguments: Mapping[str, Any]) -> types.CallToolResult:
        job = await self._client.cancel(_text(arguments, "job_id"))
        return types.CallToolResult(
            content=[types.TextContent(text=job.summary)], structured_content=_job_view(job)
        )

    async def upload(self, arguments: Mapping[str, Any]) -> types.CallToolResult:
        media_type = arguments.get("media_type")
        asset = await self._client.upload(
            Path(_text(arguments, "path")).expanduser(), media_type=str(media_type) if media_type else None
        )
        view = {
            "asset_id": asset.asset_id,
            "ref": asset.ref,
            "filename": asset.filename,
            "size": asset.size,
            "media_type": asset.media_type,
            "status": asset.status,
        }
        text = f"uploaded {asset.filename} ({asset.size} bytes) as {asset.ref}"
        return types.CallToolResult(content=[types.TextContent(text=text)], structured_content=view)


class _ProgressReport:
    """A job's events as MCP progress: `progress` from 0 to 1 (total 1), the status as the message.

    MCP asks each notification to raise the progress; a status change at the same progress is told
    with the next rise, so nothing is sent twice at one value. Until the job has ended the progress
    stays below 1 (a command may say 100% before its outputs are uploaded), so the last notification,
    at 1, carries how the job ended.
    """

    def __init__(self, report: Report) -> None:
        self._report = report
        self._sent = -1.0
        self._status = ""

    async def job(self, job: Job) -> None:
        self._status = job.status
        await self._send(min(job.progress, RUNNING_MAX))

    async def event(self, event: JobEvent) -> None:
        if event.type == "snapshot" and event.job is not None:
            self._status = event.job.status
            await self._send(min(event.job.progress, RUNNING_MAX))
        elif event.type == "status" and event.status:
            self._status = event.status
        elif event.type == "progress" and event.progress is not None:
            await self._send(min(event.progress, RUNNING_MAX))

    async def done(self, job: Job) -> None:
        self._status = job.status
        await self._send(1.0)

    async def _send(self, value: float) -> None:
        value = min(max(float(value), 0.0), 1.0)
        if value > self._sent:
            self._sent = value
            await self._report(value, self._status or None)


# -- answers --------------------------------------------------------------------------------


def job_result(job: Job, stdout: str, stderr: str, outputs: list[Output]) -> types.CallToolResult:
    """How a command tool answers an ended job: `isError` unless it succeeded."""
    view = {
        **_job_view(job),
        **_tail("stdout", stdout, LOG_TAIL_CHARS),
        **_tail("stderr", stderr, LOG_TAIL_CHARS),
        "outputs": [_output_view(o) for o in outputs[:OUTPUTS_LISTED]],
        "outputs_truncated": len(outputs) > OUTPUTS_LISTED,
    }
    lines = [job.summary]
    if outputs:
        lines += ["outputs:", *(_output_line(o) for o in view["outputs"])]
    if view["outputs_truncated"]:
        lines.append(f"... {len(outputs) - OUTPUTS_LISTED} more: {OUTPUTS_TOOL} lists them all")
    lines += [f"--- stdout ---\n{view['stdout']}", f"--- stderr ---\n{view['stderr']}"]
    return types.CallToolResult(
        content=[types.TextContent(text="\n".join(lines))],
        structured_content=view,
        is_error=not job.succeeded,
    )


def error_result(message: str, structured: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(text=message)], structured_content=structured, is_error=True
    )


def _job_view(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "stage": job.stage,
        "command": job.command,
        "status": job.status,
        "progress": job.progress,
        "exit_code": job.exit_code,
        "finish_reason": job.finish_reason,
        "error": job.error.model_dump(mode="json") if job.error is not None else None,
        "output_count": max(job.output_count, len(job.outputs)),
    }


def _output_view(output: Output) -> dict[str, Any]:
    return output.model_dump(mode="json", include={"name", "size", "media_type", "url"})


def _output_line(output: Mapping[str, Any]) -> str:
    return f"- {output['name']} ({output['media_type']}, {output['size']} bytes): {output['url']}"


def _tail(stream: str, text: str, limit: int) -> dict[str, Any]:
    return {stream: text[-limit:], f"{stream}_truncated": len(text) > limit}


def _problem(exc: JobgateAPIError) -> dict[str, Any]:
    return {
        "status": exc.status,
        "type": exc.type,
        "title": exc.title,
        "detail": exc.detail,
        "errors": exc.errors,
    }


def _positive_int(arguments: Mapping[str, Any], name: str, default: int) -> int:
    value = arguments.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _BadArgument(f"'{name}' must be a positive integer")
    return value


def _text(arguments: Mapping[str, Any], name: str) -> str:
    value = arguments.get(name)
    if not isinstance(value, str) or not value:
        raise _BadArgument(f"'{name}' must be a non-empty string")
    return value


class _BadArgument(JobgateClientError):
    """A job tool's argument the server can tell is wrong without asking the API."""
