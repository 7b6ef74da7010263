"""`jobgate dev` with a WebSocket API: every function is told the local URLs, handlers answer through
``@connections`` with boto3, and a WebSocket port in use is one clear line."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
from pathlib import Path
from textwrap import dedent

import httpx
import pytest
import websockets
from jobgate_local.testing import free_port, jobgate_command, start_dev
from websockets.exceptions import InvalidStatus

DEV_KEY = "ws-cli-test-key-0123456789"

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  ApiKey:
    Type: String
    NoEcho: true
  StageName:
    Type: String
    Default: live
Globals:
  Function:
    Runtime: python3.12
    Handler: app.handler
    Environment:
      Variables:
        JOBGATE_WEBSOCKET_URL: !Sub "wss://${Sockets}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${StageName}"
        JOBGATE_WS_MANAGEMENT_URL: !Sub "https://${Sockets}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${StageName}"
        SOCKETS_API_ID: !Ref Sockets
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
  ApiFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: api/
      Events:
        All:
          Type: HttpApi
          Properties:
            ApiId: !Ref Api
            Path: /{proxy+}
            Method: ANY
  Sockets:
    Type: AWS::ApiGatewayV2::Api
    Properties:
      Name: sockets
      ProtocolType: WEBSOCKET
      RouteSelectionExpression: $request.body.action
  Integration:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref Sockets
      IntegrationType: AWS_PROXY
      IntegrationUri: !Sub
        - "arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${Fn}/invocations"
        - Fn: !GetAtt SocketFunction.Arn
  ConnectRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties:
      ApiId: !Ref Sockets
      RouteKey: $connect
      Target: !Sub "integrations/${Integration}"
  DefaultRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties:
      ApiId: !Ref Sockets
      RouteKey: $default
      Target: !Sub "integrations/${Integration}"
  Stage:
    Type: AWS::ApiGatewayV2::Stage
    Properties:
      ApiId: !Ref Sockets
      StageName: !Ref StageName
      AutoDeploy: true
  SocketFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: sockets/
      Environment:
        Variables:
          API_KEY: !Ref ApiKey
      Policies:
        - Statement:
            - Effect: Allow
              Action: [execute-api:ManageConnections]
              Resource: !Sub "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:\
${Sockets}/${StageName}/*/@connections/*"
"""

API_HANDLER = dedent(
    """
    import json, os

    def handler(event, context):
        names = ("JOBGATE_WEBSOCKET_URL", "JOBGATE_WS_MANAGEMENT_URL", "SOCKETS_API_ID")
        return {"statusCode": 200, "body": json.dumps({name: os.environ[name] for name in names})}
    """
)

SOCKET_HANDLER = dedent(
    """
    import json, os
    import boto3

    management_url = os.environ["JOBGATE_WS_MANAGEMENT_URL"]
    connections = boto3.client("apigatewaymanagementapi", endpoint_url=management_url)

    def handler(event, context):
        context_ = event["requestContext"]
        if context_["routeKey"] == "$connect":
            key = (event.get("queryStringParameters") or {}).get("api_key")
            return {"statusCode": 200 if key == os.environ["API_KEY"] else 401}
        answer = {"echo": event["body"], "route": context_["routeKey"], "stage": context_["stage"]}
        data = json.dumps(answer).encode()
        connections.post_to_connection(ConnectionId=context_["connectionId"], Data=data)
        return {"statusCode": 200}
    """
)


@pytest.fixture
def ws_template(tmp_path: Path) -> Path:
    for folder, code in (("api", API_HANDLER), ("sockets", SOCKET_HANDLER)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "app.py").write_text(code)
    (tmp_path / "template.yaml").write_text(TEMPLATE)
    return tmp_path / "template.yaml"


async def _echo(url: str, text: str) -> dict[str, str]:
    async with websockets.connect(url) as ws:
        await ws.send(text)
        answer: dict[str, str] = json.loads(await asyncio.wait_for(ws.recv(), 20))
        return answer


async def _refused_status(url: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(url)
    return refused.value.response.status_code


def test_dev_serves_the_websocket_api_and_tells_every_function_where_it_is(
    ws_template: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "JOBGATE_DEV_API_KEY": DEV_KEY}
    args = ["--api-concurrency", "1", "--workers", "1"]
    with start_dev(template=ws_template, workdir=tmp_path / "run", args=args, env=env, timeout=60) as dev:
        ws_url = dev.websocket_url
        port = ws_url.split(":")[2].split("/")[0]
        assert ws_url == f"ws://127.0.0.1:{port}/live"
        assert dev.state["connections_url"] == f"http://127.0.0.1:{port}/live/@connections"
        told = httpx.get(f"{dev.http_url}/anything").json()
        assert told["JOBGATE_WEBSOCKET_URL"] == ws_url
        assert told["JOBGATE_WS_MANAGEMENT_URL"] == f"http://127.0.0.1:{port}/live"
        assert told["SOCKETS_API_ID"] == "localws"  # the API's Ref is the local one, not a placeholder

        answer = asyncio.run(_echo(f"{ws_url}?api_key={DEV_KEY}", '{"action": "hello"}'))
        assert answer == {"echo": '{"action": "hello"}', "route": "$default", "stage": "live"}
        assert asyncio.run(_refused_status(f"{ws_url}?api_key=wrong")) == 401
        assert dev.stop() == 0, dev.log()
    log = dev.log()
    assert f"websocket   {ws_url}" in log
    assert "Sockets (AWS::ApiGatewayV2::Api) is not emulated" not in log


def test_a_websocket_port_in_use_is_one_clear_line_and_exit_status_1(
    ws_template: Path, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        state = tmp_path / "state.json"
        command = [*jobgate_command(), "dev", "--template", str(ws_template), "--port", str(free_port())]
        result = subprocess.run(
            [*command, "--ws-port", str(port), "--state-file", str(state)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"jobgate dev: port {port} on 127.0.0.1 is already in use (WebSocket gateway); "
        "choose another with --ws-port or JOBGATE_WS_PORT"
    ]
    assert result.stdout == ""
    assert not state.exists()
