"""Test resources created from template.yaml's own definitions, in an in-process moto."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


@dataclass
class Resources:
    table_name: str
    queue_url: str
    dlq_url: str
    bucket_name: str

    def env(self) -> dict[str, str]:
        return {
            "JOBGATE_TABLE_NAME": self.table_name,
            "JOBGATE_QUEUE_URL": self.queue_url,
            "JOBGATE_BUCKET_NAME": self.bucket_name,
        }


def _plain(node: Any) -> Any:
    return json.loads(json.dumps(node))


def create_resources(suffix: str = "test") -> Resources:
    """The table (keys, GSIs, TTL), queues (redrive) and bucket, as template.yaml declares them."""
    template, matches = decode(str(TEMPLATE))
    assert template is not None, matches
    res = template["Resources"]
    table = _plain(res["JobsTable"]["Properties"])
    ddb = boto3.client("dynamodb")
    name = f"jobs-{suffix}"
    ddb.create_table(
        TableName=name,
        AttributeDefinitions=table["AttributeDefinitions"],
        KeySchema=table["KeySchema"],
        GlobalSecondaryIndexes=table["GlobalSecondaryIndexes"],
        BillingMode=table["BillingMode"],
    )
    ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=table["TimeToLiveSpecification"])
    sqs = boto3.client("sqs")
    dlq_url = sqs.create_queue(QueueName=f"jobs-dlq-{suffix}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = _plain(res["JobsQueue"]["Properties"]["RedrivePolicy"])
    redrive["deadLetterTargetArn"] = dlq_arn
    queue_url = sqs.create_queue(
        QueueName=f"jobs-{suffix}",
        Attributes={"VisibilityTimeout": "30", "RedrivePolicy": json.dumps(redrive)},
    )["QueueUrl"]
    bucket = f"jobgate-data-{suffix}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return Resources(table_name=name, queue_url=queue_url, dlq_url=dlq_url, bucket_name=bucket)
