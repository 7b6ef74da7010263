"""The MCP server of `jobgate mcp`: the tools of jobgate.mcp.tools over stdio or streamable HTTP.

Built on the SDK's low-level `Server`: the tools are known only once the deployment has answered
its commands, so they are listed and dispatched by name rather than declared as functions.
"""

from __future__ import annotations

from typing import Any

import mcp.types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError

from jobgate import __version__
from jobgate.client.errors import JobgateClientError
from jobgate.mcp.callers import CallerKeys
from jobgate.mcp.tools import JobgateTools

INSTRUCTIONS = (
    "Each command tool runs one command of a jobgate deployment as a job and answers when it has ended: "
    "stdout, stderr, exit code, status and presigned links to its output files. File arguments take "
    "'asset://<id>' (upload a local file with jobgate_upload first) or 'job://<job_id>/<output>'; "
    "output arguments are relative paths. jobgate_status, jobgate_logs, jobgate_outputs and "
    "jobgate_cancel look after a job by its id."
)


def build_server(source: JobgateTools | CallerKeys) -> Server[Any]:
    """The server over one set of tools, or (`CallerKeys`) the tools of each HTTP caller's key."""

    def tools_of(ctx: ServerRequestContext[Any]) -> JobgateTools:
        if isinstance(source, JobgateTools):
            return source
        try:
            return source.tools_for(getattr(ctx.request, "headers", None) or {})
        except LookupError as exc:
            raise MCPError(types.INVALID_REQUEST, str(exc.args[0])) from exc

    async def list_tools(
        ctx: ServerRequestContext[Any], _params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        tools = tools_of(ctx)
        try:
            return types.ListToolsResult(tools=await tools.list_tools())
        except JobgateClientError as exc:
            # The caller reads why (a wrong key, an API out of reach), not "Internal server error".
            raise MCPError(types.INTERNAL_ERROR, f"jobgate: {exc}") from exc

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        async def report(progress: float, message: str | None) -> None:
            # A no-op unless the caller's request carried a progressToken.
            await ctx.session.report_progress(progress, 1.0, message)

        return await tools_of(ctx).call(params.name, params.arguments or {}, report)

    return Server(
        "jobgate",
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
