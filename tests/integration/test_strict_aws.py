"""The local AWS refuses what AWS refuses, with AWS's errors: each function's role (IAM), item sizes,
transaction and batch sizes, message sizes, presigned POST policies and presigned URL expiry, unknown
credentials. Every call here goes over HTTP to the strict moto server, signed as a function's role or
as the admin identity, as the functions' own calls are."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.blobs import BlobStore
from jobgate.adapters.dynamo import JobStore
from jobgate.errors import StoreError
from jobgate.models import Job, JobResult, JobStatus, Output, utcnow
from ulid import ULID

from tests.integration.conftest import Client
from tests.support.aws import Resources
from tests.support.strict import StrictAws, as_function

TABLE_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/jobs-test"


def client_as(strict: StrictAws, folder: str, service: str, **config: Any) -> Any:
    """A boto3 client signing as a function's role (or the admin identity for ``admin``)."""
    credentials = strict.credentials[folder] if folder != "admin" else {}
    keys = {
        "aws_access_key_id": credentials.get("AWS_ACCESS_KEY_ID", "testing"),
        "aws_secret_access_key": credentials.get("AWS_SECRET_ACCESS_KEY", "testing"),
        "aws_session_token": credentials.get("AWS_SESSION_TOKEN", "testing"),
    }
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=strict.endpoint_url,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", retries={"max_attempts": 1}, **config),
        **keys,
    )


@pytest.fixture
def role_without(aws: StrictAws) -> Iterator[Callable[[str, str], None]]:
    """Take one action out of a function's role (its policy as the template gives it comes back after)."""
    iam = client_as(aws, "admin", "iam")
    changed: list[tuple[str, str, dict[str, Any]]] = []

    def remove(folder: str, action: str) -> None:
        spec = aws.roles[folder]
        for name, document in spec.inline_policies.items():
            statements = document["Statement"]
            if any(action in statement.get("Action", []) for statement in statements):
                trimmed = [
                    {**s, "Action": [a for a in s.get("Action", []) if a != action]} for s in statements
                ]
                iam.put_role_policy(
                    RoleName=spec.name,
                    PolicyName=name,
                    PolicyDocument=json.dumps({**document, "Statement": trimmed}),
                )
                changed.append((spec.name, name, dict(document)))
                return
        raise AssertionError(f"{folder}'s role has no statement with {action}")

    yield remove
    for role, name, document in changed:
        iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=json.dumps(document))


def _job(tenant: str = "default") -> Job:
    return Job(
        job_id=str(ULID()),
        tenant=tenant,
        stage="visualize",
        command="heatmap",
        args={"output": "map.png"},
        timeout_s=60,
        request_hash="h",
        created_at=utcnow(),
    )


# -- IAM ------------------------------------------------------------------------------------------------


def test_a_worker_whose_role_lost_dynamodb_update_cannot_claim_a_job(
    client: Client,
    make_asset: Callable[..., str],
    npy_file: Path,
    role_without: Callable[[str, str], None],
) -> None:
    asset = make_asset(npy_file, "application/x-npy")
    args = {"input": f"asset://{asset}", "output": "map.png", "no_coastline": True}
    submitted = client.submit({"stage": "visualize", "command": "heatmap", "args": args})
    assert submitted.status == 202, submitted.body
    role_without("worker", "dynamodb:UpdateItem")

    assert client.run_worker() == 1

    job = client.call("GET", f"/v1/jobs/{submitted.json()['job_id']}").json()
    assert (job["status"], job["attempts"]) == ("queued", 0)  # the claim never happened
    failures = [str(error) for _kind, error, _trace in client.worker._processor.exceptions]
    assert failures == ["DynamoDB update failed: AccessDeniedException"]
    sqs = boto3.client("sqs")
    hidden = sqs.get_queue_attributes(
        QueueUrl=client.resources.queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]["ApproximateNumberOfMessagesNotVisible"]
    assert hidden == "1"  # reported as failed, not deleted: it comes back after the visibility timeout


