"""DynamoDB adapter for WebSocket state: each job's numbered events, connections, subscriptions."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from jobgate.adapters.dynamo import _guard, _marshal, _unmarshal, _values
from jobgate.errors import StoreError
from jobgate.models import JobEvent, Subscription

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# API Gateway closes a WebSocket connection after 2 hours; its records need not outlive it.
CONNECTION_TTL = timedelta(hours=2)
EVENT_SK = "EVT#"
SUB_SK = "SUB#"


def _evt_sk(seq: int) -> str:
    return f"{EVENT_SK}{seq:012d}"


class EventStore:
    def __init__(self, client: DynamoDBClient, table_name: str, event_ttl: timedelta) -> None:
        self._db = client
        self._table = table_name
        self._event_ttl = event_ttl

    # -- events -------------------------------------------------------------------------------

    def append(self, events: list[JobEvent], now: datetime) -> list[JobEvent]:
        """Number the events (one atomic counter per job) and store them; answer them numbered."""
        return self.append_counted(events, now)[0]

    def append_counted(self, events: list[JobEvent], now: datetime) -> tuple[list[JobEvent], int]:
        """Numbered events, and how many subscriptions the job had then (0: nobody to send them to)."""
        if not events:
            return [], 0
        job_id = events[0].job_id
        got = _guard(
            lambda: self._db.update_item(
                TableName=self._table,
                Key={"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": "JOB"}},
                UpdateExpression="ADD event_seq :n SET watchers = if_not_exists(watchers, :zero)",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=_values(n=len(events), zero=0),
                ReturnValues="UPDATED_NEW",
            )
        )
        last = int(got["Attributes"]["event_seq"]["N"])
        watchers = int(got["Attributes"].get("watchers", {}).get("N", "1"))
        numbered = [e.model_copy(update={"seq": last - len(events) + 1 + i}) for i, e in enumerate(events)]
        expires = int((now + self._event_ttl).timestamp())
        requests: list[Any] = [
            {
                "PutRequest": {
                    "Item": _marshal(
                        {
                            "pk": f"JOB#{job_id}",
                            "sk": _evt_sk(e.seq),
                            "event": e.wire(),
                            "expires_at": expires,
                        }
                    )
                }
            }
            for e in numbered
        ]
        for start in range(0, len(requests), 25):
            self._batch_write(requests[start : start + 25])
        return numbered, watchers

    def _batch_write(self, requests: list[Any]) -> None:
        pending = {self._table: requests}
        for _ in range(5):
            got = _guard(lambda: self._db.batch_write_item(RequestItems=pending))  # noqa: B023
            pending = got.get("UnprocessedItems") or {}
            if not pending:
                return
        raise StoreError("DynamoDB kept events unprocessed; giving up")

    def after(
        self, job_id: str, after_seq: int, *, up_to: int | None = None, limit: int = 500
    ) -> list[JobEvent]:
        """A job's events with seq > after_seq (and <= up_to), in order."""
        upper = _evt_sk(up_to) if up_to is not None else f"{EVENT_SK}~"
        got = _guard(
            lambda: self._db.query(
                TableName=self._table,
                KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
                ExpressionAttributeValues={
                    ":pk": {"S": f"JOB#{job_id}"},
                    ":lo": {"S": _evt_sk(after_seq + 1)},
                    ":hi": {"S": upper},
                },
                ConsistentRead=True,
                Limit=limit,
            )
        )
        return [JobEvent.model_validate(_unmarshal(i)["event"]) for i in got.get("Items", [])]

    # -- connections and subscriptions --------------------------------------------------------

    def put_connection(self, connection_id: str, tenant: str, now: datetime) -> None:
        doc = {
            "pk": f"CONN#{connection_id}",
            "sk": "CONN",
            "tenant": tenant,
            "connected_at": now.isoformat(),
            "expires_at": int((now + CONNECTION_TTL).timestamp()),
        }
        _guard(lambda: self._db.put_item(TableName=self._table, Item=_marshal(doc)))

    def connection_tenant(self, connection_id: str) -> str | None:
        got = _guard(
            lambda: self._db.get_item(
                TableName=self._table,
                Key={"pk": {"S": f"CONN#{connection_id}"}, "sk": {"S": "CONN"}},
                ConsistentRead=True,
            )
        )
        return str(_unmarshal(got["Item"])["tenant"]) if "Item" in got else None

    def delete_connection(self, connection_id: str) -> list[str]:
        """Forget a connection and answer the jobs it was subscribed to."""
        got = _guard(
            lambda: self._db.delete_item(
                TableName=self._table,
                Key={"pk": {"S": f"CONN#{connection_id}"}, "sk": {"S": "CONN"}},
                ReturnValues="ALL_OLD",
            )
        )
        jobs = _unmarshal(got.get("Attributes", {})).get("jobs") or []
        for job_id in jobs:
            self.delete_subscription(job_id, connection_id)
        return sorted(jobs)

    def put_subscription(self, sub: Subscription, now: datetime) -> None:
        expires = int((now + CONNECTION_TTL).timestamp())
        doc = {
            "pk": f"JOB#{sub.job_id}",
            "sk": f"{SUB_SK}{sub.connection_id}",
            "connection_id": sub.connection_id,
            "delivered_seq": sub.delivered_seq,
            "expires_at": expires,
        }
        old = _guard(
            lambda: self._db.put_item(TableName=self._table, Item=_marshal(doc), ReturnValues="ALL_OLD")
        )
        if not old.get("Attributes"):
            self._count_watchers(sub.job_id, 1)
        _guard(
            lambda: self._db.update_item(
                TableName=self._table,
                Key={"pk": {"S": f"CONN#{sub.connection_id}"}, "sk": {"S": "CONN"}},
                UpdateExpression="ADD jobs :j",
                ExpressionAttributeValues={":j": {"SS": [sub.job_id]}},
            )
        )

    def delete_subscription(self, job_id: str, connection_id: str) -> None:
        got = _guard(
            lambda: self._db.delete_item(
                TableName=self._table,
                Key={"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": f"{SUB_SK}{connection_id}"}},
                ReturnValues="ALL_OLD",
            )
        )
        if got.get("Attributes"):
            self._count_watchers(job_id, -1)

    def _count_watchers(self, job_id: str, delta: int) -> None:
        # A count on the job lets a publisher with no subscribers skip the query for them. Records
        # that expire by TTL never decrement it: it may only overstate, which costs a query, no event.
        try:
            self._db.update_item(
                TableName=self._table,
                Key={"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": "JOB"}},
                UpdateExpression="ADD watchers :d",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=_values(d=delta),
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise StoreError("DynamoDB update failed") from exc
        except BotoCoreError as exc:
            raise StoreError(f"DynamoDB unreachable: {exc}") from exc

    def subscriptions(self, job_id: str) -> list[Subscription]:
        got = _guard(
            lambda: self._db.query(
                TableName=self._table,
                KeyConditionExpression="pk = :pk AND begins_with(sk, :sub)",
                ExpressionAttributeValues={":pk": {"S": f"JOB#{job_id}"}, ":sub": {"S": SUB_SK}},
                ConsistentRead=True,
            )
        )
        return [
            Subscription(
                job_id=job_id, connection_id=d["connection_id"], delivered_seq=int(d["delivered_seq"])
            )
            for d in (_unmarshal(i) for i in got.get("Items", []))
        ]

    def claim_range(self, sub: Subscription, up_to: int) -> bool:
        """Move a subscription's cursor from what we read to up_to; only the winner sends that range."""
        try:
            self._db.update_item(
                TableName=self._table,
                Key={"pk": {"S": f"JOB#{sub.job_id}"}, "sk": {"S": f"{SUB_SK}{sub.connection_id}"}},
                UpdateExpression="SET delivered_seq = :new",
                ConditionExpression="delivered_seq = :old",
                ExpressionAttributeValues=_values(new=up_to, old=sub.delivered_seq),
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise StoreError("DynamoDB update failed") from exc
        except BotoCoreError as exc:
            raise StoreError(f"DynamoDB unreachable: {exc}") from exc
        return True
