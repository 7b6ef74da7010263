"""template.yaml's resources, created in moto (server mode) the way `jobgate dev` creates them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jobgate_local.moto_server import MotoServer
from jobgate_local.procs import reserve_port
from jobgate_local.provision import ProvisionedStack, aws_client, provision
from jobgate_local.template import Resolver, Template, function_configs, load_template

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "provision-test-key-0123456789"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    moto = MotoServer(reserve_port("127.0.0.1", 0, "moto"))
    try:
        moto.wait_ready(30)
        yield moto.endpoint_url
    finally:
        moto.stop()


@pytest.fixture(scope="module")
def stack(moto_endpoint: str) -> tuple[Template, ProvisionedStack]:
    template = load_template(
        ROOT / "template.yaml", {"ApiKey": API_KEY, "QueueVisibilityTimeoutSeconds": "7"}
    )
    return template, provision(template, moto_endpoint)


def properties(template: Template, logical_id: str) -> dict[str, Any]:
    resource: dict[str, Any] = template.sam["Resources"][logical_id]["Properties"]
    return resource


def test_the_table_has_the_templates_keys_indexes_and_ttl(stack: tuple[Template, ProvisionedStack]) -> None:
    template, provisioned = stack
    dynamodb = aws_client("dynamodb", provisioned.endpoint_url)
    name = provisioned.physical_ids["JobsTable"]
    table = dynamodb.describe_table(TableName=name)["Table"]
    declared = properties(template, "JobsTable")
    assert table["KeySchema"] == declared["KeySchema"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    indexes = {index["IndexName"]: index["KeySchema"] for index in table["GlobalSecondaryIndexes"]}
    assert {"gsi1", "gsi2"} <= set(indexes)
    assert indexes == {index["IndexName"]: index["KeySchema"] for index in declared["GlobalSecondaryIndexes"]}
    ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}


def test_the_job_queue_redrives_to_the_dead_letter_queue(stack: tuple[Template, ProvisionedStack]) -> None:
    template, provisioned = stack
    sqs = aws_client("sqs", provisioned.endpoint_url)
    attributes = sqs.get_queue_attributes(
        QueueUrl=provisioned.physical_ids["JobsQueue"], AttributeNames=["All"]
    )["Attributes"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == provisioned.attributes[("JobsDeadLetterQueue", "Arn")]
    assert redrive["maxReceiveCount"] == properties(template, "JobsQueue")["RedrivePolicy"]["maxReceiveCount"]
    assert attributes["VisibilityTimeout"] == "7"  # the parameter override


def test_the_bucket_gets_what_moto_cloudformation_skips(stack: tuple[Template, ProvisionedStack]) -> None:
    _, provisioned = stack
    s3 = aws_client("s3", provisioned.endpoint_url)
    bucket = provisioned.physical_ids["DataBucket"]
    rules = {rule["ID"]: rule for rule in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules["expire-uploads"]["Filter"] == {"Prefix": "uploads/"}
    assert rules["expire-uploads"]["Expiration"] == {"Days": 7}
    assert rules["abort-incomplete-multipart"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    (cors,) = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
    assert cors["ExposeHeaders"] == ["ETag"] and cors["MaxAgeSeconds"] == 3600
    assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())


def test_objects_can_be_written_over_the_local_plain_http_endpoint(
    stack: tuple[Template, ProvisionedStack],
) -> None:
    _, provisioned = stack
    s3 = aws_client("s3", provisioned.endpoint_url)
    bucket = provisioned.physical_ids["DataBucket"]
    s3.put_object(Bucket=bucket, Key="results/x.txt", Body=b"hello")
    assert s3.get_object(Bucket=bucket, Key="results/x.txt")["Body"].read() == b"hello"


def test_uploads_notify_the_upload_events_queue(stack: tuple[Template, ProvisionedStack]) -> None:
    _, provisioned = stack
    s3 = aws_client("s3", provisioned.endpoint_url)
    sqs = aws_client("sqs", provisioned.endpoint_url)
    queue_url = provisioned.physical_ids["UploadEventsQueue"]
    s3.put_object(Bucket=provisioned.physical_ids["DataBucket"], Key="uploads/t/a/in.npy", Body=b"x")
    s3.put_object(Bucket=provisioned.physical_ids["DataBucket"], Key="logs/ignored.txt", Body=b"x")
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
            events.extend(json.loads(message["Body"]).get("Records", []))
        if events:
            break
    assert [event["eventName"] for event in events] == ["ObjectCreated:Put"]
    assert events[0]["s3"]["object"]["key"].startswith("uploads")


def test_function_environment_resolves_to_the_provisioned_names(
    stack: tuple[Template, ProvisionedStack],
) -> None:
    template, provisioned = stack
    declared = {lid: res["Type"] for lid, res in template.resources.items()}
    resolver = Resolver(
        {**template.pseudo_parameters(), **template.parameters},
        provisioned.physical_ids,
        provisioned.attributes,
        declared,
        template.conditions,
    )
    env = function_configs(template, resolver)["ApiFunction"].environment
    assert env["JOBGATE_TABLE_NAME"] == provisioned.physical_ids["JobsTable"]
    assert env["JOBGATE_QUEUE_URL"] == provisioned.physical_ids["JobsQueue"]
    assert env["JOBGATE_BUCKET_NAME"] == provisioned.physical_ids["DataBucket"]
    # The bootstrap key is not in the environment: its secret is, made in the local AWS as on AWS.
    assert "JOBGATE_API_KEY" not in env
    secrets = aws_client("secretsmanager", provisioned.endpoint_url)
    secret = secrets.get_secret_value(SecretId=env["JOBGATE_API_KEY_SECRET"])
    assert secret["ARN"] == env["JOBGATE_API_KEY_SECRET"] and secret["SecretString"] == API_KEY
    sqs = aws_client("sqs", provisioned.endpoint_url)
    sqs.send_message(QueueUrl=env["JOBGATE_QUEUE_URL"], MessageBody="reachable")
    received = sqs.receive_message(QueueUrl=env["JOBGATE_QUEUE_URL"], WaitTimeSeconds=1)["Messages"]
    assert received[0]["Body"] == "reachable"
