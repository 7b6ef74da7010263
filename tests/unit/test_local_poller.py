"""Lambda's SQS event source rules, as the local poller applies them."""

from __future__ import annotations

from typing import Any

import pytest
from jobgate_local.functions import InvokeError, InvokeResult
from jobgate_local.poller import build_sqs_event, failed_message_ids

IDS = ["m1", "m2", "m3"]


def ok(payload: Any) -> InvokeResult:
    return InvokeResult("r", payload=payload)


@pytest.mark.parametrize(
    "payload", [None, {}, {"batchItemFailures": []}, {"batchItemFailures": None}, "done"]
)
def test_no_reported_failures_is_a_complete_success(payload: Any) -> None:
    assert failed_message_ids(ok(payload), IDS, report_failures=True) == set()


def test_reported_items_are_kept_and_the_rest_deleted() -> None:
    payload = {"batchItemFailures": [{"itemIdentifier": "m2"}, {"itemIdentifier": "m3"}]}
    assert failed_message_ids(ok(payload), IDS, report_failures=True) == {"m2", "m3"}


@pytest.mark.parametrize(
    "failures",
    [
        [{"itemIdentifier": ""}],
        [{"itemIdentifier": None}],
        [{"itemIdentifer": "m1"}],  # a bad key name
        [{"itemIdentifier": "not-in-this-batch"}],
        "m1",
    ],
)
def test_an_invalid_partial_response_fails_the_whole_batch(failures: Any) -> None:
    assert failed_message_ids(ok({"batchItemFailures": failures}), IDS, report_failures=True) is None


def test_a_failed_invoke_keeps_every_message() -> None:
    failed = InvokeResult("r", error=InvokeError("Sandbox.Timedout", "Task timed out after 1.00 seconds"))
    assert failed_message_ids(failed, IDS, report_failures=True) is None


def test_without_report_batch_item_failures_the_answer_is_ignored() -> None:
    payload = {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    assert failed_message_ids(ok(payload), IDS, report_failures=False) == set()


def test_the_event_has_lambdas_sqs_record_shape() -> None:
    attributes = {
        "ApproximateReceiveCount": "2",
        "SentTimestamp": "1",
        "ApproximateFirstReceiveTimestamp": "2",
    }
    message = {
        "MessageId": "m1",
        "ReceiptHandle": "rh",
        "MD5OfBody": "md5",
        "Body": '{"job_id": "J"}',
        "Attributes": attributes,
        "MD5OfMessageAttributes": "md5a",
        "MessageAttributes": {
            "job_id": {"StringValue": "J", "DataType": "String"},
            "blob": {"BinaryValue": b"\x00\x01", "DataType": "Binary"},
        },
    }
    (record,) = build_sqs_event([message], "arn:aws:sqs:us-east-1:123456789012:q")["Records"]
    assert record == {
        "messageId": "m1",
        "receiptHandle": "rh",
        "body": '{"job_id": "J"}',
        "attributes": attributes,
        "messageAttributes": {
            "job_id": {
                "stringValue": "J",
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "String",
            },
            "blob": {
                "binaryValue": "AAE=",
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "Binary",
            },
        },
        "md5OfBody": "md5",
        "md5OfMessageAttributes": "md5a",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q",
        "awsRegion": "us-east-1",
    }
