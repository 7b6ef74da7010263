"""A local API Gateway HTTP API: HTTP requests in, Lambda proxy integration events (payload 2.0) out.

Behaves as API Gateway does where clients can tell: the event's shape, which bodies arrive
base64-encoded, how the function's answer becomes the response, and the gateway's own answers
(404 with no route, 413 over 10 MB, 500 when the function fails, 503 past the 30 s integration timeout).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Generator, Mapping, MutableMapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

import uvicorn

from .components import RunningStack
from .functions import ACCOUNT_ID, FunctionPool, InvokeResult, NoCapacityError, PoolClosedError
from .procs import reserve_port
from .template import HttpRoute, Template, http_routes

logger = logging.getLogger(__name__)

# API Gateway's quotas for HTTP APIs: 10 MB payloads, 30 s integration timeout.
MAX_BODY_BYTES = 10 * 1024 * 1024
INTEGRATION_TIMEOUT_S = 30.0
# The only request content types API Gateway hands to Lambda as text (others, and none, are base64).
_TEXT_TYPES = frozenset({"application/json", "application/xml", "application/javascript"})
# Hop-by-hop or length headers the gateway sets itself.
_DROPPED_RESPONSE_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})

Invoker = Callable[[str, Mapping[str, Any], float], Awaitable[InvokeResult]]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class HttpRequest:
    """What the gateway needs of one request."""

    method: str
    raw_path: str
    raw_query: str
    headers: Sequence[tuple[str, str]]
    body: bytes
    source_ip: str
    protocol: str = "HTTP/1.1"
    port: int = 80
    scheme: str = "http"


# -- routing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledRoute:
    route: HttpRoute
    pattern: re.Pattern[str] | None
    names: tuple[str, ...]
    priority: tuple[int, ...]


def compile_routes(routes: Sequence[HttpRoute]) -> list[CompiledRoute]:
    """Routes in API Gateway's order of preference: exact, with variables, greedy, then $default."""
    compiled = []
    for route in routes:
        if route.route_key == "$default":
            compiled.append(CompiledRoute(route, None, (), (1, 0, 0, 0)))
            continue
        parts: list[str] = []
        names: list[str] = []
        literals = greedy = 0
        for segment in route.path.strip("/").split("/"):
            if segment.startswith("{") and segment.endswith("+}"):
                parts.append("(.+)")
                names.append(segment[1:-2])
                greedy = 1
            elif segment.startswith("{") and segment.endswith("}"):
                parts.append("([^/]+)")
                names.append(segment[1:-1])
            else:
                parts.append(re.escape(segment))
                literals += 1
        pattern = re.compile("^/" + "/".join(parts) + "$")
        priority = (0, greedy, -literals, int(route.method == "ANY"))
        compiled.append(CompiledRoute(route, pattern, tuple(names), priority))
    return sorted(compiled, key=lambda c: c.priority)


def match_route(
    routes: Sequence[CompiledRoute], method: str, path: str
) -> tuple[HttpRoute, dict[str, str]] | None:
    """The route a request takes and its path parameters (``path`` already percent-decoded)."""
    for compiled in routes:
        if compiled.route.method not in ("ANY", method):
            continue
        if compiled.pattern is None:
            return compiled.route, {}
        match = compiled.pattern.match(path)
        if match is not None:
            return compiled.route, dict(zip(compiled.names, match.groups(), strict=True))
    return None


# -- the event and the response --------------------------------------------------------------------


def request_id() -> str:
    """An id shaped like API Gateway's (``Abc123xYzAMEaQ=``)."""
    return base64.b64encode(secrets.token_bytes(10)).decode()[:14] + "="


def is_text(content_type: str | None) -> bool:
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    return mime.startswith("text/") or mime in _TEXT_TYPES


