"""The local HTTP gateway against API Gateway's HTTP API contract, with a fake function behind it."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from jobgate_local.functions import InvokeError, InvokeResult
from jobgate_local.gateway_http import (
    HttpGatewayApp,
    HttpRequest,
    build_event,
    build_response,
    compile_routes,
    match_route,
)
from jobgate_local.template import HttpRoute

pytestmark = pytest.mark.anyio

PROXY = HttpRoute(
    api="HttpApi", route_key="ANY /{proxy+}", method="ANY", path="/{proxy+}", function="ApiFunction"
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeFunction:
    """Records the events it gets and answers with what the test decides."""

    def __init__(self, answer: Any = None, *, error: InvokeError | None = None, delay: float = 0.0) -> None:
        self.events: list[Mapping[str, Any]] = []
        self.answer = answer if answer is not None else {"statusCode": 200, "body": "ok"}
        self.error = error
        self.delay = delay

    async def __call__(self, function: str, event: Mapping[str, Any], timeout: float) -> InvokeResult:
        assert function == "ApiFunction"
        self.events.append(event)
        if self.delay:
            await asyncio.wait_for(asyncio.sleep(self.delay), timeout)
        return InvokeResult("req-1", payload=None if self.error else self.answer, error=self.error)


def client(fake: FakeFunction, **options: Any) -> httpx.AsyncClient:
    app = HttpGatewayApp([PROXY], fake, **options)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000")


async def test_event_has_the_payload_format_2_0_shape() -> None:
    fake = FakeFunction()
    async with client(fake) as http:
        response = await http.post(
            "/v1/jobs?limit=5&status=queued&status=running",
            json={"stage": "visualize"},
            headers=[
                ("X-Custom", "a"),
                ("x-custom", "b"),
                ("Cookie", "c1=1; c2=2"),
                ("User-Agent", "pytest/1"),
            ],
        )
    assert response.status_code == 200
    event = fake.events[0]
    assert event["version"] == "2.0"
    assert event["routeKey"] == "ANY /{proxy+}"
    assert event["rawPath"] == "/v1/jobs"
    assert event["rawQueryString"] == "limit=5&status=queued&status=running"
    assert event["queryStringParameters"] == {"limit": "5", "status": "queued,running"}
    assert event["pathParameters"] == {"proxy": "v1/jobs"}
    assert event["headers"]["x-custom"] == "a,b"
    assert all(name == name.lower() for name in event["headers"])
    assert "cookie" not in event["headers"]
    assert event["cookies"] == ["c1=1", "c2=2"]
    assert event["headers"]["x-forwarded-proto"] == "http"
    assert event["headers"]["x-forwarded-port"] == "8000"
    assert json.loads(event["body"]) == {"stage": "visualize"}
    assert event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["http"] == {
        "method": "POST",
        "path": "/v1/jobs",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "pytest/1",
    }
    assert context["routeKey"] == "ANY /{proxy+}"
    assert context["stage"] == "$default"
    assert context["accountId"] == "123456789012"
    assert context["domainName"] == "127.0.0.1"
    assert isinstance(context["timeEpoch"], int) and context["time"].endswith("+0000")
    assert response.headers["apigw-requestid"] == context["requestId"]


async def test_a_request_without_query_or_body_leaves_those_fields_out() -> None:
    fake = FakeFunction()
    async with client(fake) as http:
        await http.get("/health/live")
    event = fake.events[0]
    assert event["rawQueryString"] == ""
    assert "queryStringParameters" not in event
    assert "body" not in event
    assert "cookies" not in event
    assert event["isBase64Encoded"] is False


@pytest.mark.parametrize(
    ("content_type", "encoded"),
    [
        ("application/json", False),
        ("application/json; charset=utf-8", False),
        ("text/plain", False),
        ("application/xml", False),
        ("application/octet-stream", True),
        ("image/png", True),
        ("application/x-www-form-urlencoded", True),
        ("multipart/form-data; boundary=x", True),
        (None, True),
    ],
)
async def test_binary_bodies_arrive_base64_encoded_as_api_gateway_sends_them(
    content_type: str | None, encoded: bool
) -> None:
    fake = FakeFunction()
    body = b"a=1&b=2"
    headers = {"content-type": content_type} if content_type else {}
    async with client(fake) as http:
        await http.post("/upload", content=body, headers=headers)
    event = fake.events[0]
    assert event["isBase64Encoded"] is encoded
    assert (base64.b64decode(event["body"]) if encoded else event["body"].encode()) == body


async def test_undecodable_text_body_is_sent_base64_encoded() -> None:
    fake = FakeFunction()
    async with client(fake) as http:
        await http.post("/upload", content=bytes([0xFF, 0xFE, 0x00]), headers={"content-type": "text/plain"})
    assert fake.events[0]["isBase64Encoded"] is True
    assert base64.b64decode(fake.events[0]["body"]) == bytes([0xFF, 0xFE, 0x00])


async def test_response_maps_status_headers_cookies_and_base64_body() -> None:
    answer = {
        "statusCode": 201,
        "headers": {"Content-Type": "image/png", "X-Thing": "1,2"},
        "cookies": ["a=1; Path=/", "b=2"],
        "body": base64.b64encode(bytes(range(256))).decode(),
        "isBase64Encoded": True,
    }
    async with client(FakeFunction(answer)) as http:
        response = await http.get("/picture")
    assert response.status_code == 201
    assert response.content == bytes(range(256))
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-thing"] == "1,2"
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2"]


async def test_an_answer_without_status_code_becomes_a_200_json_body() -> None:
    async with client(FakeFunction({"hello": "world"})) as http:
        response = await http.get("/anything")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"hello": "world"}


async def test_a_function_error_is_api_gateways_500() -> None:
    fake = FakeFunction(error=InvokeError("ValueError", "boom"))
    async with client(fake) as http:
        response = await http.get("/v1/jobs")
    assert response.status_code == 500
    assert response.json() == {"message": "Internal Server Error"}


async def test_an_integration_past_the_timeout_is_api_gateways_503() -> None:
    async with client(FakeFunction(delay=5.0), integration_timeout_s=0.2) as http:
        response = await http.get("/v1/jobs")
    assert response.status_code == 503
    assert response.json() == {"message": "Service Unavailable"}


async def test_a_body_over_10_mb_is_refused_with_413_before_the_function_runs() -> None:
    fake = FakeFunction()
    async with client(fake) as http:
        response = await http.post("/upload", content=b"x" * (11 * 1024 * 1024))
    assert response.status_code == 413
    assert response.json() == {"message": "Request Entity Too Large"}
    assert fake.events == []


async def test_a_path_no_route_matches_is_api_gateways_404() -> None:
    fake = FakeFunction()
    async with client(fake) as http:
        response = await http.get("/")  # {proxy+} needs at least one segment
    assert response.status_code == 404
    assert response.json() == {"message": "Not Found"}
    assert fake.events == []


def test_routes_prefer_exact_paths_then_variables_then_greedy_then_default() -> None:
    routes = compile_routes(
        [
            PROXY,
            HttpRoute("A", "$default", "ANY", "$default", "Fallback"),
            HttpRoute("A", "GET /v1/jobs/{id}", "GET", "/v1/jobs/{id}", "GetJob"),
            HttpRoute("A", "GET /v1/jobs/latest", "GET", "/v1/jobs/latest", "Latest"),
        ]
    )
    assert match_route(routes, "GET", "/v1/jobs/latest") == (routes[0].route, {})
    route, parameters = match_route(routes, "GET", "/v1/jobs/01ABC") or (None, None)
    assert route is not None and route.function == "GetJob" and parameters == {"id": "01ABC"}
    route, parameters = match_route(routes, "DELETE", "/v1/jobs/01ABC") or (None, None)
    assert route is not None and route.function == "ApiFunction" and parameters == {"proxy": "v1/jobs/01ABC"}
    route, _ = match_route(routes, "GET", "/") or (None, None)
    assert route is not None and route.function == "Fallback"


def test_repeated_forwarded_for_is_extended_with_the_client() -> None:
    request = HttpRequest("GET", "/x", "", [("X-Forwarded-For", "10.0.0.1")], b"", source_ip="127.0.0.1")
    event = build_event(request, PROXY, {"proxy": "x"}, api_id="local", request_id="r")
    assert event["headers"]["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"


def test_an_invalid_answer_is_a_500() -> None:
    assert build_response(InvokeResult("r", payload={"statusCode": "abc"})).status == 500
    assert (
        build_response(
            InvokeResult("r", payload={"statusCode": 200, "body": "%%", "isBase64Encoded": True})
        ).status
        == 500
    )
