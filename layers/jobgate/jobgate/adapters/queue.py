"""SQS adapter: hands a job id to the workers."""

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