def build_event(
    request: HttpRequest,
    route: HttpRoute,
    path_parameters: Mapping[str, str],
    *,
    api_id: str,
    request_id: str,
    now: float | None = None,
) -> dict[str, Any]:
    """The payload format 2.0 event API Gateway sends to a Lambda proxy integration."""
    now = time.time() if now is None else now
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in request.headers:
        name = name.lower()
        if name == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
        else:
            headers[name] = f"{headers[name]},{value}" if name in headers else value
    forwarded_for = headers.get("x-forwarded-for")
    headers["x-forwarded-for"] = (
        f"{forwarded_for}, {request.source_ip}" if forwarded_for else request.source_ip
    )
    headers["x-forwarded-port"] = str(request.port)
    headers["x-forwarded-proto"] = request.scheme
    headers["x-amzn-trace-id"] = f"Root=1-{int(now):08x}-{secrets.token_hex(12)}"
    host = headers.get("host", "localhost")
    if host.count(":") == 1:  # drop the port; an IPv6 literal is left as it is
        host = host.rsplit(":", 1)[0]

    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": request.raw_path,
        "rawQueryString": request.raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    query: dict[str, list[str]] = {}
    for name, value in parse_qsl(request.raw_query, keep_blank_values=True):
        query.setdefault(name, []).append(value)
    if query:
        event["queryStringParameters"] = {name: ",".join(values) for name, values in query.items()}
    event["requestContext"] = {
        "accountId": ACCOUNT_ID,
        "apiId": api_id,
        "domainName": host,
        "domainPrefix": host.split(".", 1)[0],
        "http": {
            "method": request.method,
            "path": request.raw_path,
            "protocol": request.protocol,
            "sourceIp": request.source_ip,
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": request_id,
        "routeKey": route.route_key,
        "stage": "$default",
        "time": datetime.fromtimestamp(now, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "timeEpoch": int(now * 1000),
    }
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    if request.body:
        text = _as_text(request.body) if is_text(headers.get("content-type")) else None
        event["body"] = text if text is not None else base64.b64encode(request.body).decode()
        event["isBase64Encoded"] = text is None
    else:
        event["isBase64Encoded"] = False
    return event


def _as_text(body: bytes) -> str | None:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


@dataclass(frozen=True)
class GatewayResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def gateway_error(status: int, message: str) -> GatewayResponse:
    """An answer API Gateway gives itself: ``{"message": ...}`` as JSON."""
    return GatewayResponse(
        status, [("content-type", "application/json")], json.dumps({"message": message}).encode()
    )


def internal_error() -> GatewayResponse:
    return gateway_error(500, "Internal Server Error")


def build_response(result: InvokeResult) -> GatewayResponse:
    """The HTTP response for a function's answer, read as payload format 2.0 reads it."""
    if result.error is not None:
        if result.error.error_type == "RequestEntityTooLargeException":
            return gateway_error(413, "Request Entity Too Large")
        return internal_error()
    payload = result.payload
    if not (isinstance(payload, dict) and "statusCode" in payload):
        # No statusCode: API Gateway takes the whole answer as a 200 JSON body.
        return GatewayResponse(200, [("content-type", "application/json")], json.dumps(payload).encode())
    try:
        status = int(payload["statusCode"])
        body = _response_body(payload.get("body"), bool(payload.get("isBase64Encoded", False)))
    except (TypeError, ValueError, binascii.Error):
        return internal_error()
    if not 100 <= status <= 599:
        return internal_error()
    headers = [
        (str(name).lower(), str(value))
        for name, value in (payload.get("headers") or {}).items()
        if str(name).lower() not in _DROPPED_RESPONSE_HEADERS
    ]
    headers.extend(("set-cookie", str(cookie)) for cookie in payload.get("cookies") or [])
    return GatewayResponse(status, headers, body)


def _response_body(body: Any, is_base64: bool) -> bytes:
    if body is None:
        return b""
    if not isinstance(body, str):
        body = json.dumps(body)
    return base64.b64decode(body, validate=True) if is_base64 else body.encode()


# -- the ASGI application ---------------------------------------------------------------------------


class _BodyTooLarge(Exception):
    pass


class HttpGatewayApp:
    """ASGI app: match the route, build the event, invoke the function, answer as API Gateway."""

    def __init__(
        self,
        routes: Sequence[HttpRoute],
        invoke: Invoker,
        *,
        api_id: str = "local",
        max_body_bytes: int = MAX_BODY_BYTES,
        integration_timeout_s: float = INTEGRATION_TIMEOUT_S,
    ) -> None:
        self._routes = compile_routes(routes)
        self._invoke = invoke
        self.api_id = api_id
        self._max_body_bytes = max_body_bytes
        self._integration_timeout_s = integration_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.monotonic()
        rid = request_id()
        try:
            response = await self._handle(scope, receive, rid)
        except _BodyTooLarge:
            response = gateway_error(413, "Request Entity Too Large")
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        headers.append((b"content-length", str(len(response.body)).encode()))
        headers.append((b"apigw-requestid", rid.encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})
        logger.info(
            "%s %s %s %.0f ms",
            scope["method"],
            scope["path"],
            response.status,
            (time.monotonic() - started) * 1000,
        )

    async def _handle(self, scope: Scope, receive: Receive, rid: str) -> GatewayResponse:
        header_list = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        declared = next((v for k, v in header_list if k == "content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self._max_body_bytes:
            return gateway_error(413, "Request Entity Too Large")
        body = await self._read_body(receive)
        method = scope["method"]
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        matched = match_route(self._routes, method, scope["path"])
        if matched is None:
            return gateway_error(404, "Not Found")
        route, path_parameters = matched
        client = scope.get("client") or ("127.0.0.1", 0)
        server = scope.get("server") or ("127.0.0.1", 80)
        request = HttpRequest(
            method=method,
            raw_path=raw_path,
            raw_query=scope.get("query_string", b"").decode("latin-1"),
            headers=header_list,
            body=body,
            source_ip=str(client[0]),
            protocol=f"HTTP/{scope.get('http_version', '1.1')}",
            port=int(server[1] or 80),
            scheme=str(scope.get("scheme", "http")),
        )
        event = build_event(request, route, path_parameters, api_id=self.api_id, request_id=rid)
        try:
            result = await self._invoke(route.function, event, self._integration_timeout_s)
        except (TimeoutError, NoCapacityError, PoolClosedError):
            return gateway_error(503, "Service Unavailable")
        if result.error is not None and result.error.error_type != "RequestEntityTooLargeException":
            logger.error("%s failed: %s: %s", route.function, result.error.error_type, result.error.message)
        return build_response(result)

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body_bytes:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def pool_invoker(pools: Mapping[str, FunctionPool], executor: Executor) -> Invoker:
    """An :data:`Invoker` over function pools; the caller stops waiting at the timeout, the invoke runs on."""

    async def invoke(function: str, event: Mapping[str, Any], timeout: float) -> InvokeResult:
        loop = asyncio.get_running_loop()
        call = partial(pools[function].invoke, dict(event), acquire_timeout=timeout)
        future = loop.run_in_executor(executor, call)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            # As on API Gateway, the function keeps running to its own timeout; nobody reads its answer.
            future.add_done_callback(lambda done: done.cancelled() or done.exception())
            raise

    return invoke


# -- the server ------------------------------------------------------------------------------------


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the stack owns Ctrl-C and shuts the gateway down itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class AsgiServer:
    """Serves an ASGI app with uvicorn on a socket the stack reserved; ``options`` go to uvicorn's Config."""

    def __init__(self, app: AsgiApp, sock: socket.socket, **options: Any) -> None:
        self._sock = sock
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=1,
            **options,
        )
        self._server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the server stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class HttpGateway(AsgiServer):
    """Serves an :class:`HttpGatewayApp` on a socket the stack reserved."""

    def __init__(self, app: HttpGatewayApp, sock: socket.socket) -> None:
        super().__init__(app, sock)
        self.app = app


class HttpGatewayComponent:
    """Component: the template's HTTP API on ``host:port``, with ``concurrency`` sandboxes behind it."""

    name = "http"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        concurrency: int = 4,
        api_id: str = "local",
        max_body_bytes: int = MAX_BODY_BYTES,
        integration_timeout_s: float = INTEGRATION_TIMEOUT_S,
    ) -> None:
        self._host, self._port = host, port
        self._concurrency = concurrency
        self._api_id = api_id
        self._max_body_bytes = max_body_bytes
        self._integration_timeout_s = integration_timeout_s
        self._sock: socket.socket | None = None
        self._routes: list[HttpRoute] = []
        self._gateway: HttpGateway | None = None

    @property
    def url(self) -> str:
        if self._sock is None:
            raise RuntimeError("reserve() first")
        host, port = self._sock.getsockname()[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{shown}:{port}"

    def reserve(self) -> None:
        self._sock = reserve_port(
            self._host, self._port, "HTTP gateway", "choose another with --port or JOBGATE_HTTP_PORT"
        )

    def played_resources(self, template: Template) -> Mapping[str, Mapping[str, str]]:
        apis = http_routes(template)
        if not apis:
            return {}
        served, *others = apis
        if others:
            logger.warning(
                "only the first HTTP API (%s) is served locally; not %s", served, ", ".join(others)
            )
        self._routes = apis[served]
        return {served: {"Ref": self._api_id, "ApiId": self._api_id, "ApiEndpoint": self.url}}

    def function_environment(self) -> Mapping[str, str]:
        return {}

    def sandboxes(self, template: Template) -> Mapping[str, int]:
        del template  # the routes were read in played_resources()
        return {route.function: self._concurrency for route in self._routes}

    async def start(self, stack: RunningStack) -> None:
        if self._sock is None:
            raise RuntimeError("reserve() first")
        app = HttpGatewayApp(
            self._routes,
            pool_invoker(stack.pools, stack.executor),
            api_id=self._api_id,
            max_body_bytes=self._max_body_bytes,
            integration_timeout_s=self._integration_timeout_s,
        )
        self._gateway = HttpGateway(app, self._sock)
        await self._gateway.start()
        for route in self._routes:
            logger.info("%s -> %s", route.route_key, route.function)

    async def stop(self) -> None:
        if self._gateway is not None:
            await self._gateway.stop()
        elif self._sock is not None:
            self._sock.close()

    def urls(self) -> Mapping[str, str]:
        if not self._routes:
            return {}
        return {"http_url": self.url, "docs_url": f"{self.url}/docs", "console_url": f"{self.url}/console"}
