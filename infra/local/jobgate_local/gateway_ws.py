"""A local API Gateway WebSocket API: client connections in, Lambda proxy events out, ``@connections`` back.

One port serves both sides, as API Gateway serves both on the API's own domain: clients connect to
``ws://host:port/<stage>`` and the functions reach ``http://host:port/<stage>/@connections/{id}`` with
boto3's ``apigatewaymanagementapi`` client. It behaves as API Gateway does where a client or a handler
can tell: the $connect, MESSAGE and $disconnect events' shapes; a $connect answer that is not 2xx refuses
the handshake with that status; routes chosen by ``$request.body.<field>``, ``$default`` otherwise;
frames over 32 KB and messages over 128 KB closed with 1009, binary frames with 1003; idle connections
closed after 10 minutes and every connection after 2 hours (1001); a failed integration reported to the
client as ``{"message": "Internal server error", ...}``; and ``410 GoneException`` for a connection that
is gone, which botocore raises as ``GoneException``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import secrets
import socket
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast
from urllib.parse import parse_qsl

from .components import RunningStack
from .functions import ACCOUNT_ID, REGION, InvokeResult, NoCapacityError, PoolClosedError
from .gateway_http import AsgiServer, Invoker, Receive, Scope, Send, pool_invoker
from .procs import reserve_port
from .template import Template, WebSocketApi, websocket_apis

logger = logging.getLogger(__name__)

# API Gateway's quotas for WebSocket APIs.
MAX_FRAME_BYTES = 32 * 1024
MAX_MESSAGE_BYTES = 128 * 1024
INTEGRATION_TIMEOUT_S = 29.0
IDLE_TIMEOUT_S = 10 * 60.0
MAX_CONNECTION_S = 2 * 3600.0

# What every function is told about the WebSocket API (template.yaml's Globals build them for AWS).
WEBSOCKET_URL_VARIABLE = "JOBGATE_WEBSOCKET_URL"
MANAGEMENT_URL_VARIABLE = "JOBGATE_WS_MANAGEMENT_URL"

CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_NO_STATUS = 1005
_HOP_BY_HOP = frozenset({"connection", "upgrade"})
_BODY_SELECTION = re.compile(r"^\$\{?request\.body\.([A-Za-z0-9_$-]+(?:\.[A-Za-z0-9_$-]+)*)\}?$")
_LIFECYCLE_ROUTES = ("$connect", "$disconnect")

# What came of invoking an integration: the function's answer, or the gateway's own failure.
Outcome = InvokeResult | Literal["timeout", "error"]


def api_gateway_id() -> str:
    """An id shaped like API Gateway's connection and request ids (``Q1Jw_cqHIAMCJ4w=``)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(11)).decode()


