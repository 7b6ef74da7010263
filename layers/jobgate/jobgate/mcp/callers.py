"""`jobgate mcp --transport http --caller-keys`: each HTTP caller brings its own jobgate API key.

The server then holds no key of its own: a request without one is refused with 401 before it reaches
the MCP app, and every call goes to jobgate with the key that came with it, so the API's own tenancy,
limits and revocation apply to each caller as they would to a direct client.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from jobgate.client import AsyncClient
from jobgate.mcp.tools import JobgateTools

MISSING_KEY = "send a jobgate API key: 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


def api_key_of(headers: Mapping[str, str]) -> str | None:
    """The caller's key: `Authorization: Bearer <key>`, else jobgate's own `X-API-Key`."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = headers.get("x-api-key", "").strip()
    return key or None


class CallerKeys:
    """A client (and its tools) per caller's key, made on the key's first request and kept until the
    server stops."""

    def __init__(self, url: str, *, websocket_url: str | None = None) -> None:
        self._url = url
        self._websocket_url = websocket_url
        self._tools: dict[str, tuple[AsyncClient, JobgateTools]] = {}

    def tools_for(self, headers: Mapping[str, str]) -> JobgateTools:
        key = api_key_of(headers)
        if key is None:
            raise LookupError(MISSING_KEY)
        if key not in self._tools:
            client = AsyncClient(self._url, key, websocket_url=self._websocket_url)
            # The caller's machine is not this one: no tool reads this server's files for it.
            self._tools[key] = (client, JobgateTools(client, uploads=False))
        return self._tools[key][1]

    async def aclose(self) -> None:
        for client, _ in self._tools.values():
            await client.aclose()
        self._tools.clear()


class RequireKey:
    """ASGI: an HTTP request with no key is answered 401 here, before any MCP session is made."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and api_key_of(Headers(scope=scope)) is None:
            refused = JSONResponse(
                {"error": MISSING_KEY}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
            await refused(scope, receive, send)
            return
        await self._app(scope, receive, send)
