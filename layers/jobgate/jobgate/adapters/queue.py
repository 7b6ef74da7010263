"""SQS adapter: hands a job id to the workers."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from jobgate.errors import QueueError

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class JobQueue:
    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._sqs = client
        self._url = queue_url

    def send(self, job_id: str, tenant: str, *, delay_s: int = 0) -> str:
        try:
            got = self._sqs.send_message(
                QueueUrl=self._url,
                DelaySeconds=max(0, min(900, delay_s)),
                MessageBody=json.dumps({"job_id": job_id, "tenant": tenant}),
                MessageAttributes={"job_id": {"DataType": "String", "StringValue": job_id}},
            )
        except (ClientError, BotoCoreError) as exc:
            raise QueueError(f"Could not enqueue job {job_id}: {exc}") from exc
        return got["MessageId"]

    def ping(self) -> None:
        try:
            self._sqs.get_queue_attributes(QueueUrl=self._url, AttributeNames=["QueueArn"])
        except (ClientError, BotoCoreError) as exc:
            raise QueueError(f"Queue unreachable: {exc}") from exc
