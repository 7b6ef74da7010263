"""Secrets Manager and SSM Parameter Store adapter: one secret's value, by ARN (the secrets commands
are given; the bootstrap API key's secret is read by adapters/key_secret.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from jobgate.errors import SecretUnavailable, ServiceUnavailable

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_ssm import SSMClient

# Answers no retry will change: the secret is missing, deleted, not granted, or cannot be decrypted.
_FOR_GOOD = {
    "ResourceNotFoundException",
    "ParameterNotFound",
    "ParameterVersionNotFound",
    "AccessDeniedException",
    "AccessDenied",
    "DecryptionFailure",
    "InvalidRequestException",  # Secrets Manager: the secret is marked for deletion
}


class SecretStore:
    def __init__(self, secretsmanager: SecretsManagerClient, ssm: SSMClient) -> None:
        self._secretsmanager = secretsmanager
        self._ssm = ssm

    def read(self, arn: str) -> str:
        """The secret's current value (a SecureString parameter decrypted). Errors never carry a value."""
        service = arn.split(":")[2]
        try:
            if service == "secretsmanager":
                got = self._secretsmanager.get_secret_value(SecretId=arn)
                if "SecretString" not in got:
                    raise SecretUnavailable("it is a binary secret; only text secrets can be passed.")
                return got["SecretString"]
            # GetParameter takes the parameter's ARN as its name.
            return self._ssm.get_parameter(Name=arn, WithDecryption=True)["Parameter"]["Value"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _FOR_GOOD:
                raise SecretUnavailable(f"it could not be read ({code}).") from None
            raise ServiceUnavailable(f"The secret store did not answer ({code}).") from None
        except BotoCoreError as exc:
            raise ServiceUnavailable(f"The secret store did not answer ({type(exc).__name__}).") from None
