"""The local S3 answers browsers' cross-origin requests from the bucket's CORS rules, as S3 does: a
preflight is allowed only by a rule that names its origin, its method and every header it asks for
(the first such rule answers; none, or no CORS configuration, is a 403), and an actual request carries
Access-Control-Allow-Origin only when a rule allows its origin and method. A console whose bucket lacks
the rule fails here as it would on AWS."""

from __future__ import annotations

import boto3
import httpx
import pytest
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.blobs import BlobStore

from tests.support.aws import Resources
from tests.support.strict import StrictAws, as_function

CONSOLE = "http://127.0.0.1:8000"
OTHER = "https://evil.example.com"


def _preflight(url: str, origin: str, method: str = "POST", headers: str | None = None) -> httpx.Response:
    asked = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        asked["Access-Control-Request-Headers"] = headers
    return httpx.options(url, headers=asked)


@pytest.fixture
def bucket_url(aws: StrictAws, resources: Resources) -> str:
    boto3.client("s3").put_bucket_cors(
        Bucket=resources.bucket_name,
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedOrigins": [CONSOLE, "https://*.example.org"],
                    "AllowedMethods": ["GET", "POST"],
                    "AllowedHeaders": ["content-type", "x-amz-*"],
                    "ExposeHeaders": ["ETag"],
                    "MaxAgeSeconds": 600,
                },
                {"AllowedOrigins": ["*"], "AllowedMethods": ["HEAD"]},
            ]
        },
    )
    return f"{aws.endpoint_url}/{resources.bucket_name}"


def test_a_preflight_from_an_allowed_origin_is_answered_by_its_rule(bucket_url: str) -> None:
    answer = _preflight(bucket_url, CONSOLE, "POST", "Content-Type, X-Amz-Date")
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == CONSOLE
    assert answer.headers["access-control-allow-methods"] == "GET, POST"
    assert answer.headers["access-control-allow-headers"].lower() == "content-type, x-amz-date"
    assert answer.headers["access-control-expose-headers"] == "ETag"
    assert answer.headers["access-control-max-age"] == "600"
    assert _preflight(bucket_url, "https://files.example.org", "GET").status_code == 200


@pytest.mark.parametrize(
    ("origin", "method", "headers"),
    [
        (OTHER, "POST", None),  # an origin no rule names
        (CONSOLE, "DELETE", None),  # a method its rule does not allow
        (CONSOLE, "PUT", None),
        (CONSOLE, "POST", "content-type, authorization"),  # a header its rule does not allow
    ],
)
def test_a_preflight_no_rule_allows_is_refused(
    bucket_url: str, origin: str, method: str, headers: str | None
) -> None:
    answer = _preflight(bucket_url, origin, method, headers)
    assert answer.status_code == 403
    assert "access-control-allow-origin" not in answer.headers
    assert "CORSResponse" in answer.text


def test_the_second_rule_answers_what_the_first_does_not(bucket_url: str) -> None:
    answer = _preflight(bucket_url + "/results/a.png", OTHER, "HEAD")
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "*"
    assert answer.headers["access-control-allow-methods"] == "HEAD"


def test_a_bucket_without_cors_refuses_every_preflight(aws: StrictAws, resources: Resources) -> None:
    boto3.client("s3").delete_bucket_cors(Bucket=resources.bucket_name)
    answer = _preflight(f"{aws.endpoint_url}/{resources.bucket_name}", CONSOLE, "POST")
    assert answer.status_code == 403
    assert "access-control-allow-origin" not in answer.headers


def test_an_actual_request_carries_the_origin_only_when_a_rule_allows_it(
    bucket_url: str, resources: Resources
) -> None:
    boto3.client("s3").put_object(Bucket=resources.bucket_name, Key="results/a.txt", Body=b"a")
    with as_function("api"):
        url = BlobStore(aws_clients.s3(), resources.bucket_name).presign_get("results/a.txt", expires_s=60)
    allowed = httpx.get(url, headers={"Origin": CONSOLE})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == CONSOLE
    refused = httpx.get(url, headers={"Origin": OTHER})
    assert refused.status_code == 200  # S3 answers; the browser is the one that withholds it
    assert "access-control-allow-origin" not in refused.headers
    assert "access-control-allow-origin" not in httpx.get(url).headers
    head_only = httpx.get(url, headers={"Origin": "https://files.example.net"})
    assert "access-control-allow-origin" not in head_only.headers  # the "*" rule allows HEAD, not GET
