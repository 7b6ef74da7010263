"""SQS adapters: hand a job id to the workers; move messages from a dead-letter queue back."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from jobgate.errors import QueueError
from jobgate.models import Runner

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class JobQueue:
    """The worker Lambda's queue, and the container runner's (its dispatcher starts a task per message)."""

    def __init__(self, client: SQSClient, queue_url: str, container_queue_url: str | None = None) -> None:
        self._sqs = client
        self._url = queue_url
        self._container_url = container_queue_url

    def send(
        self, job_id: str, tenant: str, *, delay_s: int = 0, runner: Runner = "lambda", task_starts: int = 0
    ) -> str:
        url = self._url
        if runner == "container":
            if self._container_url is None:
                raise QueueError(f"Job {job_id} runs on the container runner, which is not deployed here.")
            url = self._container_url
        try:
            got = self._sqs.send_message(
                QueueUrl=url,
                DelaySeconds=max(0, min(900, delay_s)),
                MessageBody=json.dumps(
                    {
                        "job_id": job_id,
                        "tenant": tenant,
                        **({"task_starts": task_starts} if task_starts else {}),
                    }
                ),
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


class QueueMover:
    """Moves messages between queues as an operator redrives a dead-letter queue: each one sent to
    the destination before it is deleted from the source, so a failure leaves it in one or both
    (a duplicate the consumers already tolerate), never in neither."""

    def __init__(self, client: SQSClient) -> None:
        self._sqs = client

    def move(self, source_url: str, destination_url: str, *, limit: int) -> int:
        """Move up to `limit` messages (body and attributes); answer how many moved."""
        moved = 0
        try:
            while moved < limit:
                got = self._sqs.receive_message(
                    QueueUrl=source_url,
                    MaxNumberOfMessages=min(10, limit - moved),
                    MessageAttributeNames=["All"],
                    VisibilityTimeout=60,
                    WaitTimeSeconds=1,
                )
                messages = got.get("Messages", [])
                if not messages:
                    break
                for message in messages:
                    attributes = message.get("MessageAttributes", {})
                    if attributes:
                        self._sqs.send_message(
                            QueueUrl=destination_url,
                            MessageBody=message["Body"],
                            MessageAttributes=attributes,
                        )
                    else:
                        self._sqs.send_message(QueueUrl=destination_url, MessageBody=message["Body"])
                    self._sqs.delete_message(QueueUrl=source_url, ReceiptHandle=message["ReceiptHandle"])
                    moved += 1
        except (ClientError, BotoCoreError) as exc:
            raise QueueError(f"Could not move messages after {moved}: {exc}") from exc
        return moved

    def depth(self, queue_url: str) -> int:
        """Messages waiting in the queue (SQS's approximate count)."""
        try:
            got = self._sqs.get_queue_attributes(
                QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
            )
        except (ClientError, BotoCoreError) as exc:
            raise QueueError(f"Queue unreachable: {exc}") from exc
        return int(got["Attributes"].get("ApproximateNumberOfMessages", "0"))
