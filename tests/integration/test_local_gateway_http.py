"""The local HTTP gateway over real HTTP, in front of a real sandbox running a small echo handler."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from textwrap import dedent

import httpx
import pytest
from jobgate_local.functions import FunctionConfig, FunctionPool
from jobgate_local.gateway_http import HttpGateway, HttpGatewayApp, pool_invoker
from jobgate_local.procs import reserve_port
from jobgate_local.template import HttpRoute

HANDLER = dedent(
    """
    import json, time

    def handler(event, context):
        path = event["rawPath"]
        if path == "/boom":
            raise RuntimeError("boom")
        if path == "/sleep":
            time.sleep(float(event["queryStringParameters"]["s"]))
        if path == "/cookies":
            return {"statusCode": 201, "cookies": ["a=1; Path=/", "b=2"], "body": "made"}
        if path == "/mirror":
            return {
                "statusCode": 200,
                "headers": {"content-type": event["headers"].get("content-type", "")},
                "body": event.get("body", ""),
                "isBase64Encoded": event["isBase64Encoded"],
            }
        return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(event)}
    """
)
PROXY = HttpRoute(
    api="HttpApi", route_key="ANY /{proxy+}", method="ANY", path="/{proxy+}", function="ApiFunction"
)


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    code = tmp_path_factory.mktemp("api")
    (code / "app.py").write_text(HANDLER)
    config = FunctionConfig("ApiFunction", "test-ApiFunction", Path(code), "app.handler", timeout_s=2.0)
    pool = FunctionPool(config, 2, python=sys.executable)
    pool.start()
    executor = ThreadPoolExecutor(4)
    app = HttpGatewayApp([PROXY], pool_invoker({"ApiFunction": pool}, executor), integration_timeout_s=3.0)
    gateway = HttpGateway(app, reserve_port("127.0.0.1", 0, "test gateway"))
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        await gateway.start()
        started.set()
        await stop.wait()
        await gateway.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(30)
    pool.wait_ready(30)
    try:
        yield gateway.url
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        pool.stop()
        executor.shutdown()


def test_the_function_sees_an_api_gateway_v2_event(gateway_url: str) -> None:
    response = httpx.get(
        f"{gateway_url}/v1/jobs?status=queued&status=running",
        headers=[("X-Multi", "1"), ("X-Multi", "2"), ("Cookie", "session=abc")],
    )
    assert response.status_code == 200
    event = response.json()
    assert event["version"] == "2.0"
    assert event["routeKey"] == "ANY /{proxy+}"
    assert event["pathParameters"] == {"proxy": "v1/jobs"}
    assert event["queryStringParameters"] == {"status": "queued,running"}
    assert event["headers"]["x-multi"] == "1,2"
    assert event["cookies"] == ["session=abc"]
    assert event["requestContext"]["http"]["method"] == "GET"
    assert event["requestContext"]["http"]["sourceIp"] == "127.0.0.1"
    assert response.headers["apigw-requestid"] == event["requestContext"]["requestId"]


def test_a_binary_body_round_trips_through_base64(gateway_url: str) -> None:
    data = bytes(range(256)) * 64
    response = httpx.post(f"{gateway_url}/mirror", content=data, headers={"content-type": "image/png"})
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/png"


def test_a_text_body_reaches_the_function_as_text(gateway_url: str) -> None:
    response = httpx.post(f"{gateway_url}/anything", json={"stage": "visualize"})
    event = response.json()
    assert event["isBase64Encoded"] is False
    assert event["body"] == '{"stage":"visualize"}'


def test_an_11_mb_body_is_refused_with_413(gateway_url: str) -> None:
    response = httpx.post(f"{gateway_url}/mirror", content=b"x" * (11 * 1024 * 1024), timeout=30)
    assert response.status_code == 413
    assert response.json() == {"message": "Request Entity Too Large"}


def test_cookies_become_set_cookie_headers(gateway_url: str) -> None:
    response = httpx.get(f"{gateway_url}/cookies")
    assert response.status_code == 201
    assert response.text == "made"
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2"]


def test_a_handler_error_is_a_500(gateway_url: str) -> None:
    response = httpx.get(f"{gateway_url}/boom")
    assert response.status_code == 500
    assert response.json() == {"message": "Internal Server Error"}


def test_a_function_past_its_timeout_is_a_500(gateway_url: str) -> None:
    # Lambda ends the invoke at the function's 2 s timeout and reports an error; API Gateway answers 500.
    response = httpx.get(f"{gateway_url}/sleep?s=2.5", timeout=10)
    assert response.status_code == 500
    assert response.json() == {"message": "Internal Server Error"}


def test_a_request_still_waiting_at_the_integration_timeout_is_a_503(gateway_url: str) -> None:
    # Two sandboxes, three 1.9 s calls: the third waits for a sandbox and passes the 3 s integration
    # timeout this gateway has (30 s by default), so the gateway gives up on it, as API Gateway does.
    with ThreadPoolExecutor(3) as executor:
        answers = list(executor.map(lambda _: httpx.get(f"{gateway_url}/sleep?s=1.9", timeout=10), range(3)))
    assert sorted(a.status_code for a in answers) == [200, 200, 503]
    assert next(a for a in answers if a.status_code == 503).json() == {"message": "Service Unavailable"}
