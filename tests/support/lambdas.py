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
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
from jobgate.settings import load_settings
from jobgate_local.testing import FakeContext, http_event, sqs_event

from tests.support.strict import as_function

ROOT = Path(__file__).resolve().parents[2]


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
