"""`jobgate mcp`: serve a jobgate deployment's commands as MCP tools, over stdio or streamable HTTP."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import anyio
from starlette.types import ASGIApp

from jobgate.client import AsyncClient
from jobgate.client.config import ConfigError, resolve_settings
from jobgate.mcp.callers import CallerKeys, RequireKey
from jobgate.mcp.server import build_server
from jobgate.mcp.tools import JobgateTools

DEFAULT_PORT = 8765
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobgate mcp",
        description=(
            "An MCP server for agents: each command of the jobgate API is a tool. Where the API is: "
            "--url/--api-key, else JOBGATE_URL/JOBGATE_API_KEY, else a profile (as for `jobgate`)."
        ),
    )
    parser.add_argument("--url", help="the API's base URL (JOBGATE_URL)")
    parser.add_argument("--api-key", help="the API key (JOBGATE_API_KEY)")
    parser.add_argument("--profile", help="a profile of the config file")
    parser.add_argument("--ws-url", help="the WebSocket URL, when the job's link is not usable")
    parser.add_argument(
        "--transport", choices=["stdio", "http"], default="stdio", help="stdio (default) or streamable HTTP"
    )
    parser.add_argument("--host", default="127.0.0.1", help="HTTP: the address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"HTTP: the port ({DEFAULT_PORT})")
    parser.add_argument("--path", default="/mcp", help="HTTP: the endpoint's path (/mcp)")
    parser.add_argument(
        "--caller-keys",
        action="store_true",
        help="HTTP: each caller sends its own API key (Authorization: Bearer KEY); the server holds none",
    )
    parser.add_argument("--log-level", default="WARNING", help="what the server logs on stderr (WARNING)")
    return parser


def main(argv: Sequence[str]) -> int:
    try:
        args = build_parser().parse_args(list(argv))
    except SystemExit as exc:  # --help (0) or a usage error (2): an exit status, as `jobgate` answers
        return exc.code if isinstance(exc.code, int) else 2
    _log_to_stderr(args.log_level.upper())
    if args.caller_keys and (args.transport != "http" or args.api_key):
        sys.stderr.write("jobgate mcp: --caller-keys is for --transport http, and takes no --api-key\n")
        return 2
    try:
        if args.caller_keys:
            settings = resolve_settings(url=args.url, profile=args.profile, websocket_url=args.ws_url)
            source: AsyncClient | CallerKeys = CallerKeys(settings.url, websocket_url=settings.websocket_url)
        else:
            source = AsyncClient(args.url, args.api_key, profile=args.profile, websocket_url=args.ws_url)
    except ConfigError as exc:
        sys.stderr.write(f"jobgate mcp: {exc}\n")
        return 2
    try:
        anyio.run(_serve, source, args)
    except KeyboardInterrupt:
        return 130
    return 0


def _log_to_stderr(level: str) -> None:
    """On stdio, stdout carries the protocol: the server's own log goes to stderr, and not up to the
    `jobgate` logger, whose handler (the Lambda functions' JSON log) writes to stdout."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    log = logging.getLogger("jobgate.mcp")
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


async def _serve(source: AsyncClient | CallerKeys, args: argparse.Namespace) -> None:
    if isinstance(source, CallerKeys):
        try:
            await _serve_http(source, args.host, args.port, args.path)
        finally:
            await source.aclose()
        return
    async with source:
        if args.transport == "stdio":
            await _serve_stdio(source)
        else:
            await _serve_http(JobgateTools(source, uploads=False), args.host, args.port, args.path)


async def _serve_stdio(client: AsyncClient) -> None:
    from mcp.server.stdio import stdio_server

    server = build_server(JobgateTools(client, uploads=True))
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


async def _serve_http(source: JobgateTools | CallerKeys, host: str, port: int, path: str) -> None:
    import uvicorn

    # No upload tool over HTTP: the server reads no local files for its callers. With its own key it
    # acts for whoever reaches it, so it listens on loopback unless --host says otherwise; with
    # --caller-keys a request without a key is refused before the MCP app (docs/architecture.md).
    app: ASGIApp = build_server(source).streamable_http_app(streamable_http_path=path, host=host)
    if isinstance(source, CallerKeys):
        app = RequireKey(app)
    elif host not in LOOPBACK:
        logging.getLogger("jobgate.mcp").warning(
            "serving beyond loopback with the server's own key: %s", host
        )
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve()
