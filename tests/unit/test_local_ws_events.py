"""The local WebSocket gateway's events, route selection and template reading, against API Gateway's."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayWebSocketEvent
from jobgate_local.functions import InvokeError, InvokeResult
from jobgate_local.gateway_ws import (
    Connection,
    EventFactory,
    Handshake,
    api_gateway_id,
    failure_message,
    handshake_status,
    select_route,
)
from jobgate_local.template import load_template, websocket_apis

ROOT = Path(__file__).resolve().parents[2]
ID_SHAPE = re.compile(r"^[A-Za-z0-9_-]{15}=$")  # as API Gateway's: Q1Jw_cqHIAMCJ4w=
NOW = 1_795_312_800.25


def sample(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((ROOT / "events" / name).read_text())
    return document


async def _send(message: Any) -> None:
    del message


def connection() -> Connection:
    return Connection(
        connection_id="Q1Jw_cqHIAMCJ4w=",
        source_ip="203.0.113.7",
        user_agent="pytest",
        domain_name="127.0.0.1",
        connected_at=NOW - 5,
        send_asgi=_send,
    )


FACTORY = EventFactory(api_id="localws", stage="v1", clock=lambda: NOW)
HANDSHAKE = Handshake(
    path="/v1",
    query="api_key=k1&tag=a&tag=b",
    headers=[
        ("Host", "127.0.0.1:8001"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "+W5xw47OHh3OTFsWKjGu9Q=="),
        ("Sec-WebSocket-Version", "13"),
        ("User-Agent", "pytest"),
    ],
    source_ip="203.0.113.7",
    port=8001,
)


def shape(node: Any) -> Any:
    """Keys and value types, recursively: what a handler can rely on."""
    if isinstance(node, dict):
        return {key: shape(value) for key, value in node.items()}
    return type(node).__name__


def test_ids_look_like_api_gateways() -> None:
    ids = {api_gateway_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(ID_SHAPE.match(i) for i in ids)


def test_connect_event_has_the_shape_of_the_sample_and_of_api_gateway() -> None:
    event = FACTORY.connect(connection(), HANDSHAKE, "Q1JxAFOfIAMFZQg=")
    expected = sample("ws-connect.json")
    context_shape = shape(event["requestContext"])
    assert {k: v for k, v in context_shape.items() if k in expected["requestContext"]} == shape(
        expected["requestContext"]
    )
    assert set(event) == set(expected)  # headers, multi-value headers and query, context, isBase64Encoded
    context = event["requestContext"]
    assert context["routeKey"] == "$connect" and context["eventType"] == "CONNECT"
    assert context["connectedAt"] == int((NOW - 5) * 1000) and context["requestTimeEpoch"] == int(NOW * 1000)
    assert context["requestTime"] == "22/Nov/2026:02:00:00 +0000"
    assert context["stage"] == "v1" and context["apiId"] == "localws"
    assert context["identity"] == {"sourceIp": "203.0.113.7"}
    assert event["queryStringParameters"] == {"api_key": "k1", "tag": "b"}
    assert event["multiValueQueryStringParameters"] == {"api_key": ["k1"], "tag": ["a", "b"]}
    # The handshake's headers as the client spelled them, without the hop-by-hop ones, plus the gateway's.
    headers = event["headers"]
    assert headers["Host"] == "127.0.0.1:8001" and headers["Sec-WebSocket-Version"] == "13"
    assert "Upgrade" not in headers and "Connection" not in headers
    assert headers["X-Forwarded-For"] == "203.0.113.7" and headers["X-Forwarded-Port"] == "8001"
    assert headers["X-Amzn-Trace-Id"].startswith("Root=1-")
    assert event["multiValueHeaders"]["Host"] == ["127.0.0.1:8001"]
    assert event["isBase64Encoded"] is False
    parsed = APIGatewayWebSocketEvent(event)
    assert parsed.request_context.connection_id == "Q1Jw_cqHIAMCJ4w="
    assert parsed.query_string_parameters == {"api_key": "k1", "tag": "b"}


def test_connect_without_a_query_has_no_query_fields() -> None:
    bare = Handshake("/v1", "", HANDSHAKE.headers, "127.0.0.1", 8001)
    event = FACTORY.connect(connection(), bare, "r")
    assert "queryStringParameters" not in event and "multiValueQueryStringParameters" not in event


def test_message_event_has_the_shape_of_the_sample() -> None:
    body = '{"action": "subscribe", "job_id": "01JD7Q9A1B2C3D4E5F6G7H8J9K"}'
    event = FACTORY.message(connection(), "subscribe", body, "Q1JxAFOfIAMFZQg=")
    expected = sample("ws-subscribe.json")
    assert set(event) == set(expected)
    context = event["requestContext"]
    assert {k: v for k, v in shape(context).items() if k != "messageId"} == shape(expected["requestContext"])
    assert context["eventType"] == "MESSAGE" and context["routeKey"] == "subscribe"
    assert ID_SHAPE.match(context["messageId"])
    assert event["body"] == body and event["isBase64Encoded"] is False
    assert APIGatewayWebSocketEvent(event).request_context.message_id == context["messageId"]


@pytest.mark.parametrize(
    ("code", "reason", "reported"),
    [
        (1000, "bye", "bye"),
        (1005, "", "Client-side close frame status not set"),
        (1001, "Going away", "Going away"),
    ],
)
def test_disconnect_event_carries_the_close_code_and_reason(code: int, reason: str, reported: str) -> None:
    event = FACTORY.disconnect(connection(), code, reason, "Q1JxAFOfIAMFZQg=")
    expected = sample("ws-disconnect.json")
    context = event["requestContext"]
    extra = {"disconnectStatusCode", "disconnectReason"}
    assert {k: v for k, v in shape(context).items() if k not in extra} == shape(expected["requestContext"])
    assert context["eventType"] == "DISCONNECT" and context["routeKey"] == "$disconnect"
    assert context["disconnectStatusCode"] == code and context["disconnectReason"] == reported
    # API Gateway's $disconnect carries these headers, whatever the handshake had.
    assert event["headers"] == {"Host": "127.0.0.1", "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""}
    assert event["multiValueHeaders"]["x-restapi"] == [""]
    assert APIGatewayWebSocketEvent(event).request_context.disconnect_status_code == code


ROUTES = ("$connect", "$disconnect", "subscribe", "unsubscribe", "$default")


@pytest.mark.parametrize(
    ("body", "route"),
    [
        ('{"action": "subscribe", "job_id": "x"}', "subscribe"),
        ('{"action": "unsubscribe"}', "unsubscribe"),
        ('{"action": "nope"}', "$default"),
        ('{"action": 5}', "$default"),
        ('{"action": "$connect"}', "$default"),  # lifecycle routes are never chosen by a message
        ('{"job_id": "x"}', "$default"),
        ("not json", "$default"),
        ('["subscribe"]', "$default"),
        ("", "$default"),
    ],
)
def test_route_is_chosen_by_the_action_field_else_default(body: str, route: str) -> None:
    assert select_route(body, "$request.body.action", ROUTES) == route


def test_route_selection_follows_nested_fields_and_needs_default_as_a_fallback() -> None:
    nested = '{"message": {"kind": "subscribe"}}'
    assert select_route(nested, "$request.body.message.kind", ROUTES) == "subscribe"
    assert select_route(nested, "${request.body.message.kind}", ROUTES) == "subscribe"
    assert select_route('{"action": "nope"}', "$request.body.action", ("subscribe",)) is None


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (InvokeResult("r", payload={"statusCode": 200}), 200),
        (InvokeResult("r", payload={"statusCode": "204"}), 204),
        (InvokeResult("r", payload={"statusCode": 401, "body": "Unauthorized"}), 401),
        (InvokeResult("r", payload={"statusCode": 403}), 403),
        (InvokeResult("r", payload=None), 502),  # a proxy integration must answer a status code
        (InvokeResult("r", payload={"body": "hi"}), 502),
        (InvokeResult("r", payload={"statusCode": "many"}), 502),
        (InvokeResult("r", payload={"statusCode": 999}), 502),
        (InvokeResult("r", error=InvokeError("ValueError", "boom")), 502),
        ("error", 502),
        ("timeout", 504),
    ],
)
def test_the_connect_answer_decides_the_handshake(outcome: Any, status: int) -> None:
    assert handshake_status(outcome) == status


def test_failures_are_told_as_api_gateway_tells_them() -> None:
    assert failure_message(InvokeResult("r", payload={"statusCode": 500})) is None
    assert failure_message(InvokeResult("r", error=InvokeError("E", "m"))) == "Internal server error"
    assert failure_message("error") == "Internal server error"
    assert failure_message("timeout") == "Endpoint request timed out"


def test_the_templates_websocket_api_is_read_with_its_stage_and_routes() -> None:
    template = load_template(ROOT / "template.yaml", {"ApiKey": "unit-test-key-0123456789"})
    apis = websocket_apis(template)
    assert list(apis) == ["WebSocketApi"]
    api = apis["WebSocketApi"]
    assert api.stage == "v1"
    assert api.route_selection_expression == "$request.body.action"
    assert dict(api.routes) == dict.fromkeys(ROUTES, "WsFunction")
    assert api.two_way == frozenset()
    assert api.members["WsStage"] == "AWS::ApiGatewayV2::Stage"
    renamed = load_template(
        ROOT / "template.yaml", {"ApiKey": "unit-test-key-0123456789", "WebSocketStageName": "live"}
    )
    assert websocket_apis(renamed)["WebSocketApi"].stage == "live"