def test_a_role_is_refused_what_its_policies_do_not_allow_with_aws_error(
    aws: StrictAws, resources: Resources
) -> None:
    worker_db = client_as(aws, "worker", "dynamodb")
    worker_db.get_item(TableName=resources.table_name, Key={"pk": {"S": "x"}, "sk": {"S": "y"}})
    with pytest.raises(ClientError) as refused:
        worker_db.delete_table(TableName=resources.table_name)
    error = refused.value.response["Error"]
    assert error["Code"] == "AccessDeniedException"
    role = aws.roles["worker"].name
    assert error["Message"] == (
        f"User: arn:aws:sts::123456789012:assumed-role/{role}/jobgate-local-WorkerFunction is not authorized "
        f"to perform: dynamodb:DeleteTable on resource: {TABLE_ARN} "
        "because no identity-based policy allows the dynamodb:DeleteTable action"
    )

    assets_sqs = client_as(aws, "assets", "sqs")  # AssetsFunction may read its queue, never send jobs
    with pytest.raises(ClientError) as refused:
        assets_sqs.send_message(QueueUrl=resources.queue_url, MessageBody="{}")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert "sqs:sendmessage on resource: arn:aws:sqs:us-east-1:123456789012:jobs-test" in str(refused.value)

    assets_s3 = client_as(aws, "assets", "s3")  # S3ReadPolicy: no writes
    with pytest.raises(ClientError) as refused:
        assets_s3.put_object(Bucket=resources.bucket_name, Key="uploads/x", Body=b"x")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert f'on resource: "arn:aws:s3:::{resources.bucket_name}/uploads/x"' in str(refused.value)


def test_the_worker_may_requeue_a_job_it_could_not_finish(aws: StrictAws, resources: Resources) -> None:
    """template.yaml gives WorkerFunction sqs:SendMessage on the jobs queue (retries, pipeline steps)."""
    client_as(aws, "worker", "sqs").send_message(QueueUrl=resources.queue_url, MessageBody="{}")


@pytest.mark.parametrize(
    ("service", "call", "code"),
    [
        ("dynamodb", lambda c: c.list_tables(), "UnrecognizedClientException"),
        ("sqs", lambda c: c.list_queues(), "InvalidClientTokenId"),
        ("s3", lambda c: c.list_buckets(), "InvalidAccessKeyId"),
    ],
)
def test_unknown_credentials_are_refused_before_any_policy(
    aws: StrictAws, service: str, call: Callable[[Any], Any], code: str
) -> None:
    stranger = boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=aws.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="AKIAUNKNOWNKEY000000",
        aws_secret_access_key="whatever",
    )
    with pytest.raises(ClientError) as refused:
        call(stranger)
    assert refused.value.response["Error"]["Code"] == code


# -- DynamoDB limits ---------------------------------------------------------------------------------------


def test_an_item_over_400_kb_is_refused_on_put(aws: StrictAws, resources: Resources) -> None:
    db = client_as(aws, "api", "dynamodb")
    item = {"pk": {"S": "big"}, "sk": {"S": "big"}, "blob": {"S": "x" * (400 * 1024 - 20)}}
    db.put_item(TableName=resources.table_name, Item=item)  # 9 + 6 + 4 + 409,580 bytes: just fits
    item["blob"] = {"S": "x" * (400 * 1024)}
    with pytest.raises(ClientError) as refused:
        db.put_item(TableName=resources.table_name, Item=item)
    assert refused.value.response["Error"] == {
        "Code": "ValidationException",
        "Message": "Item size has exceeded the maximum allowed size",
    }


def test_a_finish_whose_outputs_make_the_job_too_large_leaves_it_unchanged(
    aws: StrictAws, resources: Resources
) -> None:
    """A job with thousands of outputs: the finishing update is refused and the job is not half-written
    (moto alone applies such an update, then raises)."""
    store = JobStore(aws_clients.dynamodb(), resources.table_name, timedelta(days=1))
    with as_function("worker"):
        job, _ = store.create(_job())
        now = utcnow()
        running = store.claim(job, now=now, lease_until=now + timedelta(minutes=1))
        outputs = [
            Output(name=f"frames/frame_{i:05d}.png", size=12345, media_type="image/png") for i in range(7000)
        ]
        result = JobResult(
            status=JobStatus.SUCCEEDED, exit_code=0, stdout_tail="", stderr_tail="", outputs=outputs
        )
        with pytest.raises(StoreError, match="ValidationException"):
            store.finish(running, attempt=running.attempts, result=result, now=utcnow())
    after = store.get(job.job_id)
    assert after.status == JobStatus.RUNNING
    assert after.outputs == [] and after.exit_code is None and after.finished_at is None
    assert after == running


