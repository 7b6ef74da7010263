"""The local AWS's DynamoDB backend: a refused update never undoes what another caller wrote meanwhile.

The backend keeps a snapshot of the item around each update, to put it back if moto applied part of an
update AWS would refuse whole. A conditional update whose condition is false changes nothing, so it must
put nothing back: between its snapshot and its failure, another caller's write may have landed (moto's
server serves requests on threads), and putting the snapshot back would undo that write — a job finished
by its worker turned back into `running` by a lease renewal that missed.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from jobgate_local.strict import limits
from moto import mock_aws

KEY = {"pk": {"S": "JOB#1"}, "sk": {"S": "JOB"}}


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        limits.install_backend_limits()
        ddb = boto3.client("dynamodb")
        ddb.create_table(
            TableName="jobs",
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        ddb.put_item(TableName="jobs", Item={**KEY, "status": {"S": "running"}})
        yield ddb


def test_a_refused_update_never_puts_back_an_item_another_caller_changed_meanwhile(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_deepcopy = copy.deepcopy
    raced: list[bool] = []

    def snapshot_then_another_write(value: Any, *args: Any, **kwargs: Any) -> Any:
        snapshot = real_deepcopy(value, *args, **kwargs)
        taken_by = sys._getframe(1).f_code.co_name  # the backend's snapshot, not one of moto's own
        if taken_by == "checked_update_item" and not raced:
            raced.append(True)
            value.attrs["status"] = type(value.attrs["status"])({"S": "succeeded"})  # the worker's finish
        return snapshot

    monkeypatch.setattr(limits.copy, "deepcopy", snapshot_then_another_write)
    with pytest.raises(ClientError) as refused:  # a lease renewal that missed: the job is no longer running
        table.update_item(
            TableName="jobs",
            Key=KEY,
            UpdateExpression="SET lease_until = :l",
            ConditionExpression="#status = :running",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":l": {"N": "1"}, ":running": {"S": "running"}},
        )
    assert raced and refused.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    item = table.get_item(TableName="jobs", Key=KEY, ConsistentRead=True)["Item"]
    assert item["status"] == {"S": "succeeded"}
    assert "lease_until" not in item


def test_a_refused_transaction_puts_back_what_it_applied_and_copies_no_table(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.dynamodb.models.table import Table

    copied: list[str] = []
    real_deepcopy = copy.deepcopy

    def watching(value: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(value, Table):
            copied.append(value.name)
        return real_deepcopy(value, *args, **kwargs)

    monkeypatch.setattr(copy, "deepcopy", watching)
    event = {"pk": {"S": "JOB#1"}, "sk": {"S": "EVT#1"}}
    with pytest.raises(ClientError) as refused:  # the put goes first, then the update's condition fails
        table.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": "jobs", "Item": {**event, "e": {"S": "cancelled"}}}},
                {
                    "Update": {
                        "TableName": "jobs",
                        "Key": KEY,
                        "UpdateExpression": "SET #status = :cancelled",
                        "ConditionExpression": "#status = :queued",
                        "ExpressionAttributeNames": {"#status": "status"},
                        "ExpressionAttributeValues": {
                            ":cancelled": {"S": "cancelled"},
                            ":queued": {"S": "queued"},
                        },
                    }
                },
            ]
        )
    assert refused.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert "Item" not in table.get_item(TableName="jobs", Key=event, ConsistentRead=True)
    assert table.get_item(TableName="jobs", Key=KEY, ConsistentRead=True)["Item"]["status"] == {
        "S": "running"
    }
    # Every transaction used to copy each table it touched, whole, under the lock every write waits for.
    assert copied == []
