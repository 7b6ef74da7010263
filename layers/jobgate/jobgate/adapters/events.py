"""DynamoDB adapter for WebSocket state: each job's numbered events, connections, subscriptions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from jobgate.adapters.dynamo import _guard, _is_conditional_failure, _marshal, _unmarshal, _values, item_size
from jobgate.errors import StoreError
from jobgate.models import JobEvent, Subscription

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# API Gateway closes a WebSocket connection after 2 hours; its records need not outlive it.
CONNECTION_TTL = timedelta(hours=2)
# How long a sender holds a subscription before another may take over; renewed well before it ends.
LEASE = timedelta(seconds=15)
EVENT_SK = "EVT#"
SUB_SK = "SUB#"
# Events written together are stored together, as one item (a page) keyed by its last event's number:
# a page of small events costs one write, not one each. A page stays well under DynamoDB's 400 KB.
PAGE_BYTES = 300 * 1024


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
        requests: list[Any] = [{"PutRequest": {"Item": item}} for item in self.pages(numbered, now)]
        for start in range(0, len(requests), 25):
            self._batch_write(requests[start : start + 25])
        return numbered, watchers

    def pages(self, numbered: list[JobEvent], now: datetime) -> list[dict[str, Any]]:
        """The items that store these numbered events (consecutive, in order): as few pages as fit."""
        expires = int((now + self._event_ttl).timestamp())
        pages: list[list[dict[str, Any]]] = [[]]
        size = 0
        for event in numbered:
            wire = event.wire()
            grows = item_size(_marshal({"e": wire}))
            if pages[-1] and size + grows > PAGE_BYTES:
                pages.append([])
                size = 0
            pages[-1].append(wire)
            size += grows
        return [
            _marshal(
                {
                    "pk": f"JOB#{numbered[0].job_id}",
                    "sk": _evt_sk(int(page[-1]["seq"])),
                    "events": page,
                    "expires_at": expires,
                }
            )
            for page in pages
            if page
        ]

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
        """A job's events with seq > after_seq (and <= up_to), in order, at most `limit` of them."""
        # A page is keyed by its last event: the pages holding events past after_seq are those keyed past it.
        got = _guard(
            lambda: self._db.query(
                TableName=self._table,
                KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
                ExpressionAttributeValues={
                    ":pk": {"S": f"JOB#{job_id}"},
                    ":lo": {"S": _evt_sk(after_seq + 1)},
                    ":hi": {"S": f"{EVENT_SK}~"},
                },
                ConsistentRead=True,
                Limit=limit,
            )
        )
        events: list[JobEvent] = []
        for item in got.get("Items", []):
            doc = _unmarshal(item)
            # Records written before pages existed hold one event each.
            for raw in doc["events"] if "events" in doc else [doc["event"]]:
                event = JobEvent.model_validate(raw)
                if up_to is not None and event.seq > up_to:
                    return events
                if event.seq > after_seq:
                    events.append(event)
                    if len(events) == limit:
                        return events
        return events

    def last_seq(self, job_id: str) -> int:
        """The number of the job's latest stored event (0 when it has none)."""
        got = _guard(
            lambda: self._db.query(
                TableName=self._table,
                KeyConditionExpression="pk = :pk AND begins_with(sk, :evt)",
                ExpressionAttributeValues={":pk": {"S": f"JOB#{job_id}"}, ":evt": {"S": EVENT_SK}},
                ProjectionExpression="sk",
                ScanIndexForward=False,
                ConsistentRead=True,
                Limit=1,
            )
        )
        items = got.get("Items", [])
        return int(items[0]["sk"]["S"][len(EVENT_SK) :]) if items else 0

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

    # -- who sends a subscriber its events: a lease on its subscription ------------------------
    #
    # One sender at a time holds a subscription (`sending_by`, until `sending_until`, epoch ms). It sends
    # from `delivered_seq` on, and moves `delivered_seq` only past what API Gateway took. A publisher that
    # finds it held adds one to `wakes` instead: the holder lets go only if `wakes` is still what it last
    # read, otherwise it reads the new events and sends them too. A holder that dies is replaced once its
    # lease has expired; it may have sent a few events its successor sends again (clients drop repeats).

    def take_lease(
        self, job_id: str, connection_id: str, sender: str, *, now: datetime, lease: timedelta = LEASE
    ) -> Lease | None:
        """Hold the subscription to send it events; None when another sender holds it (or it is gone)."""
        try:
            got = self._db.update_item(
                TableName=self._table,
                Key=_sub_key(job_id, connection_id),
                UpdateExpression="SET sending_by = :me, sending_until = :until",
                ConditionExpression=(
                    "attribute_exists(pk) AND (attribute_not_exists(sending_until) OR sending_until < :now)"
                ),
                ExpressionAttributeValues=_values(me=sender, until=_ms(now + lease), now=_ms(now)),
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _is_conditional_failure(exc):
                return None
            raise StoreError("DynamoDB update failed") from exc
        except BotoCoreError as exc:
            raise StoreError(f"DynamoDB unreachable: {exc}") from exc
        return _lease(job_id, connection_id, sender, got["Attributes"])

    def wake(self, job_id: str, connection_id: str, *, now: datetime) -> bool:
        """Tell the sender holding the subscription that there is more; False when nobody holds it."""
        try:
            self._db.update_item(
                TableName=self._table,
                Key=_sub_key(job_id, connection_id),
                UpdateExpression="ADD wakes :one",
                ConditionExpression="attribute_exists(pk) AND sending_until >= :now",
                ExpressionAttributeValues=_values(one=1, now=_ms(now)),
            )
        except ClientError as exc:
            if _is_conditional_failure(exc):
                return False
            raise StoreError("DynamoDB update failed") from exc
        except BotoCoreError as exc:
            raise StoreError(f"DynamoDB unreachable: {exc}") from exc
        return True

    def renew_lease(
        self, held: Lease, delivered_seq: int, *, now: datetime, lease: timedelta = LEASE
    ) -> Lease | None:
        """Record what was delivered and hold on longer; None when the lease was lost."""
        try:
            got = self._db.update_item(
                TableName=self._table,
                Key=_sub_key(held.job_id, held.connection_id),
                UpdateExpression="SET delivered_seq = :d, sending_until = :until",
                ConditionExpression="sending_by = :me",
                ExpressionAttributeValues=_values(d=delivered_seq, until=_ms(now + lease), me=held.sender),
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _is_conditional_failure(exc):
                return None
            raise StoreError("DynamoDB update failed") from exc
        except BotoCoreError as exc:
            raise StoreError(f"DynamoDB unreachable: {exc}") from exc
        return _lease(held.job_id, held.connection_id, held.sender, got["Attributes"])

    def release_lease(self, held: Lease, delivered_seq: int, *, whatever_woke: bool = False) -> bool:
        """Record what was delivered and let go. False, still holding, when a publisher woke the holder
        since it last read the subscription (unless `whatever_woke`), or when the lease was lost."""
        condition = "sending_by = :me"
        values = _values(d=delivered_seq, me=held.sender)
        if not whatever_woke:
            condition += " AND (attribute_not_exists(wakes) OR wakes = :seen)"
            values.update(_values(seen=held.wakes))
        try:
            self._db.update_item(
                TableName=self._table,
                Key=_sub_key(held.job_id, held.connection_id),
                UpdateExpression="SET delivered_seq = :d REMOVE sending_by, sending_until",
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if _is_conditional_failure(exc):
                return False
            raise StoreError("DynamoDB update failed") from exc
        except BotoCoreError as exc:
            raise StoreError(f"DynamoDB unreachable: {exc}") from exc
        return True


@dataclass(frozen=True)
class Lease:
    """A sender's hold on one subscription, and what it read there when it took or renewed it."""

    job_id: str
    connection_id: str
    sender: str
    delivered_seq: int
    wakes: int


def _sub_key(job_id: str, connection_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": f"{SUB_SK}{connection_id}"}}


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _lease(job_id: str, connection_id: str, sender: str, item: dict[str, Any]) -> Lease:
    doc = _unmarshal(item)
    return Lease(
        job_id=job_id,
        connection_id=connection_id,
        sender=sender,
        delivered_seq=int(doc.get("delivered_seq", 0)),
        wakes=int(doc.get("wakes", 0)),
    )
