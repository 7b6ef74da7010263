"""API Gateway Management API adapter: send a message to a WebSocket connection."""

from __future__ import annotations

import json
from functools import cached_property
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient

# Short timeouts and no retries: a slow or dead subscriber must never hold a job up.
_CONFIG = Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1, "mode": "standard"})


class ConnectionGone(Exception):
    """The client has disconnected (410); its records should go."""


class SendFailed(Exception):
    """The message could not be sent this time."""


class Connections:
    def __init__(self, endpoint_url: str) -> None:
        self._endpoint = endpoint_url

    @cached_property
    def _client(self) -> ApiGatewayManagementApiClient:
        # An explicit endpoint: the management API lives on the WebSocket API's own domain.
        return boto3.session.Session().client(
            "apigatewaymanagementapi", endpoint_url=self._endpoint, config=_CONFIG
        )

    def send(self, connection_id: str, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode()
        try:
            self._client.post_to_connection(ConnectionId=connection_id, Data=data)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "GoneException" or status == 410:
                raise ConnectionGone(connection_id) from exc
            raise SendFailed(f"{connection_id}: {code}") from exc
        except BotoCoreError as exc:
            raise SendFailed(f"{connection_id}: {exc}") from exc