def test_an_update_in_a_transaction_that_grows_an_item_too_large_cancels_it(
    aws: StrictAws, resources: Resources
) -> None:
    db = client_as(aws, "api", "dynamodb")
    key = {"pk": {"S": "t"}, "sk": {"S": "t"}}
    db.put_item(TableName=resources.table_name, Item={**key, "n": {"N": "1"}, "a": {"S": "x" * (300 * 1024)}})
    grow = {  # each value fits; the item they make does not
        "Update": {
            "TableName": resources.table_name,
            "Key": key,
            "UpdateExpression": "SET b = :b, n = :n",
            "ExpressionAttributeValues": {":b": {"S": "x" * (200 * 1024)}, ":n": {"N": "2"}},
        }
    }
    other = {"Put": {"TableName": resources.table_name, "Item": {"pk": {"S": "o"}, "sk": {"S": "o"}}}}
    with pytest.raises(ClientError) as refused:
        db.transact_write_items(TransactItems=[other, grow])
    error = refused.value.response
    assert error["Error"]["Code"] == "TransactionCanceledException"
    assert [r["Code"] for r in error["CancellationReasons"]] == ["None", "ValidationError"]
    assert db.get_item(TableName=resources.table_name, Key=key)["Item"]["n"] == {"N": "1"}
    assert "Item" not in db.get_item(TableName=resources.table_name, Key={"pk": {"S": "o"}, "sk": {"S": "o"}})


def test_transaction_and_batch_sizes_are_refused(aws: StrictAws, resources: Resources) -> None:
    db = client_as(aws, "api", "dynamodb")
    table = resources.table_name

    def put(i: int, size: int = 1) -> dict[str, Any]:
        return {
            "Put": {
                "TableName": table,
                "Item": {"pk": {"S": f"p{i}"}, "sk": {"S": "s"}, "v": {"S": "x" * size}},
            }
        }

    db.transact_write_items(TransactItems=[put(i) for i in range(100)])
    with pytest.raises(ClientError) as too_many:
        db.transact_write_items(TransactItems=[put(i) for i in range(101)])
    assert too_many.value.response["Error"]["Code"] == "ValidationException"
    assert "less than or equal to 100" in too_many.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as too_big:  # 11 items of 390 KB: under 400 KB each, over 4 MB in all
        db.transact_write_items(TransactItems=[put(i, 390 * 1024) for i in range(11)])
    assert too_big.value.response["Error"]["Code"] == "ValidationException"

    requests = [{"PutRequest": {"Item": {"pk": {"S": f"b{i}"}, "sk": {"S": "s"}}}} for i in range(26)]
    with pytest.raises(ClientError) as batch:
        db.batch_write_item(RequestItems={table: requests})
    assert batch.value.response["Error"]["Code"] == "ValidationException"
    assert "Item" not in db.get_item(TableName=table, Key={"pk": {"S": "b0"}, "sk": {"S": "s"}})
    keys = [{"pk": {"S": f"k{i}"}, "sk": {"S": "s"}} for i in range(101)]
    with pytest.raises(ClientError) as batch_get:
        db.batch_get_item(RequestItems={table: {"Keys": keys}})
    assert batch_get.value.response["Error"]["Code"] == "ValidationException"


# -- SQS limits ----------------------------------------------------------------------------------------------


