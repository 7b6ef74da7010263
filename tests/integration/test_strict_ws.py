"""The WebSocket gateway's ``@connections`` API as API Gateway guards it: the caller's SigV4 signature and
its role's ``execute-api:ManageConnections`` on the connection, decided by the strict local AWS; and the
128 KB payload limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import boto3
import pytest
import websockets
from botocore.config import Config
from botocore.exceptions import ClientError
from jobgate_local.gateway_ws import (
    MAX_MESSAGE_BYTES,
    WebSocketGateway,
    WebSocketGatewayApp,
    strict_authorizer,
)
from jobgate_local.procs import reserve_port

from tests.integration.test_local_ws_gateway import API, FakeFunctions, Gateway
from tests.support.strict import StrictAws

pytestmark = pytest.mark.anyio
API_ID = "localws"  # what the roles' ManageConnections statements name (tests.support.strict)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def strict_gateway(strict: StrictAws) -> AsyncIterator[Gateway]:
    functions = FakeFunctions()
    sock = reserve_port("127.0.0.1", 0, "test WebSocket gateway")
    port = sock.getsockname()[1]
    authorize = strict_authorizer(strict.endpoint_url, API_ID, API.stage)
    app = WebSocketGatewayApp(API, functions, api_id=API_ID, authorize=authorize)
    server = WebSocketGateway(app, sock)
    await server.start()
    try:
        yield Gateway(app, port, functions)
    finally:
        await server.stop()


def management_as(gw: Gateway, credentials: dict[str, str]) -> Any:
    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=gw.management_url,
        region_name="us-east-1",
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=credentials.get("AWS_SESSION_TOKEN"),
        config=Config(retries={"total_max_attempts": 1}),
    )


async def test_a_role_with_manage_connections_posts_and_one_without_is_refused(aws: StrictAws) -> None:
    async with strict_gateway(aws) as gw, websockets.connect(gw.url) as ws:
        connection_id = await gw.connection_id()
        worker = management_as(gw, aws.credentials["worker"])
        await gw.call(worker.post_to_connection, ConnectionId=connection_id, Data=b'{"type":"status"}')
        assert await ws.recv() == '{"type":"status"}'

        assets = management_as(gw, aws.credentials["assets"])  # AssetsFunction's role has no such statement
        with pytest.raises(ClientError) as refused:
            await gw.call(assets.post_to_connection, ConnectionId=connection_id, Data=b"{}")
    error = refused.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Error"]["Code"] == "AccessDeniedException"
    role = aws.roles["assets"].name
    assert error["Error"]["Message"] == (
        f"User: arn:aws:sts::123456789012:assumed-role/{role}/jobgate-local-AssetsFunction is not authorized "
        f"to perform: execute-api:ManageConnections on resource: "
        f"arn:aws:execute-api:us-east-1:********9012:{API_ID}/v1/POST/@connections/{connection_id} "
        "because no identity-based policy allows the execute-api:ManageConnections action"
    )


async def test_unknown_keys_and_wrong_secrets_are_refused(aws: StrictAws) -> None:
    async with strict_gateway(aws) as gw, websockets.connect(gw.url):
        connection_id = await gw.connection_id()
        stranger = management_as(
            gw, {"AWS_ACCESS_KEY_ID": "AKIAUNKNOWN000000000", "AWS_SECRET_ACCESS_KEY": "x"}
        )
        with pytest.raises(ClientError) as unknown:
            await gw.call(stranger.post_to_connection, ConnectionId=connection_id, Data=b"{}")
        forged = management_as(gw, {**aws.credentials["api"], "AWS_SECRET_ACCESS_KEY": "not-the-secret"})
        with pytest.raises(ClientError) as wrong:
            await gw.call(forged.post_to_connection, ConnectionId=connection_id, Data=b"{}")
    assert unknown.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert wrong.value.response["Error"]["Code"] == "InvalidSignatureException"


async def test_a_payload_over_128_kb_is_refused_with_payload_too_large(aws: StrictAws) -> None:
    async with strict_gateway(aws) as gw, websockets.connect(gw.url) as ws:
        connection_id = await gw.connection_id()
        api = management_as(gw, aws.credentials["api"])
        await gw.call(api.post_to_connection, ConnectionId=connection_id, Data=b"x" * MAX_MESSAGE_BYTES)
        assert len(await ws.recv()) == MAX_MESSAGE_BYTES
        with pytest.raises(api.exceptions.PayloadTooLargeException) as too_large:
            await gw.call(
                api.post_to_connection, ConnectionId=connection_id, Data=b"x" * (MAX_MESSAGE_BYTES + 1)
            )
    assert too_large.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
