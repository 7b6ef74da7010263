"""DynamoDB adapter for limits: token buckets per key, active-job counts, daily upload counters."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from jobgate.adapters.dynamo import _guard, _is_conditional_failure, _status_index_key
from jobgate.errors import StoreError
from jobgate.models import JobStatus

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

BUCKET_SK = "BUCKET"
QUOTA_SK = "QUOTA"


@dataclass(frozen=True)
class BucketState:
    """A token bucket as stored: tokens left at `updated_ms`, and a version bumped by every write."""

    tokens: float
    updated_ms: int
    version: int


class BucketChanged(Exception):
    """The bucket was not what the write expected; `current` is what it is now (None: no bucket)."""

    def __init__(self, current: BucketState | None) -> None:
        super().__init__("token bucket changed")
        self.current = current


class QuotaFull(Exception):
    def __init__(self, used: int) -> None:
        super().__init__("quota full")
        self.used = used


def _failed(exc: ClientError) -> StoreError:
    return StoreError(f"DynamoDB call failed: {exc.response.get('Error', {}).get('Code')}")


def _bucket_state(item: dict[str, Any] | None) -> BucketState | None:
    if not item or "tokens" not in item:
        return None
    return BucketState(
        tokens=float(item["tokens"]["N"]),
        updated_ms=int(item["updated_ms"]["N"]),
        version=int(item["v"]["N"]),
    )


class LimitStore:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._db = client
        self._table = table_name

    def write_bucket(
        self, bucket_id: str, *, tokens: float, now_ms: int, expect: BucketState | None, expires_at: int
    ) -> BucketState:
        """Store the bucket's new level if it is still `expect`, in one conditional write.

        Raises BucketChanged with the bucket's current state (returned by the failed write itself,
        so a lost race costs no extra read).
        """
        version = 1 if expect is None else expect.version + 1
        values: dict[str, Any] = {
            ":tokens": {"N": str(Decimal(f"{tokens:.6f}"))},
            ":now": {"N": str(now_ms)},
            ":v": {"N": str(version)},
            ":exp": {"N": str(expires_at)},
        }
        if expect is None:
            condition = "attribute_not_exists(pk)"
        else:
            condition = "v = :expected"
            values[":expected"] = {"N": str(expect.version)}
        try:
            self._db.update_item(
                TableName=self._table,
                Key={"pk": {"S": f"RATE#{bucket_id}"}, "sk": {"S": BUCKET_SK}},
                UpdateExpression="SET tokens = :tokens, updated_ms = :now, v = :v, expires_at = :exp",
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if _is_conditional_failure(exc):
                raise BucketChanged(_bucket_state(exc.response.get("Item"))) from exc  # type: ignore[arg-type]
            raise _failed(exc) from exc
        except BotoCoreError as exc:
            raise StoreError(f"DynamoDB unreachable: {exc}") from exc
        return BucketState(tokens=tokens, updated_ms=now_ms, version=version)

    def count_jobs(self, tenant: str, statuses: tuple[JobStatus, ...], *, up_to: int) -> int:
        """How many of the tenant's jobs are in these states, counted up to `up_to` (a COUNT query
        on the status index per state: reads only the index, and stops at `up_to`)."""
        total = 0
        for status in statuses:
            query: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": "gsi2",
                "KeyConditionExpression": "gsi2pk = :pk",
                "ExpressionAttributeValues": {":pk": {"S": _status_index_key(tenant, status)}},
                "Select": "COUNT",
            }
            while total < up_to:
                query["Limit"] = up_to - total
                got = _guard(lambda q=query: self._db.query(**q))  # type: ignore[misc]
                total += int(got.get("Count", 0))
                if "LastEvaluatedKey" not in got:
                    break
                query["ExclusiveStartKey"] = got["LastEvaluatedKey"]
        return total

    def add_to_quota(self, counter: str, amount: int, *, limit: int, expires_at: int) -> int:
        """Add `amount` to a counter unless that takes it past `limit`; answer the new total.

        Raises QuotaFull with what the counter holds when the amount does not fit.
        """
        if amount > limit:
            raise QuotaFull(self._quota_used(counter))
        try:
            got = self._db.update_item(
                TableName=self._table,
                Key={"pk": {"S": f"QUOTA#{counter}"}, "sk": {"S": QUOTA_SK}},
                UpdateExpression="ADD used :amount SET expires_at = :exp",
                ConditionExpression="attribute_not_exists(used) OR used <= :room",
                ExpressionAttributeValues={
                    ":amount": {"N": str(amount)},
                    ":room": {"N": str(limit - amount)},
                    ":exp": {"N": str(expires_at)},
                },
                ReturnValues="UPDATED_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if _is_conditional_failure(exc):
                item: dict[str, Any] = dict(exc.response.get("Item") or {})  # type: ignore[call-overload]
                raise QuotaFull(int(item.get("used", {}).get("N", "0"))) from exc
            raise _failed(exc) from exc
        except BotoCoreError as exc:
            raise StoreError(f"DynamoDB unreachable: {exc}") from exc
        return int(got["Attributes"]["used"]["N"])

    def _quota_used(self, counter: str) -> int:
        key = {"pk": {"S": f"QUOTA#{counter}"}, "sk": {"S": QUOTA_SK}}
        got = _guard(lambda: self._db.get_item(TableName=self._table, Key=key, ConsistentRead=True))
        return int(got.get("Item", {}).get("used", {}).get("N", "0"))
