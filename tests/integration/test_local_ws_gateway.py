"""The local WebSocket gateway over real sockets: a real WebSocket client in front, functions faked behind,
and the ``@connections`` API reached as the handlers reach it, with boto3."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import boto3
import httpx
import pytest
import websockets
from botocore.config import Config
from jobgate.adapters.connections import ConnectionGone, Connections
from jobgate_local.functions import InvokeError, InvokeResult
from jobgate_local.gateway_ws import MAX_FRAME_BYTES, MAX_MESSAGE_BYTES, WebSocketGateway, WebSocketGatewayApp
from jobgate_local.procs import reserve_port
from jobgate_local.template import WebSocketApi
from websockets.exceptions import ConnectionClosed, InvalidStatus

pytestmark = pytest.mark.anyio

ROUTES = dict.fromkeys(("$connect", "$disconnect", "subscribe", "echo", "$default"), "WsFunction")
API = WebSocketApi("WebSocketApi", "v1", "$request.body.action", ROUTES, two_way=frozenset({"echo"}))
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeFunctions:
    """Plays WsFunction: records each event and answers what the test set for its route."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.answers: dict[str, Any] = {}

    async def __call__(self, function: str, event: Mapping[str, Any], timeout: float) -> InvokeResult:
        assert function == "WsFunction"
        self.events.append(dict(event))
        answer = self.answers.get(event["requestContext"]["routeKey"], {"statusCode": 200})
        if isinstance(answer, InvokeError):
            return InvokeResult("req", error=answer)
        if callable(answer):
            answer = answer(event)
        return InvokeResult("req", payload=answer)

    def of(self, route_key: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["requestContext"]["routeKey"] == route_key]


class Gateway:
    def __init__(self, app: WebSocketGatewayApp, port: int, functions: FakeFunctions) -> None:
        self.app = app
        self.functions = functions
        self.root = f"127.0.0.1:{port}"
        self.url = f"ws://{self.root}/v1"
        self.management_url = f"http://{self.root}/v1"

    def management(self) -> Any:
        """The boto3 client the handlers use, pointed at the gateway as they are."""
        config = Config(retries={"max_attempts": 1, "mode": "standard"})
        return boto3.session.Session().client(
            "apigatewaymanagementapi", endpoint_url=self.management_url, config=config, **CREDENTIALS
        )

    async def call(self, method: Callable[..., Any], **kwargs: Any) -> Any:
        return await asyncio.to_thread(method, **kwargs)

    async def connection_id(self, route_key: str = "$connect", index: int = -1) -> str:
        await until(lambda: self.functions.of(route_key))
        return str(self.functions.of(route_key)[index]["requestContext"]["connectionId"])


@asynccontextmanager
async def serve(api: WebSocketApi = API, **options: Any) -> AsyncIterator[Gateway]:
    functions = FakeFunctions()
    sock = reserve_port("127.0.0.1", 0, "test WebSocket gateway")
    port = sock.getsockname()[1]
    app = WebSocketGatewayApp(api, functions, api_id="testapi", **options)
    server = WebSocketGateway(app, sock)
    await server.start()
    try:
        yield Gateway(app, port, functions)
    finally:
        await server.stop()


