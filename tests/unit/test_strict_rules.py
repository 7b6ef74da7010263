"""The strict layer's rules in isolation: item sizes by AWS's rules, IAM's wildcards, how requests map to
IAM actions, SigV4 verification of what botocore signs, and S3's POST policy conditions."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from jobgate_local.strict.actions import classify
from jobgate_local.strict.errors import AwsError, Protocol
from jobgate_local.strict.limits import MAX_ITEM_BYTES, item_size, number_size, sqs_message_size
from jobgate_local.strict.post_policy import PostUpload, check_policy
from jobgate_local.strict.principals import wildcard_match
from jobgate_local.strict.request import StrictRequest
from jobgate_local.strict.sigv4 import read_signature, request_signature_matches

# -- item sizes ------------------------------------------------------------------------------------------


def test_item_size_counts_names_and_values_as_aws_documents() -> None:
    item = {
        "pk": {"S": "JOB#é"},  # 2 + 6 (é is two bytes)
        "n": {"N": "12345"},  # 1 + (3 + 1): five significant digits
        "b": {"B": base64.b64encode(b"\x00" * 10).decode()},  # 1 + 10 raw bytes, not the base64 text
        "ok": {"BOOL": True},  # 2 + 1
        "none": {"NULL": True},  # 4 + 1
        "tags": {"SS": ["ab", "c"]},  # 4 + 3
        "list": {"L": [{"S": "xy"}, {"N": "7"}]},  # 4 + 3 + (1 + 2) + (1 + 2)
        "map": {"M": {"k": {"S": "v"}}},  # 3 + 3 + (1 + 1 + 1)
    }
    assert item_size(item) == (2 + 6) + (1 + 4) + (1 + 10) + (2 + 1) + (4 + 1) + (4 + 3) + (4 + 9) + (3 + 6)


@pytest.mark.parametrize(
    ("number", "size"),
    [("0", 2), ("7", 2), ("12", 2), ("123", 3), ("1000000", 2), ("0.000123", 3), ("-12.5", 3)],
)
def test_number_size_is_one_byte_per_two_significant_digits_plus_one(number: str, size: int) -> None:
    assert number_size(number) == size


def test_a_list_of_many_small_outputs_pays_the_per_element_overhead() -> None:
    """What a job with thousands of outputs weighs: each element of a list or map costs a byte more."""
    output = {"M": {"name": {"S": "frame_0001.png"}, "size": {"N": "12345"}}}
    one = item_size({"o": {"L": [output]}})
    many = item_size({"o": {"L": [output] * 3000}})
    assert many - 3 - 1 == (one - 3 - 1) * 3000
    assert many > MAX_ITEM_BYTES / 10


def test_sqs_message_size_counts_body_and_every_attribute_part() -> None:
    attributes = {
        "kind": {"DataType": "String", "StringValue": "job"},
        "blob": {"DataType": "Binary", "BinaryValue": base64.b64encode(b"12345").decode()},
    }
    assert sqs_message_size("héllo", attributes, binary_base64=True) == 6 + (4 + 6 + 3) + (4 + 6 + 5)


# -- IAM wildcards -----------------------------------------------------------------------------------------


def test_iam_wildcards_are_not_regular_expressions() -> None:
    assert wildcard_match("arn:aws:s3:::data.bucket/*", "arn:aws:s3:::data.bucket/uploads/a")
    assert not wildcard_match("arn:aws:s3:::data.bucket/*", "arn:aws:s3:::dataXbucket/uploads/a")
    assert wildcard_match("sqs:SendMessage*", "sqs:sendmessage", ignore_case=True)
    assert not wildcard_match("sqs:SendMessage*", "sqs:sendmessage")
    assert wildcard_match("dynamodb:?etItem", "dynamodb:GetItem")
    assert not wildcard_match("dynamodb:?etItem", "dynamodb:BatchGetItem")


# -- requests -> IAM actions --------------------------------------------------------------------------------


def _request(
    method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None, query: str = ""
) -> StrictRequest:
    from werkzeug.datastructures import Headers

    return StrictRequest(method, path, query, Headers(headers or {}), body, {})


def test_a_transaction_needs_each_item_action_on_each_table() -> None:
    body = {
        "TransactItems": [
            {"Put": {"TableName": "jobs", "Item": {}}},
            {"Update": {"TableName": "jobs", "Key": {}}},
            {"ConditionCheck": {"TableName": "keys", "Key": {}}},
        ]
    }
    request = _request(
        "POST",
        "/",
        body=json.dumps(body).encode(),
        headers={"X-Amz-Target": "DynamoDB_20120810.TransactWriteItems"},
    )
    call = classify(request, "dynamodb", "us-east-1", "123456789012")
    assert call.permissions == [
        ("dynamodb:PutItem", "arn:aws:dynamodb:us-east-1:123456789012:table/jobs"),
        ("dynamodb:UpdateItem", "arn:aws:dynamodb:us-east-1:123456789012:table/jobs"),
        ("dynamodb:ConditionCheckItem", "arn:aws:dynamodb:us-east-1:123456789012:table/keys"),
    ]


def test_a_query_on_an_index_is_checked_on_the_index() -> None:
    body = {"TableName": "jobs", "IndexName": "gsi1"}
    request = _request(
        "POST", "/", body=json.dumps(body).encode(), headers={"X-Amz-Target": "DynamoDB_20120810.Query"}
    )
    call = classify(request, "dynamodb", "us-east-1", "123456789012")
    index = "arn:aws:dynamodb:us-east-1:123456789012:table/jobs/index/gsi1"
    assert call.permissions == [("dynamodb:Query", index)]


@pytest.mark.parametrize("json_protocol", [True, False])
def test_an_sqs_batch_is_checked_as_its_single_action_on_the_queue(json_protocol: bool) -> None:
    url = "http://127.0.0.1:5000/123456789012/jobs"
    if json_protocol:
        request = _request(
            "POST",
            "/",
            body=json.dumps({"QueueUrl": url, "Entries": []}).encode(),
            headers={"X-Amz-Target": "AmazonSQS.SendMessageBatch"},
        )
    else:
        request = _request(
            "POST",
            "/",
            body=f"Action=SendMessageBatch&QueueUrl={url}".encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    call = classify(request, "sqs", "us-east-1", "123456789012")
    assert call.protocol is (Protocol.SQS_JSON if json_protocol else Protocol.QUERY)
    assert call.permissions == [("sqs:SendMessage", "arn:aws:sqs:us-east-1:123456789012:jobs")]


@pytest.mark.parametrize(
    ("method", "path", "query", "headers", "expected"),
    [
        ("GET", "/data/a%20b.txt", "", {}, [("s3:GetObject", "arn:aws:s3:::data/a b.txt")]),
        ("HEAD", "/data/k", "", {}, [("s3:GetObject", "arn:aws:s3:::data/k")]),
        ("PUT", "/data/k", "partNumber=1&uploadId=u", {}, [("s3:PutObject", "arn:aws:s3:::data/k")]),
        ("POST", "/data/k", "uploads", {}, [("s3:PutObject", "arn:aws:s3:::data/k")]),
        ("DELETE", "/data/k", "uploadId=u", {}, [("s3:AbortMultipartUpload", "arn:aws:s3:::data/k")]),
        ("GET", "/data", "list-type=2&prefix=x", {}, [("s3:ListBucket", "arn:aws:s3:::data")]),
        ("HEAD", "/data", "", {}, [("s3:ListBucket", "arn:aws:s3:::data")]),
        ("PUT", "/data", "policy", {}, [("s3:PutBucketPolicy", "arn:aws:s3:::data")]),
        (
            "PUT",
            "/data/copy",
            "",
            {"X-Amz-Copy-Source": "/data/orig"},
            [("s3:PutObject", "arn:aws:s3:::data/copy"), ("s3:GetObject", "arn:aws:s3:::data/orig")],
        ),
    ],
)
def test_s3_operations_map_to_their_iam_actions(
    method: str, path: str, query: str, headers: dict[str, str], expected: list[tuple[str, str]]
) -> None:
    call = classify(_request(method, path, query=query, headers=headers), "s3", "us-east-1", "123456789012")
    assert call.permissions == expected


# -- SigV4 -----------------------------------------------------------------------------------------------

CREDENTIALS = Credentials("ASIAEXAMPLE", "secret-key", "session-token")


def _as_received(signed: AWSRequest) -> StrictRequest:
    """The request as the local AWS receives it: raw path and query as botocore sent them."""
    from urllib.parse import urlsplit

    from werkzeug.datastructures import Headers

    parts = urlsplit(signed.url)
    headers = Headers([(k, v) for k, v in signed.headers.items()])
    headers.setdefault("Host", parts.netloc)
    body = signed.body if isinstance(signed.body, bytes) else (signed.body or "").encode()
    return StrictRequest(signed.method, parts.path, parts.query, headers, body, {})


def test_a_dynamodb_request_signed_by_botocore_verifies_with_the_same_secret_only() -> None:
    request = AWSRequest(
        method="POST",
        url="http://127.0.0.1:5000/",
        data=b'{"TableName": "jobs"}',
        headers={
            "X-Amz-Target": "DynamoDB_20120810.DescribeTable",
            "Content-Type": "application/x-amz-json-1.0",
        },
    )
    SigV4Auth(CREDENTIALS, "dynamodb", "us-east-1").add_auth(request)
    received = _as_received(request)
    signature = read_signature(received)
    assert signature is not None and signature.token == "session-token"
    assert request_signature_matches(received, signature, "secret-key")
    assert not request_signature_matches(received, signature, "another-secret")
    received.body = b'{"TableName": "other"}'  # a body changed on the way is caught
    assert not request_signature_matches(received, signature, "secret-key")


def test_s3_keys_with_spaces_and_unicode_verify_as_sent() -> None:
    request = AWSRequest(method="PUT", url="http://127.0.0.1:5000/data/a%20b/%C3%BC%2Bx%3D1.txt", data=b"x")
    S3SigV4Auth(CREDENTIALS, "s3", "us-east-1").add_auth(request)
    received = _as_received(request)
    signature = read_signature(received)
    assert signature is not None
    assert request_signature_matches(received, signature, "secret-key")


def test_a_presigned_url_verifies_and_says_when_it_expires() -> None:
    request = AWSRequest(method="GET", url="http://127.0.0.1:5000/data/results/map.png")
    S3SigV4QueryAuth(CREDENTIALS, "s3", "us-east-1", expires=300).add_auth(request)
    received = _as_received(request)
    signature = read_signature(received)
    assert signature is not None and signature.kind == "query" and signature.expires_s == 300
    assert request_signature_matches(received, signature, "secret-key")
    tampered = _as_received(request)
    tampered.raw_path = "/data/results/other.png"
    assert not request_signature_matches(tampered, signature, "secret-key")


# -- POST policies -------------------------------------------------------------------------------------------


def _policy(**overrides: Any) -> dict[str, Any]:
    return {
        "expiration": (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "conditions": [
            {"bucket": "data"},
            {"key": "uploads/t/a.npy"},
            {"Content-Type": "application/x-npy"},
            ["content-length-range", 10, 10],
            {"x-amz-credential": "cred"},
        ],
        **overrides,
    }


def _upload(size: int = 10, **fields: str) -> PostUpload:
    base = {"key": "uploads/t/a.npy", "content-type": "application/x-npy", "x-amz-credential": "cred"}
    base.update({name.lower(): value for name, value in fields.items()})
    return PostUpload({**base, "policy": "p", "x-amz-signature": "s"}, "a.npy", size)


def _refusal(policy: dict[str, Any], upload: PostUpload) -> AwsError:
    with pytest.raises(AwsError) as refused:
        check_policy(policy, upload, "data")
    return refused.value


def test_a_form_that_matches_its_policy_passes() -> None:
    check_policy(_policy(), _upload(), "data")


def test_each_broken_condition_is_refused_as_s3_refuses_it() -> None:
    bigger = _refusal(_policy(), _upload(size=11))
    assert (bigger.status, bigger.code, bigger.extra) == (
        400,
        "EntityTooLarge",
        {"ProposedSize": "11", "MaxSizeAllowed": "10"},
    )
    smaller = _refusal(_policy(), _upload(size=9))
    assert (smaller.code, smaller.extra["MinSizeAllowed"]) == ("EntityTooSmall", "10")
    other_type = _refusal(_policy(), _upload(**{"Content-Type": "text/plain"}))
    assert (other_type.status, other_type.code) == (403, "AccessDenied")
    assert other_type.message == (
        'Invalid according to Policy: Policy Condition failed: ["eq", "$Content-Type", "application/x-npy"]'
    )
    other_key = _refusal(_policy(), _upload(key="uploads/u/a.npy"))
    assert '"$key"' in other_key.message
    other_bucket = _refusal(_policy(conditions=[{"bucket": "elsewhere"}]), _upload())
    assert '"$bucket"' in other_bucket.message


def test_an_expired_policy_and_uncovered_fields_are_refused() -> None:
    past = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    expired = _refusal(_policy(expiration=past), _upload())
    assert (expired.code, expired.message) == ("AccessDenied", "Invalid according to Policy: Policy expired.")
    extra = _refusal(_policy(), _upload(**{"x-amz-meta-owner": "someone"}))
    assert extra.message == "Invalid according to Policy: Extra input fields: x-amz-meta-owner"
    check_policy(_policy(), _upload(**{"x-ignore-me": "fine"}), "data")


def test_starts_with_conditions_match_prefixes() -> None:
    policy = _policy(conditions=[["starts-with", "$key", "uploads/t/"], {"bucket": "data"}])
    check_policy(policy, PostUpload({"key": "uploads/t/b.npy", "policy": "p"}, "b.npy", 1), "data")
    refused = _refusal(policy, PostUpload({"key": "uploads/u/b.npy", "policy": "p"}, "b.npy", 1))
    assert refused.message.endswith('["starts-with", "$key", "uploads/t/"]')
