"""Load a function's handler as Lambda does, and drive it with API Gateway and SQS events.

A loaded handler calls AWS as its function's role (tests.support.strict): its cold start and every
invocation sign with the role's credentials, as on Lambda, so a call its role does not allow fails here.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

import boto3
from jobgate.settings import load_settings

from tests.support.strict import as_function

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class FakeContext:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    function_name: str = "test-function"
    timeout_s: float = 900.0
    memory_limit_in_mb: int = 1024
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/test"
    log_stream_name: str = "test"
    _start: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return int(max(0.0, self.timeout_s - (time.monotonic() - self._start)) * 1000)


def load_handler(function: str) -> ModuleType:
    """Import functions/<function>/app.py afresh (a cold start), with settings read anew; its ``handler``
    runs as the function's role."""
    load_settings.cache_clear()
    name = f"_jobgate_fn_{function}"
    sys.modules.pop(name, None)
    spec = importlib.util.spec_from_file_location(name, ROOT / "functions" / function / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    with as_function(function):
        spec.loader.exec_module(module)
    handler = module.handler

    @functools.wraps(handler)
    def invoke_as_function(event: Any, context: Any) -> Any:
        with as_function(function):
            return handler(event, context)

    module.handler = invoke_as_function
    return module


def http_event(
    method: str,
    path: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event for the ANY /{proxy+} route."""
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    hdrs = {
        "host": "api.example.test",
        "user-agent": "pytest",
        **{k.lower(): v for k, v in (headers or {}).items()},
    }
    if body is not None and "content-type" not in hdrs:
        hdrs["content-type"] = "application/json"
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "ANY /{proxy+}",
        "rawPath": path,
        "rawQueryString": urlencode(query or {}),
        "headers": hdrs,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "api.example.test",
            "domainPrefix": "api",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "pytest",
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "ANY /{proxy+}",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "pathParameters": {"proxy": path.lstrip("/")},
        "isBase64Encoded": False,
    }
    if query:
        event["queryStringParameters"] = dict(query)
    if raw:
        event["body"] = raw.decode()
    return event


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call_api(module: ModuleType, method: str, path: str, **kwargs: Any) -> HttpAnswer:
    out = module.handler(http_event(method, path, **kwargs), FakeContext(function_name="api", timeout_s=29))
    body = out.get("body") or ""
    raw = base64.b64decode(body) if out.get("isBase64Encoded") else body.encode()
    return HttpAnswer(
        status=out["statusCode"], headers={k.lower(): v for k, v in out.get("headers", {}).items()}, body=raw
    )


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {
                    k: {
                        "stringValue": v.get("StringValue"),
                        "binaryValue": v.get("BinaryValue"),
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": v["DataType"],
                    }
                    for k, v in m.get("MessageAttributes", {}).items()
                },
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }


def pump(module: ModuleType, queue_url: str, *, max_batches: int = 10, timeout_s: float = 900) -> int:
    """Play Lambda's SQS event source once over the queue: deliver, then delete what succeeded."""
    sqs = boto3.client("sqs")
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    delivered = 0
    for _ in range(max_batches):
        got = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=1, AttributeNames=["All"], MessageAttributeNames=["All"]
        )
        messages = got.get("Messages", [])
        if not messages:
            break
        answer = module.handler(
            sqs_event(messages, arn), FakeContext(function_name="worker", timeout_s=timeout_s)
        )
        failed = {f["itemIdentifier"] for f in answer.get("batchItemFailures", [])}
        for m in messages:
            if m["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
        delivered += len(messages)
    return delivered
