"""CloudFormation adapter: a deployed stack's outputs (where the admin commands find its resources)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from jobgate.errors import NotFound

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient


class StackOutputs:
    def __init__(self, client: CloudFormationClient) -> None:
        self._client = client

    def of(self, stack_name: str) -> dict[str, str]:
        """The stack's outputs, by key; NotFound when there is no such stack (or it cannot be read)."""
        try:
            stacks = self._client.describe_stacks(StackName=stack_name)["Stacks"]
        except (ClientError, BotoCoreError) as exc:
            raise NotFound(f"Stack {stack_name}: {exc}") from exc
        if not stacks:
            raise NotFound(f"No stack {stack_name}")
        return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", []) if "OutputKey" in o}