async def until(condition: Callable[[], Any], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_client_connects_sends_and_leaves_with_api_gateways_events() -> None:
    async with serve() as gw:
        async with websockets.connect(f"{gw.url}?api_key=k1&tag=a&tag=b", user_agent_header="tester/1") as ws:
            await ws.send(json.dumps({"action": "subscribe", "job_id": "j1"}))
            await ws.send("not json")
            await until(lambda: len(gw.functions.events) == 3)
            await ws.close(4001, "done here")
        await until(lambda: gw.functions.of("$disconnect"))
    connect, *messages, disconnect = gw.functions.events
    context = connect["requestContext"]
    connection_id = context["connectionId"]
    assert context["eventType"] == "CONNECT" and context["stage"] == "v1" and context["apiId"] == "testapi"
    assert context["domainName"] == "127.0.0.1" and context["identity"] == {"sourceIp": "127.0.0.1"}
    assert connect["queryStringParameters"] == {"api_key": "k1", "tag": "b"}
    assert connect["multiValueQueryStringParameters"]["tag"] == ["a", "b"]
    assert connect["headers"]["User-Agent"] == "tester/1" and "Sec-WebSocket-Key" in connect["headers"]
    assert "Upgrade" not in connect["headers"]
    assert [(m["requestContext"]["routeKey"], m["body"]) for m in messages] == [
        ("subscribe", '{"action": "subscribe", "job_id": "j1"}'),
        ("$default", "not json"),
    ]
    assert {m["requestContext"]["connectionId"] for m in messages} == {connection_id}
    assert {m["requestContext"]["connectedAt"] for m in (connect, *messages, disconnect)} == {
        context["connectedAt"]
    }
    assert disconnect["requestContext"]["connectionId"] == connection_id
    assert disconnect["requestContext"]["disconnectStatusCode"] == 4001
    assert disconnect["requestContext"]["disconnectReason"] == "done here"


async def test_the_bare_path_is_the_stage_too_and_another_path_is_refused_with_403() -> None:
    async with serve() as gw:
        async with websockets.connect(f"ws://{gw.root}/?api_key=k1") as ws:
            await ws.send('{"action": "subscribe"}')
            await until(lambda: gw.functions.of("subscribe"))
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(f"ws://{gw.root}/prod")
    assert refused.value.response.status_code == 403
    assert len(gw.functions.of("$connect")) == 1  # the wrong path never reached the function


async def test_a_non_2xx_connect_answer_refuses_the_handshake_with_that_status() -> None:
    async with serve() as gw:
        gw.functions.answers["$connect"] = {"statusCode": 401, "body": "Unauthorized"}
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(f"{gw.url}?api_key=wrong")
        connection_id = await gw.connection_id()
        client = gw.management()
        with pytest.raises(client.exceptions.GoneException):
            await gw.call(client.get_connection, ConnectionId=connection_id)
    assert refused.value.response.status_code == 401
    assert refused.value.response.body == b"Unauthorized"
    assert gw.functions.of("$disconnect") == []  # it never connected


@pytest.mark.parametrize(
    ("answer", "status"),
    [(InvokeError("KeyError", "'api_key'"), 502), (None, 502), ({"body": "no status"}, 502)],
)
async def test_a_failing_or_malformed_connect_answer_is_a_502(answer: Any, status: int) -> None:
    async with serve() as gw:
        gw.functions.answers["$connect"] = answer
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(gw.url)
    assert refused.value.response.status_code == status
    if isinstance(answer, InvokeError):
        assert json.loads(refused.value.response.body) == {"message": "Internal server error"}


async def test_post_to_connection_reaches_the_client_and_get_connection_describes_it() -> None:
    async with serve() as gw, websockets.connect(gw.url, user_agent_header="tester/2") as ws:
        connection_id = await gw.connection_id()
        client = gw.management()
        await gw.call(client.post_to_connection, ConnectionId=connection_id, Data=b'{"type":"hello"}')
        assert json.loads(await ws.recv()) == {"type": "hello"}
        await gw.call(client.post_to_connection, ConnectionId=connection_id, Data=b"\xff\x00binary")
        assert await ws.recv() == b"\xff\x00binary"  # not UTF-8: a binary frame
        info = await gw.call(client.get_connection, ConnectionId=connection_id)
    assert info["Identity"] == {"SourceIp": "127.0.0.1", "UserAgent": "tester/2"}
    assert isinstance(info["ConnectedAt"], datetime) and info["ConnectedAt"].tzinfo is not None
    assert info["ConnectedAt"] <= info["LastActiveAt"] <= datetime.now(UTC)


async def test_a_gone_connection_is_a_410_that_boto3_raises_as_gone_exception(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "AWS_DEFAULT_REGION", "us-east-1"
    )  # for the handlers' adapter, configured as in Lambda
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    async with serve() as gw:
        client = gw.management()
        with pytest.raises(client.exceptions.GoneException) as unknown:
            await gw.call(client.post_to_connection, ConnectionId="Q1Jw_cqHIAMCJ4w=", Data=b"{}")
        async with websockets.connect(gw.url):
            connection_id = await gw.connection_id()
        await until(lambda: gw.functions.of("$disconnect"))
        with pytest.raises(client.exceptions.GoneException) as closed:
            await gw.call(client.post_to_connection, ConnectionId=connection_id, Data=b"{}")
        # What the handlers' own adapter makes of it: the connection is gone, its records should go.
        with pytest.raises(ConnectionGone):
            await asyncio.to_thread(Connections(gw.management_url).send, connection_id, {"type": "log"})
    for error in (unknown.value, closed.value):
        assert error.response["Error"]["Code"] == "GoneException"
        assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 410


async def test_delete_connection_closes_the_client_and_fires_disconnect() -> None:
    async with serve() as gw, websockets.connect(gw.url) as ws:
        connection_id = await gw.connection_id()
        client = gw.management()
        await gw.call(client.delete_connection, ConnectionId=connection_id)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        await until(lambda: gw.functions.of("$disconnect"))
        with pytest.raises(client.exceptions.GoneException):
            await gw.call(client.get_connection, ConnectionId=connection_id)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    assert gw.functions.of("$disconnect")[0]["requestContext"]["disconnectStatusCode"] == 1000


async def test_a_frame_over_32_kb_closes_the_connection_with_1009() -> None:
    async with serve() as gw, websockets.connect(gw.url, max_size=None) as ws:
        await ws.send(json.dumps({"action": "subscribe", "pad": "x" * MAX_FRAME_BYTES}))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        await until(lambda: gw.functions.of("$disconnect"))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert gw.functions.of("subscribe") == []
    assert gw.functions.of("$disconnect")[0]["requestContext"]["disconnectStatusCode"] == 1009


async def test_a_message_up_to_128_kb_in_32_kb_frames_is_taken_and_a_bigger_one_is_not() -> None:
    async with serve() as gw:
        fragment = "x" * (30 * 1024)
        async with websockets.connect(gw.url) as ws:
            await ws.send([fragment] * 4)  # 120 KB in four frames
            await until(lambda: gw.functions.of("$default"))
        assert len(gw.functions.of("$default")[0]["body"]) == 4 * len(fragment)
        async with websockets.connect(gw.url) as ws:
            await ws.send([fragment] * 5)  # 150 KB
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
    assert 5 * len(fragment) > MAX_MESSAGE_BYTES
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert len(gw.functions.of("$default")) == 1


async def test_a_binary_frame_closes_the_connection_with_1003() -> None:
    async with serve() as gw, websockets.connect(gw.url) as ws:
        await ws.send(b'{"action": "subscribe"}')
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
    assert gw.functions.of("subscribe") == []


async def test_an_idle_connection_and_an_old_one_are_closed_with_1001() -> None:
    async with serve(idle_timeout_s=0.3) as gw, websockets.connect(gw.url) as ws:
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as idle:
            await asyncio.wait_for(ws.recv(), 5)
        assert 0.3 <= time.monotonic() - started < 2
    assert idle.value.rcvd is not None and idle.value.rcvd.code == 1001
    async with serve(max_connection_s=0.6, idle_timeout_s=0.3) as gw, websockets.connect(gw.url) as ws:
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as old:
            while True:  # never idle, still too old
                await ws.send('{"action": "ping"}')
                await asyncio.sleep(0.1)
        assert 0.6 <= time.monotonic() - started < 2
    assert old.value.rcvd is not None and old.value.rcvd.code == 1001


async def test_a_failing_route_is_reported_to_the_client_as_api_gateway_does() -> None:
    async with serve() as gw, websockets.connect(gw.url) as ws:
        gw.functions.answers["subscribe"] = InvokeError("RuntimeError", "boom")
        await ws.send('{"action": "subscribe"}')
        answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
        connection_id = await gw.connection_id()
    request_id = gw.functions.of("subscribe")[0]["requestContext"]["requestId"]
    assert answer == {
        "message": "Internal server error",
        "connectionId": connection_id,
        "requestId": request_id,
    }


async def test_without_a_default_route_an_unknown_action_is_forbidden() -> None:
    api = WebSocketApi(
        "WebSocketApi", "v1", "$request.body.action", {"$connect": "WsFunction", "go": "WsFunction"}
    )
    async with serve(api) as gw, websockets.connect(gw.url) as ws:
        await ws.send('{"action": "stop"}')
        answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert answer["message"] == "Forbidden" and set(answer) == {"message", "connectionId", "requestId"}
    assert [e["requestContext"]["routeKey"] for e in gw.functions.events] == ["$connect"]


async def test_a_route_with_a_route_response_sends_the_functions_answer_back() -> None:
    async with serve() as gw, websockets.connect(gw.url) as ws:
        gw.functions.answers["echo"] = lambda event: {"statusCode": 200, "body": f"echo: {event['body']}"}
        await ws.send('{"action": "echo"}')
        assert await asyncio.wait_for(ws.recv(), 5) == 'echo: {"action": "echo"}'
        await ws.send('{"action": "subscribe"}')  # one-way: the function's answer stays with the gateway
        await until(lambda: gw.functions.of("subscribe"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.3)


async def test_an_unsigned_management_call_is_refused_and_an_oversized_one_is_too_large() -> None:
    async with serve() as gw, websockets.connect(gw.url):
        connection_id = await gw.connection_id()
        async with httpx.AsyncClient() as http:
            unsigned = await http.post(f"{gw.management_url}/@connections/{connection_id}", content=b"{}")
        client = gw.management()
        with pytest.raises(client.exceptions.PayloadTooLargeException):
            data = b"x" * (MAX_MESSAGE_BYTES + 1)
            await gw.call(client.post_to_connection, ConnectionId=connection_id, Data=data)
    assert unsigned.status_code == 403
    assert unsigned.headers["x-amzn-errortype"] == "ForbiddenException"