def test_message_sizes_count_attributes_and_batches(aws: StrictAws, resources: Resources) -> None:
    sqs = client_as(aws, "api", "sqs")
    url = resources.queue_url
    limit = 1024 * 1024
    sqs.send_message(QueueUrl=url, MessageBody="x" * limit)
    with pytest.raises(ClientError) as too_long:
        sqs.send_message(
            QueueUrl=url,
            MessageBody="x" * (limit - 10),
            MessageAttributes={"kind": {"DataType": "String", "StringValue": "job"}},  # 4 + 6 + 3 bytes
        )
    assert too_long.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert "Message must be shorter than 1048576 bytes" in too_long.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as unicode_body:  # 600,000 characters, 1,200,000 bytes
        sqs.send_message(QueueUrl=url, MessageBody="é" * 600_000)
    assert unicode_body.value.response["Error"]["Code"] == "InvalidParameterValue"

    entries = [{"Id": str(i), "MessageBody": "m"} for i in range(11)]
    with pytest.raises(ClientError) as eleven:
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
    assert eleven.value.response["Error"]["Code"] == "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"
    halves = [{"Id": str(i), "MessageBody": "x" * (limit // 2 + 1)} for i in range(2)]
    with pytest.raises(ClientError) as long_batch:
        sqs.send_message_batch(QueueUrl=url, Entries=halves)
    assert long_batch.value.response["Error"]["Code"] == "AWS.SimpleQueueService.BatchRequestTooLong"


def test_a_queue_smaller_maximum_message_size_is_enforced(aws: StrictAws, resources: Resources) -> None:
    boto3.client("sqs").set_queue_attributes(
        QueueUrl=resources.queue_url, Attributes={"MaximumMessageSize": "1024"}
    )
    sqs = client_as(aws, "api", "sqs")
    sqs.send_message(QueueUrl=resources.queue_url, MessageBody="x" * 1024)
    with pytest.raises(ClientError) as refused:
        sqs.send_message(QueueUrl=resources.queue_url, MessageBody="x" * 1025)
    assert "shorter than 1024 bytes" in refused.value.response["Error"]["Message"]


# -- presigned POST and URLs -------------------------------------------------------------------------------


def _ticket(aws: StrictAws, resources: Resources, *, size: int = 10, expires_s: int = 300) -> dict[str, Any]:
    """A presigned POST as the API signs one (as ApiFunction's role): key, type and exact size pinned."""
    blobs = BlobStore(aws_clients.s3(), resources.bucket_name)
    with as_function("api"):
        post: dict[str, Any] = blobs.presign_post(
            f"uploads/default/{ULID()}/a.npy", media_type="application/x-npy", size=size, expires_s=expires_s
        )
    return post


def _send(post: dict[str, Any], data: bytes = b"x" * 10, **changes: str) -> httpx.Response:
    fields = {**post["fields"], **changes}
    return httpx.post(post["url"], data=fields, files={"file": ("a.npy", data, fields["Content-Type"])})


def _code(answer: httpx.Response) -> tuple[int, str]:
    code = answer.text.split("<Code>")[1].split("</Code>")[0]
    return answer.status_code, code


def test_a_presigned_post_within_its_policy_is_stored(aws: StrictAws, resources: Resources) -> None:
    post = _ticket(aws, resources)
    assert _send(post).status_code == 204
    stored = boto3.client("s3").get_object(Bucket=resources.bucket_name, Key=post["fields"]["key"])
    assert stored["Body"].read() == b"x" * 10


def test_a_presigned_post_breaking_its_policy_is_refused_as_s3_refuses_it(
    aws: StrictAws, resources: Resources
) -> None:
    post = _ticket(aws, resources)
    assert _code(_send(post, b"x" * 11)) == (400, "EntityTooLarge")
    assert _code(_send(post, b"x" * 9)) == (400, "EntityTooSmall")
    other_type = _send(post, **{"Content-Type": "text/plain"})
    assert _code(other_type) == (403, "AccessDenied")
    assert "Policy Condition failed" in other_type.text and "$Content-Type" in other_type.text
    other_key = _send(post, key=f"uploads/someone-else/{ULID()}/a.npy")
    assert _code(other_key) == (403, "AccessDenied") and "$key" in other_key.text
    extra = _send(post, **{"x-amz-meta-owner": "me"})
    assert "Extra input fields: x-amz-meta-owner" in extra.text
    policy = json.loads(base64.b64decode(post["fields"]["policy"]))
    policy["conditions"] = [c for c in policy["conditions"] if "content-length-range" not in c]
    forged = base64.b64encode(json.dumps(policy).encode()).decode()
    assert _code(_send(post, policy=forged)) == (403, "SignatureDoesNotMatch")
    objects = boto3.client("s3").list_objects_v2(Bucket=resources.bucket_name).get("Contents", [])
    assert objects == []


def test_a_browsers_cors_preflight_needs_no_signature(aws: StrictAws, resources: Resources) -> None:
    rule = {"AllowedOrigins": ["https://app.example.com"], "AllowedMethods": ["POST"]}
    boto3.client("s3").put_bucket_cors(Bucket=resources.bucket_name, CORSConfiguration={"CORSRules": [rule]})
    preflight = httpx.options(
        f"{aws.endpoint_url}/{resources.bucket_name}",
        headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    unsigned = httpx.post(f"{aws.endpoint_url}/{resources.bucket_name}", data={"key": "uploads/x"})
    assert _code(unsigned) == (403, "AccessDenied")


def test_an_expired_presigned_post_and_url_are_refused(aws: StrictAws, resources: Resources) -> None:
    post = _ticket(aws, resources, expires_s=1)
    boto3.client("s3").put_object(Bucket=resources.bucket_name, Key="results/x.txt", Body=b"x")
    with as_function("api"):
        url = BlobStore(aws_clients.s3(), resources.bucket_name).presign_get("results/x.txt", expires_s=1)
    assert httpx.get(url).status_code == 200
    time.sleep(2.1)
    expired = _send(post)
    assert _code(expired) == (403, "AccessDenied")
    assert "Policy expired" in expired.text
    late = httpx.get(url)
    assert _code(late) == (403, "AccessDenied") and "Request has expired" in late.text