def _clf(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")


def _iso(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(now: float) -> int:
    return int(now * 1000)


# -- connections ---------------------------------------------------------------------------------------


class ConnectionGoneError(Exception):
    """The connection is closed or closing; API Gateway answers 410 for it."""


@dataclass
class Connection:
    """One client connection as API Gateway keeps it: who, since when, and how to reach it."""

    connection_id: str
    source_ip: str
    user_agent: str
    domain_name: str
    connected_at: float  # epoch seconds, as events and GET @connections report it
    send_asgi: Send
    last_active_at: float = 0.0
    closing: bool = False
    _started: float = field(default_factory=time.monotonic)
    _active: float = field(default_factory=time.monotonic)

    def touch(self, now: float) -> None:
        self.last_active_at = now
        self._active = time.monotonic()

    def seconds_left(self, idle_timeout_s: float, max_connection_s: float) -> float:
        """Until the idle timeout or the connection's time limit, whichever is first."""
        deadline = min(self._active + idle_timeout_s, self._started + max_connection_s)
        return deadline - time.monotonic()

    async def deliver(self, data: bytes, now: float) -> None:
        """Send one message: a text frame when it is UTF-8 (what clients expect of JSON), else binary."""
        if self.closing:
            raise ConnectionGoneError(self.connection_id)
        try:
            message: dict[str, Any] = {"type": "websocket.send", "text": data.decode("utf-8")}
        except UnicodeDecodeError:
            message = {"type": "websocket.send", "bytes": data}
        try:
            await self.send_asgi(message)
        except Exception as exc:  # uvicorn's ClientDisconnected, or the transport is already gone
            self.closing = True
            raise ConnectionGoneError(self.connection_id) from exc
        self.touch(now)

    async def close(self, code: int, reason: str = "") -> None:
        if self.closing:
            return
        self.closing = True
        with contextlib.suppress(Exception):  # already gone: nothing to close
            await self.send_asgi({"type": "websocket.close", "code": code, "reason": reason})


@dataclass(frozen=True)
class Handshake:
    """What API Gateway passes on of a client's opening handshake."""

    path: str
    query: str
    headers: Sequence[tuple[str, str]]  # as HTTP/1.1 clients spell them (see canonical_header)
    source_ip: str
    port: int

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        found = [value for key, value in self.headers if key.lower() == wanted]
        return found[-1] if found else None


# -- events --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventFactory:
    """The events API Gateway's WebSocket API sends to a Lambda proxy integration."""

    api_id: str
    stage: str
    clock: Callable[[], float] = time.time

    def connect(self, conn: Connection, handshake: Handshake, request_id: str) -> dict[str, Any]:
        now = self.clock()
        forwarded = handshake.header("X-Forwarded-For")
        headers = [(k, v) for k, v in handshake.headers if k.lower() not in _HOP_BY_HOP]
        headers = [(k, v) for k, v in headers if k.lower() != "x-forwarded-for"]
        headers += [
            ("X-Amzn-Trace-Id", f"Root=1-{int(now):08x}-{secrets.token_hex(12)}"),
            ("X-Forwarded-For", f"{forwarded}, {handshake.source_ip}" if forwarded else handshake.source_ip),
            ("X-Forwarded-Port", str(handshake.port)),
            ("X-Forwarded-Proto", "http"),
        ]
        event: dict[str, Any] = _with_headers(headers)
        query: dict[str, list[str]] = {}
        for name, value in parse_qsl(handshake.query, keep_blank_values=True):
            query.setdefault(name, []).append(value)
        if query:
            event["queryStringParameters"] = {name: values[-1] for name, values in query.items()}
            event["multiValueQueryStringParameters"] = query
        event["requestContext"] = self._context(conn, "$connect", "CONNECT", request_id, now)
        event["isBase64Encoded"] = False
        return event

    def message(self, conn: Connection, route_key: str, body: str, request_id: str) -> dict[str, Any]:
        context = self._context(conn, route_key, "MESSAGE", request_id, self.clock())
        context = {"routeKey": route_key, "messageId": api_gateway_id(), **context}
        return {"requestContext": context, "body": body, "isBase64Encoded": False}

    def disconnect(self, conn: Connection, code: int, reason: str, request_id: str) -> dict[str, Any]:
        # What API Gateway sends: the host and three empty headers, whatever the handshake carried.
        event = _with_headers([("Host", conn.domain_name), ("x-api-key", ""), ("X-Forwarded-For", "")])
        event["headers"]["x-restapi"] = ""
        event["multiValueHeaders"]["x-restapi"] = [""]
        context = self._context(conn, "$disconnect", "DISCONNECT", request_id, self.clock())
        if not reason and code == CLOSE_NO_STATUS:
            reason = "Client-side close frame status not set"
        event["requestContext"] = {
            "routeKey": "$disconnect",
            "disconnectStatusCode": code,
            **context,
            "disconnectReason": reason,
        }
        event["isBase64Encoded"] = False
        return event

    def _context(
        self, conn: Connection, route_key: str, event_type: str, request_id: str, now: float
    ) -> dict[str, Any]:
        return {
            "routeKey": route_key,
            "eventType": event_type,
            "extendedRequestId": request_id,
            "requestTime": _clf(now),
            "messageDirection": "IN",
            "stage": self.stage or "$default",
            "connectedAt": _ms(conn.connected_at),
            "requestTimeEpoch": _ms(now),
            "identity": {"sourceIp": conn.source_ip},
            "requestId": request_id,
            "domainName": conn.domain_name,
            "connectionId": conn.connection_id,
            "apiId": self.api_id,
        }


def _with_headers(headers: Sequence[tuple[str, str]]) -> dict[str, Any]:
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in headers:
        single[name] = value
        multi.setdefault(name, []).append(value)
    return {"headers": single, "multiValueHeaders": multi}


def select_route(body: str, expression: str, route_keys: Collection[str]) -> str | None:
    """The route a message takes: ``$request.body.<path>`` when it names a route, else ``$default``.

    None when nothing matches and there is no ``$default`` (API Gateway answers "Forbidden" then).
    """
    match = _BODY_SELECTION.match(expression.strip())
    if match is not None:
        try:
            value: Any = json.loads(body)
        except ValueError:
            value = None
        for part in match.group(1).split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str) and value in route_keys and value not in _LIFECYCLE_ROUTES:
            return value
    return "$default" if "$default" in route_keys else None


def failure_message(outcome: Outcome) -> str | None:
    """None when the function answered; else what API Gateway tells the client went wrong."""
    if isinstance(outcome, str):
        return "Endpoint request timed out" if outcome == "timeout" else "Internal server error"
    return "Internal server error" if outcome.error is not None else None


def handshake_status(outcome: Outcome) -> int:
    """The HTTP status a $connect answer gives the handshake (2xx accepts it), as API Gateway reads it."""
    if isinstance(outcome, str):
        return 504 if outcome == "timeout" else 502
    if outcome.error is not None:
        return 502
    payload = outcome.payload
    if not isinstance(payload, dict) or "statusCode" not in payload:
        return 502  # a proxy integration must answer a status
    try:
        status = int(payload["statusCode"])
    except (TypeError, ValueError):
        return 502
    return status if 100 <= status <= 599 else 502


# -- the ASGI application ----------------------------------------------------------------------------


def _json(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes = b""
    error_type: str | None = None


_GONE = _Answer(410, error_type="GoneException")


@dataclass(frozen=True)
class SignedCall:
    """A call to the ``@connections`` API, as received, for the caller's signature and IAM to be checked."""

    method: str
    raw_path: str
    query: str
    headers: Sequence[tuple[str, str]]
    body: bytes
    connection_id: str


# Checks a call's signature and the caller's execute-api:ManageConnections; the refusal, or None.
Authorizer = Callable[[SignedCall], Awaitable[_Answer | None]]


def strict_authorizer(endpoint_url: str, api_id: str, stage: str) -> Authorizer:
    """Ask the local AWS's strict layer (one IAM evaluator for every service) whether the caller may."""

    def ask(call: SignedCall) -> _Answer | None:
        resource = (
            f"arn:aws:execute-api:{REGION}:{ACCOUNT_ID}:{api_id}/{stage or '$default'}/"
            f"{call.method}/@connections/{call.connection_id}"
        )
        document = {
            "method": call.method,
            "path": call.raw_path,
            "query": call.query,
            "headers": [list(pair) for pair in call.headers],
            "body": base64.b64encode(call.body).decode(),
            "action": "execute-api:ManageConnections",
            "resource": resource,
        }
        request = urllib.request.Request(
            f"{endpoint_url}/_jobgate/authorize",
            data=json.dumps(document).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
        if answer["allowed"]:
            return None
        return _Answer(int(answer["status"]), _json(answer["body"]), str(answer["code"]))

    async def authorize(call: SignedCall) -> _Answer | None:
        return await asyncio.to_thread(ask, call)

    return authorize


class WebSocketGatewayApp:
    """ASGI app: WebSocket clients on ``/<stage>``, the management API on ``/<stage>/@connections/{id}``."""

    def __init__(
        self,
        api: WebSocketApi,
        invoke: Invoker,
        *,
        api_id: str = "local",
        integration_timeout_s: float = INTEGRATION_TIMEOUT_S,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        max_connection_s: float = MAX_CONNECTION_S,
        clock: Callable[[], float] = time.time,
        authorize: Authorizer | None = None,
    ) -> None:
        self.api = api
        self._invoke = invoke
        self._authorize = authorize
        self.events = EventFactory(api_id, api.stage, clock)
        self._integration_timeout_s = integration_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._max_connection_s = max_connection_s
        self._clock = clock
        self.connections: dict[str, Connection] = {}
        # On AWS the endpoint is https://<domain>/<stage>; the bare path is taken too.
        self._connections_path = re.compile(rf"^(?:/{re.escape(api.stage)})?/@connections/([^/]+)/?$")
        self._stage_paths = {"", "/", f"/{api.stage}", f"/{api.stage}/"} if api.stage else {"", "/"}
        self._message_routes = [key for key in api.routes if key not in _LIFECYCLE_ROUTES]
        if not _BODY_SELECTION.match(api.route_selection_expression.strip()):
            logger.warning(
                "%s: route selection by %s is not emulated; every message takes $default",
                api.logical_id,
                api.route_selection_expression,
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "http":
            await self._management(scope, receive, send)

    # -- a client's connection ---------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        handshake = _handshake(scope)
        if handshake.path not in self._stage_paths:
            await _refuse(send, 403, _json({"message": "Forbidden"}), "application/json")
            return
        conn = self._new_connection(handshake, send)
        started = time.monotonic()
        if "$connect" in self.api.routes:
            request_id = api_gateway_id()
            event = self.events.connect(conn, handshake, request_id)
            outcome = await self._call(self.api.routes["$connect"], event)
            status = handshake_status(outcome)
            if not 200 <= status <= 299:
                logger.info("WS refused %s: %s (%.0f ms)", handshake.path, status, _elapsed_ms(started))
                await _refuse(send, status, *_refusal_body(outcome))
                return
        await send({"type": "websocket.accept"})
        self.connections[conn.connection_id] = conn
        logger.info("WS %s connected (%.0f ms)", conn.connection_id, _elapsed_ms(started))
        code, reason = await self._serve(conn, receive)
        logger.info("WS %s disconnected (%s)", conn.connection_id, code)
        if "$disconnect" in self.api.routes:
            event = self.events.disconnect(conn, code, reason, api_gateway_id())
            if failure_message(await self._call(self.api.routes["$disconnect"], event)) is not None:
                logger.warning("WS %s: $disconnect failed", conn.connection_id)

    def _new_connection(self, handshake: Handshake, send: Send) -> Connection:
        connection_id = api_gateway_id()
        while connection_id in self.connections:
            connection_id = api_gateway_id()
        host = handshake.header("Host") or "localhost"
        if host.count(":") == 1:  # drop the port; an IPv6 literal is left as it is
            host = host.rsplit(":", 1)[0]
        now = self._clock()
        return Connection(
            connection_id=connection_id,
            source_ip=handshake.source_ip,
            user_agent=handshake.header("User-Agent") or "",
            domain_name=host,
            connected_at=now,
            send_asgi=send,
            last_active_at=now,
        )

    async def _serve(self, conn: Connection, receive: Receive) -> tuple[int, str]:
        """Route the client's messages until the connection ends; answer its close code and reason."""
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while True:
                message = await self._next_message(conn, receive)
                if message["type"] == "websocket.disconnect":
                    return int(message.get("code") or CLOSE_NO_STATUS), str(message.get("reason") or "")
                if message["type"] != "websocket.receive":
                    continue
                if message.get("text") is None:
                    # API Gateway takes text frames only.
                    await conn.close(CLOSE_UNSUPPORTED_DATA, "Binary frames are not supported")
                    continue
                conn.touch(self._clock())
                # API Gateway invokes the integration for each message as it comes, without waiting.
                task = asyncio.create_task(self._route(conn, str(message["text"])))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        finally:
            conn.closing = True
            self.connections.pop(conn.connection_id, None)
            # $disconnect comes after the messages already taken, so it has the last word.
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def _next_message(self, conn: Connection, receive: Receive) -> Mapping[str, Any]:
        while True:
            left = None if conn.closing else conn.seconds_left(self._idle_timeout_s, self._max_connection_s)
            try:
                return await asyncio.wait_for(receive(), left)
            except TimeoutError:
                await conn.close(CLOSE_GOING_AWAY, "Going away")  # the disconnect message follows

    async def _route(self, conn: Connection, body: str) -> None:
        request_id = api_gateway_id()
        route_key = select_route(body, self.api.route_selection_expression, self._message_routes)
        if route_key is None:
            await self._reply(conn, {"message": "Forbidden", "connectionId": conn.connection_id}, request_id)
            return
        started = time.monotonic()
        event = self.events.message(conn, route_key, body, request_id)
        outcome = await self._call(self.api.routes[route_key], event)
        logger.debug("WS %s %s (%.0f ms)", conn.connection_id, route_key, _elapsed_ms(started))
        failure = failure_message(outcome)
        if failure is not None:
            await self._reply(conn, {"message": failure, "connectionId": conn.connection_id}, request_id)
        elif route_key in self.api.two_way and not isinstance(outcome, str):
            await self._send_route_response(conn, outcome.payload)

    async def _reply(self, conn: Connection, message: dict[str, Any], request_id: str) -> None:
        with contextlib.suppress(ConnectionGoneError):
            await conn.deliver(_json({**message, "requestId": request_id}), self._clock())

    async def _send_route_response(self, conn: Connection, payload: Any) -> None:
        body = payload.get("body") if isinstance(payload, dict) else payload
        if body is None:
            return
        with contextlib.suppress(ConnectionGoneError):
            text = body if isinstance(body, str) else json.dumps(body)
            await conn.deliver(text.encode(), self._clock())

    async def _call(self, function: str, event: Mapping[str, Any]) -> Outcome:
        """The function's answer, or the gateway's own failure: "timeout" or "error"."""
        try:
            result = await self._invoke(function, event, self._integration_timeout_s)
        except TimeoutError:
            logger.error("%s did not answer within %.0f s", function, self._integration_timeout_s)
            return "timeout"
        except (NoCapacityError, PoolClosedError):
            return "error"
        if result.error is not None:
            logger.error("%s failed: %s: %s", function, result.error.error_type, result.error.message)
        return result

    # -- the @connections API ----------------------------------------------------------------------

    async def _management(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = str(uuid.uuid4())
        answer = await self._manage(scope, receive)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(answer.body)).encode()),
            (b"x-amzn-requestid", request_id.encode()),
            (b"x-amz-apigw-id", api_gateway_id().encode()),
        ]
        if answer.error_type is not None:
            headers.append((b"x-amzn-errortype", answer.error_type.encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})
        logger.debug("@connections %s %s %s", scope["method"], scope["path"], answer.status)

    async def _admit(
        self, scope: Scope, receive: Receive, connection_id: str
    ) -> tuple[_Answer | None, bytes]:
        """The caller's signature and permission, and the body; a refusal, as API Gateway answers it."""
        header_list = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        headers = dict(header_list)
        signed = headers.get("authorization", "").startswith("AWS4-HMAC-SHA256 ") or (
            b"X-Amz-Signature=" in scope.get("query_string", b"")
        )
        if not signed:  # a request with no signature at all is refused, as on AWS
            return _Answer(403, _json({"message": "Missing Authentication Token"}), "ForbiddenException"), b""
        data = b""
        if scope["method"] == "POST":
            body = await _read_body(receive, MAX_MESSAGE_BYTES)
            if body is None:
                return _Answer(413, _json({"message": "Message too long"}), "PayloadTooLargeException"), b""
            data = body
        if self._authorize is not None:
            raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
            query = scope.get("query_string", b"").decode("latin-1")
            call = SignedCall(scope["method"], raw_path, query, header_list, data, connection_id)
            return await self._authorize(call), data
        return None, data

    async def _manage(self, scope: Scope, receive: Receive) -> _Answer:
        match = self._connections_path.match(scope["path"])
        if match is None:
            return _Answer(403, _json({"message": "Forbidden"}), "ForbiddenException")
        connection_id = match.group(1)
        refused, data = await self._admit(scope, receive, connection_id)
        if refused is not None:
            return refused
        method = scope["method"]
        conn = self.connections.get(connection_id)
        if method == "POST":
            if conn is None:
                return _GONE
            try:
                await conn.deliver(data, self._clock())
            except ConnectionGoneError:
                return _GONE
            return _Answer(200)
        if conn is None or conn.closing:
            return _GONE
        if method == "GET":
            # The wire names (boto3 answers them as ConnectedAt, Identity.SourceIp, ...).
            info = {
                "connectedAt": _iso(conn.connected_at),
                "identity": {"sourceIp": conn.source_ip, "userAgent": conn.user_agent},
                "lastActiveAt": _iso(conn.last_active_at),
            }
            return _Answer(200, _json(info))
        if method == "DELETE":
            await conn.close(1000)
            return _Answer(204)
        return _Answer(403, _json({"message": "Missing Authentication Token"}), "ForbiddenException")


def canonical_header(name: str) -> str:
    """``sec-websocket-key`` as HTTP/1.1 clients spell it: ``Sec-WebSocket-Key``.

    API Gateway hands a handler the header names as the client sent them; uvicorn has lowercased them
    by then, and clients send the canonical spelling.
    """
    return "-".join(part.capitalize() for part in name.split("-")).replace("Websocket", "WebSocket")


def _handshake(scope: Scope) -> Handshake:
    client = scope.get("client") or ("127.0.0.1", 0)
    server = scope.get("server") or ("127.0.0.1", 80)
    return Handshake(
        path=scope["path"],
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=[(canonical_header(k.decode("latin-1")), v.decode("latin-1")) for k, v in scope["headers"]],
        source_ip=str(client[0]),
        port=int(server[1] or 80),
    )


def _refusal_body(outcome: Outcome) -> tuple[bytes, str]:
    """What a refused client reads: the function's own answer, or the gateway's message."""
    failure = failure_message(outcome)
    if failure is not None or isinstance(outcome, str):
        return _json({"message": failure or "Internal server error"}), "application/json"
    payload = outcome.payload
    body = payload.get("body") if isinstance(payload, dict) else None
    if body is None:
        return b"", "text/plain; charset=utf-8"
    text = body if isinstance(body, str) else json.dumps(body)
    headers = payload.get("headers") if isinstance(payload, dict) else None
    content_type = {str(k).lower(): str(v) for k, v in (headers or {}).items()}.get("content-type")
    return text.encode(), content_type or "text/plain; charset=utf-8"


async def _refuse(send: Send, status: int, body: bytes, content_type: str) -> None:
    headers = [
        (b"content-type", content_type.encode("latin-1")),
        (b"x-amzn-requestid", str(uuid.uuid4()).encode()),
    ]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None when it is over ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _elapsed_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


# -- the component -------------------------------------------------------------------------------------


class WebSocketGatewayComponent:
    """Component: the template's WebSocket API and its ``@connections`` endpoint, both on ``host:port``."""

    name = "websocket"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        concurrency: int = 2,
        api_id: str = "localws",
        integration_timeout_s: float = INTEGRATION_TIMEOUT_S,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        max_connection_s: float = MAX_CONNECTION_S,
    ) -> None:
        self._host, self._port = host, port
        self._concurrency = concurrency
        self._api_id = api_id
        self._integration_timeout_s = integration_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._max_connection_s = max_connection_s
        self._sock: socket.socket | None = None
        self._api: WebSocketApi | None = None
        self._server: WebSocketGateway | None = None
        self.app: WebSocketGatewayApp | None = None

    @property
    def _root(self) -> str:
        if self._sock is None:
            raise RuntimeError("reserve() first")
        host, port = self._sock.getsockname()[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"{shown}:{port}"

    @property
    def websocket_url(self) -> str:
        """Where clients connect (``?api_key=`` and all), as the template's ``wss://...`` URL says on AWS."""
        return f"ws://{self._root}{self._stage_path}"

    @property
    def management_url(self) -> str:
        """The ``@connections`` endpoint, as boto3's ``endpoint_url``."""
        return f"http://{self._root}{self._stage_path}"

    @property
    def _stage_path(self) -> str:
        return f"/{self._api.stage}" if self._api is not None and self._api.stage else ""

    def reserve(self) -> None:
        self._sock = reserve_port(
            self._host, self._port, "WebSocket gateway", "choose another with --ws-port or JOBGATE_WS_PORT"
        )

    def played_resources(self, template: Template) -> Mapping[str, Mapping[str, str]]:
        apis = websocket_apis(template)
        if not apis:
            return {}
        served, *others = apis
        if others:
            logger.warning(
                "only the first WebSocket API (%s) is served locally; not %s", served, ", ".join(others)
            )
        self._api = apis[served]
        played: dict[str, Mapping[str, str]] = {
            served: {"Ref": self._api_id, "ApiId": self._api_id, "ApiEndpoint": f"ws://{self._root}"}
        }
        for logical_id, kind in self._api.members.items():
            if kind == "AWS::ApiGatewayV2::Stage":
                played[logical_id] = {"Ref": self._api.stage}
            else:
                played[logical_id] = {"Ref": f"{logical_id.lower()}-{self._api_id}"}
        return played

    def function_environment(self) -> Mapping[str, str]:
        if self._api is None:
            return {}
        return {WEBSOCKET_URL_VARIABLE: self.websocket_url, MANAGEMENT_URL_VARIABLE: self.management_url}

    def sandboxes(self, template: Template) -> Mapping[str, int]:
        del template  # the routes were read in played_resources()
        if self._api is None:
            return {}
        return dict.fromkeys(set(self._api.routes.values()), self._concurrency)

    async def start(self, stack: RunningStack) -> None:
        if self._sock is None:
            raise RuntimeError("reserve() first")
        if self._api is None:  # no WebSocket API in the template: nothing to serve
            self._sock.close()
            return
        self.app = WebSocketGatewayApp(
            self._api,
            pool_invoker(stack.pools, stack.executor),
            api_id=self._api_id,
            integration_timeout_s=self._integration_timeout_s,
            idle_timeout_s=self._idle_timeout_s,
            max_connection_s=self._max_connection_s,
            authorize=strict_authorizer(stack.endpoint_url, self._api_id, self._api.stage),
        )
        self._server = WebSocketGateway(self.app, self._sock)
        await self._server.start()
        for route_key, function in self._api.routes.items():
            logger.info("WS %s -> %s", route_key, function)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
        elif self._sock is not None:
            self._sock.close()

    def urls(self) -> Mapping[str, str]:
        if self._api is None:
            return {}
        return {"websocket_url": self.websocket_url, "connections_url": f"{self.management_url}/@connections"}


class _DenialsAreComplete(logging.Filter):
    """uvicorn's sans-I/O protocol logs an error for every handshake an app refuses with its own HTTP
    response (ASGI's ``websocket.http.response``), which is how a refused $connect is answered."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


class WebSocketGateway(AsgiServer):
    """Serves a :class:`WebSocketGatewayApp` with uvicorn, set to behave as API Gateway does on the wire."""

    def __init__(self, app: WebSocketGatewayApp, sock: socket.socket) -> None:
        super().__init__(
            app,
            sock,
            ws="websockets-sansio",
            # websockets takes a (message, frame) pair; past either, the connection is closed with 1009.
            # uvicorn hands the value to websockets as it is, whatever its annotation says.
            ws_max_size=cast(int, (MAX_MESSAGE_BYTES, MAX_FRAME_BYTES)),
            ws_per_message_deflate=False,  # API Gateway does not compress
            ws_ping_interval=None,  # nor ping its clients; it answers their pings
        )
        self.app = app
        uvicorn_log = logging.getLogger("uvicorn.error")
        if not any(isinstance(f, _DenialsAreComplete) for f in uvicorn_log.filters):
            uvicorn_log.addFilter(_DenialsAreComplete())
