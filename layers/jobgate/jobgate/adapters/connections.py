"""API Gateway Management API adapter: send a message to a WebSocket connection."""

from __future__ import annotations

import json
from functools import cached_property
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from jobgate.adapters.aws import Budget, install_deadline

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient

# Short timeouts and no retries: a slow or dead subscriber must never hold a job up (3 s a send at most).
_BUDGET = Budget(connect_s=1, read_s=2, attempts=1)

# API Gateway's @connections refuses a message over 128 KB (PayloadTooLargeException, 413); the
# decimal reading of "KB" is the smaller one, so this budget holds under either.
MAX_PAYLOAD_BYTES = 128_000


def encode_message(message: dict[str, Any]) -> bytes:
    """A message as it goes on the wire: compact JSON in UTF-8 (not \\u escapes, which triple its size)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


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
        client = boto3.session.Session().client(
            "apigatewaymanagementapi", endpoint_url=self._endpoint, config=_BUDGET.config()
        )
        install_deadline(client, _BUDGET)
        return client

    def send(self, connection_id: str, message: dict[str, Any]) -> None:
        data = encode_message(message)
        if len(data) > MAX_PAYLOAD_BYTES:
            # API Gateway would refuse it; the caller fits messages first, so this is a bug upstream.
            raise SendFailed(f"{connection_id}: message of {len(data)} bytes is over {MAX_PAYLOAD_BYTES}")
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
