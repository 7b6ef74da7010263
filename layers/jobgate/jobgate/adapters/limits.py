"""DynamoDB adapter for limits: token buckets per key, active-job counts, daily upload counters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from jobgate.adapters.dynamo import _guard, _is_conditional_failure, _status_index_key
from jobgate.errors import StoreError
from jobgate.models import JobStatus

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

BUCKET_SK = "BUCKET"
QUOTA_SK = "QUOTA"


class BucketRefused(Exception):
    """The bucket was not as the write required; `tat_us` is its theoretical arrival time now (None:
    no bucket), returned by the failed write itself."""

    def __init__(self, tat_us: int | None) -> None:
        super().__init__("rate bucket refused the write")
        self.tat_us = tat_us


class QuotaFull(Exception):
    def __init__(self, used: int) -> None:
        super().__init__("quota full")
        self.used = used


def _failed(exc: ClientError) -> StoreError:
    return StoreError(f"DynamoDB call failed: {exc.response.get('Error', {}).get('Code')}")


def _tat(item: dict[str, Any] | None) -> int | None:
    return int(item["tat_us"]["N"]) if item and "tat_us" in item else None


class LimitStore:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._db = client
        self._table = table_name

    def start_bucket(self, bucket_id: str, *, now_us: int, interval_us: int, expires_at: int) -> int:
        """An idle bucket (none yet, or its theoretical arrival time past): it is now `now + interval`.
        Raises BucketRefused with the bucket's time when it is not idle. Answers the new time."""
        return self._update_bucket(
            bucket_id,
            # An item of the earlier token bucket is replaced whole.
            "SET tat_us = :next, expires_at = :exp REMOVE tokens, updated_ms, v",
            "attribute_not_exists(tat_us) OR tat_us < :now",
            {":next": now_us + interval_us, ":now": now_us, ":exp": expires_at},
        )

    def add_to_bucket(
        self, bucket_id: str, *, now_us: int, interval_us: int, limit_us: int, expires_at: int
    ) -> int:
        """A busy bucket whose time is at most `limit`: one more interval on it, added by DynamoDB
        itself, so simultaneous requests never overwrite each other. Raises BucketRefused with the
        bucket's time when it is past `limit` (or idle, or gone). Answers the new time."""
        return self._update_bucket(
            bucket_id,
            "SET tat_us = tat_us + :interval, expires_at = :exp",
            "tat_us >= :now AND tat_us <= :limit",
            {":interval": interval_us, ":now": now_us, ":limit": limit_us, ":exp": expires_at},
        )

    def _update_bucket(self, bucket_id: str, update: str, condition: str, values: dict[str, int]) -> int:
        try:
            answer = self._db.update_item(
                TableName=self._table,
                Key={"pk": {"S": f"RATE#{bucket_id}"}, "sk": {"S": BUCKET_SK}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeValues={name: {"N": str(value)} for name, value in values.items()},
                ReturnValues="UPDATED_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if _is_conditional_failure(exc):
                raise BucketRefused(_tat(exc.response.get("Item"))) from exc  # type: ignore[arg-type]
            raise _failed(exc) from exc
        except BotoCoreError as exc:
            raise StoreError(f"DynamoDB unreachable: {exc}") from exc
        return int(answer["Attributes"]["tat_us"]["N"])

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
