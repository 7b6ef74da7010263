"""Secrets Manager adapter: the bootstrap API key's secret, read once per container."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from jobgate.errors import StoreError

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


class SecretReader:
    def __init__(self, client: SecretsManagerClient) -> None:
        self._client = client

    def value(self, secret_id: str) -> str:
        """The secret's current string value (AWSCURRENT); raises StoreError when it cannot be read."""
        try:
            answer = self._client.get_secret_value(SecretId=secret_id)
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"Could not read the secret {secret_id}: {exc}") from exc
        if "SecretString" not in answer:
            raise StoreError(f"The secret {secret_id} holds no string")
        return answer["SecretString"]
