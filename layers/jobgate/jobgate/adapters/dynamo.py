"""DynamoDB adapter: job and asset records in one table, every state change a conditional write."""

from __future__ import annotations

import base64
import binascii
import contextvars
import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError
from ulid import ULID

from jobgate.errors import Conflict, InvalidTransition, NotFound, RunIdConflict, StoreError, ValidationFailed
from jobgate.models import (
    TERMINAL_STATUSES,
    Asset,
    AssetPage,
    Job,
    JobError,
    JobPage,
    JobResult,
    JobStatus,
    job_id_of_server_run,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_ser = TypeSerializer()
_de = TypeDeserializer()

JOB_SK = "JOB"
RUN_SK = "RUN"
ASSET_SK = "ASSET"
# DynamoDB refuses an item (or an update that makes one) past 400 KB: names and values, as counted
# by `item_size`.
MAX_ITEM_BYTES = 400 * 1024
# A new job's record may take at most this much. What running it adds (two 16 KiB log tails, an
# error, the first page of outputs, the manifest's key, counters, timestamps) is bounded too, about
# 105 KB: tests/unit/test_job_item_size.py checks the sum stays well under MAX_ITEM_BYTES.
MAX_NEW_JOB_BYTES = 160 * 1024
# BatchWriteItem calls in flight at once when many new jobs are written (a map's chunks).
PARALLEL_WRITES = 4
# How often a write retries when the job moved between its read and its conditional write.
_CANCEL_ROUNDS = 8


def _job_key(job_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": JOB_SK}}


def _status_index_key(tenant: str, status: JobStatus | str) -> str:
    return f"TENANT#{tenant}#STATUS#{status}"


def _active_key(status: JobStatus) -> str:
    # A sparse index of unfinished jobs across tenants, for the sweeper; ended jobs leave it.
    return f"ACTIVE#{status}"


def _queued_sk(job_id: str, at: datetime, *, sent: bool) -> str:
    # Queued jobs sort by what the sweeper asks of them: those whose message is not confirmed ("Q#")
    # by when they became queued, those whose message was sent ("S#") by when it was sent. The ULIDs
    # of records written before this scheme sort ahead of both, among the unconfirmed.
    return f"{'S' if sent else 'Q'}#{epoch_ms(at):015d}#{job_id}"


def item_size(item: Mapping[str, Any]) -> int:
    """An item's size as DynamoDB counts it against MAX_ITEM_BYTES, from its marshalled attributes.

    AWS's rules: a name and a string count their UTF-8 bytes; a number one byte per two significant
    digits plus one; a binary its raw bytes; a null or boolean one byte; a list or map 3 bytes plus
    its elements, each element one byte more (a map's keys count as names).
    """
    return sum(len(name.encode()) + attribute_size(value) for name, value in item.items())


def attribute_size(value: Mapping[str, Any]) -> int:
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(str(inner).encode())
    if kind == "N":
        return _number_size(str(inner))
    if kind == "B":
        return len(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + attribute_size(v) + 1 for k, v in inner.items())
    if kind == "L":
        return 3 + sum(attribute_size(v) + 1 for v in inner)
    if kind == "SS":
        return sum(len(v.encode()) for v in inner)
    if kind == "NS":
        return sum(_number_size(v) for v in inner)
    if kind == "BS":
        return sum(len(v) for v in inner)
    raise ValueError(f"unknown DynamoDB type {kind}")


def _number_size(number: str) -> int:
    mantissa = number.lower().lstrip("+-").split("e", 1)[0]
    significant = mantissa.replace(".", "").strip("0")
    return (len(significant) + 1) // 2 + 1


def marshalled_size(value: Any) -> int:
    """The size DynamoDB counts for one plain (JSON-like) value stored as an attribute."""
    return attribute_size(_ser.serialize(_to_dynamo(value)))


def _to_dynamo(value: Any) -> Any:
    # DynamoDB numbers must be Decimal; JSON mode turns datetimes into ISO strings first.
    return json.loads(json.dumps(value), parse_float=Decimal)


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    return value


def _marshal(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in _to_dynamo(dict(doc)).items() if v is not None}


def _unmarshal(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _from_dynamo(_de.deserialize(v)) for k, v in item.items()}


def _values(**values: Any) -> dict[str, Any]:
    return {f":{k}": _ser.serialize(_to_dynamo(v)) for k, v in values.items()}


def _epoch(dt: datetime) -> int:
    return int(dt.timestamp())


def _is_conditional_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


T = TypeVar("T")


def _guard(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except ClientError as exc:
        raise StoreError(f"DynamoDB call failed: {exc.response.get('Error', {}).get('Code')}") from exc
    except BotoCoreError as exc:
        raise StoreError(f"DynamoDB unreachable: {exc}") from exc


def items_of(
    db: DynamoDBClient, table: str, keys: Sequence[Mapping[str, Any]], *, consistent: bool = False
) -> list[dict[str, Any]]:
    """The items an index query answered, read whole, in the index's order.

    The table's indexes project only keys (template.yaml): a job is written four or five times, and
    each write would otherwise be copied into every index it sits in; a list is read far less often.
    An item gone meanwhile (its TTL) is left out.
    """
    found: dict[tuple[str, str], dict[str, Any]] = {}
    wanted = [{"pk": k["pk"], "sk": k["sk"]} for k in keys]
    for start in range(0, len(wanted), 100):
        pending: dict[str, Any] = {table: {"Keys": wanted[start : start + 100], "ConsistentRead": consistent}}
        while pending:
            got = _guard(lambda: db.batch_get_item(RequestItems=pending))  # noqa: B023
            for item in got.get("Responses", {}).get(table, []):
                found[(item["pk"]["S"], item["sk"]["S"])] = item
            pending = dict(got.get("UnprocessedKeys") or {})
    return [found[key] for key in ((k["pk"]["S"], k["sk"]["S"]) for k in wanted) if key in found]


def _job_or_none(item: Mapping[str, Any] | None) -> Job | None:
    return Job.model_validate(_unmarshal(item)) if item else None


def _refused_item(exc: ClientError) -> Mapping[str, Any] | None:
    """The item a refused conditional write found (ReturnValuesOnConditionCheckFailure=ALL_OLD): on the
    error itself for a single write, in the first cancellation reason for a transaction."""
    response: Mapping[str, Any] = exc.response
    if "Item" in response:
        item: Mapping[str, Any] = response["Item"]
        return item
    reasons = response.get("CancellationReasons") or []
    if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
        first: Mapping[str, Any] | None = reasons[0].get("Item")
        return first
    return None


def _cancelled_because(exc: ClientError) -> set[str]:
    reasons = exc.response.get("CancellationReasons") or []
    return {str(r.get("Code")) for r in reasons if r.get("Code") not in (None, "None")}


@dataclass(frozen=True)
class JobPulse:
    """What a running attempt asks of its job between renewals: a small, strongly consistent read."""

    status: JobStatus
    attempts: int
    cancel_requested: bool
    watchers: int


@dataclass(frozen=True)
class EventCommit:
    """Events written with the job's own write, in one transaction (see docs/architecture.md, "Live
    events"): their items, the event counter as the writer last saw it and where it moves to, and how
    many subscribers the writer believes the job has. The write holds only while both are as believed,
    so a writer never numbers over another's events and always learns of a new subscriber."""

    seen_seq: int
    last_seq: int
    watchers: int
    items: list[dict[str, Any]]


# A status change someone other than the job's worker makes (a cancel, the sweeper, a dead letter)
# carries its status event in the same transaction: given the job as the change leaves it (its counter
# and subscribers as read), the commit that numbers and stores the event.
Announce = Callable[[Job], EventCommit]


def _event_conditions(commit: EventCommit) -> tuple[str, dict[str, Any]]:
    seq = "event_seq = :seen_seq"
    if commit.seen_seq == 0:
        seq = f"(attribute_not_exists(event_seq) OR {seq})"
    watchers = "watchers = :seen_watchers"
    if commit.watchers == 0:
        watchers = f"(attribute_not_exists(watchers) OR {watchers})"
    return f" AND {seq} AND {watchers}", {"seen_seq": commit.seen_seq, "seen_watchers": commit.watchers}


class JobStore:
    """Jobs, run-id reservations and assets; the table's keys are described in template.yaml."""

    def __init__(self, client: DynamoDBClient, table_name: str, job_ttl: timedelta) -> None:
        self._db = client
        self._table = table_name
        self._ttl = job_ttl

    # -- jobs ---------------------------------------------------------------------------------

    def create(self, job: Job) -> tuple[Job, bool]:
        """Write a new job; with a run_id already used, answer that job (same request) or 409.

        A run_id the server made (`run_<job_id>`) is unique with its job: it needs no reservation.
        """
        job = _with_queued_at(job)
        job, item = _new_job_record(job, self._ttl)
        put_job = {
            "Put": {
                "TableName": self._table,
                "Item": item,
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        if job.run_id is None or job_id_of_server_run(job.run_id) == job.job_id:
            try:
                self._db.put_item(**put_job["Put"])  # type: ignore[arg-type]
            except ClientError as exc:
                # The id is new: a job already under it is this very write, applied before its answer
                # was lost and retried by the SDK.
                if not (_is_conditional_failure(exc) and self.find(job.job_id) is not None):
                    code = exc.response.get("Error", {}).get("Code")
                    raise StoreError(f"DynamoDB call failed: {code}") from exc
            except BotoCoreError as exc:
                raise StoreError(f"DynamoDB unreachable: {exc}") from exc
            return job, True
        run_item = _marshal(
            {
                "pk": f"RUN#{job.tenant}#{job.run_id}",
                "sk": RUN_SK,
                "job_id": job.job_id,
                "request_hash": job.request_hash,
                "expires_at": _epoch(job.created_at + self._ttl),
            }
        )
        put_run = {
            "Put": {
                "TableName": self._table,
                "Item": run_item,
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        try:
            self._db.transact_write_items(TransactItems=[put_run, put_job])  # type: ignore[list-item]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise StoreError("DynamoDB transaction failed") from exc
            existing = self._existing_run(job)
            # This transaction itself, applied before its answer was lost (the job id is new).
            return existing, existing.job_id == job.job_id
        except BotoCoreError as exc:
            raise StoreError(f"DynamoDB unreachable: {exc}") from exc
        return job, True

    def _existing_run(self, job: Job) -> Job:
        key = {"pk": {"S": f"RUN#{job.tenant}#{job.run_id}"}, "sk": {"S": RUN_SK}}
        got = _guard(lambda: self._db.get_item(TableName=self._table, Key=key, ConsistentRead=True))
        if "Item" not in got:
            raise StoreError("run_id reservation vanished during a concurrent submission; retry")
        run = _unmarshal(got["Item"])
        if run["request_hash"] != job.request_hash:
            raise RunIdConflict(
                f"run_id '{job.run_id}' was used for a different request (job {run['job_id']}).",
                extra={"job_id": run["job_id"]},
            )
        return self.get(run["job_id"], tenant=job.tenant)

    def find_run(self, tenant: str, run_id: str) -> str | None:
        """The id of the job a client's run_id was reserved for, in this tenant; None when unknown."""
        key = {"pk": {"S": f"RUN#{tenant}#{run_id}"}, "sk": {"S": RUN_SK}}
        got = _guard(lambda: self._db.get_item(TableName=self._table, Key=key, ConsistentRead=True))
        return str(_unmarshal(got["Item"])["job_id"]) if "Item" in got else None

    def find(self, job_id: str) -> Job | None:
        got = _guard(
            lambda: self._db.get_item(TableName=self._table, Key=_job_key(job_id), ConsistentRead=True)
        )
        return Job.model_validate(_unmarshal(got["Item"])) if "Item" in got else None

    def get(self, job_id: str, *, tenant: str | None = None) -> Job:
        """The job; another tenant's job is as unknown as a missing one."""
        job = self.find(job_id)
        if job is None or (tenant is not None and job.tenant != tenant):
            raise NotFound(f"No job '{job_id}'.")
        return job

    def list_jobs(self, tenant: str, *, status: JobStatus | None, limit: int, cursor: str | None) -> JobPage:
        if status is None:
            index, pk_name, pk_value = "gsi1", "gsi1pk", f"TENANT#{tenant}#JOBS"
        else:
            index, pk_name, pk_value = "gsi2", "gsi2pk", _status_index_key(tenant, status)
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": index,
            "KeyConditionExpression": f"{pk_name} = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk_value}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if cursor:
            query["ExclusiveStartKey"] = _decode_cursor(cursor, pk_name, pk_value)
        got = _guard(lambda: self._db.query(**query))
        items = [Job.model_validate(_unmarshal(i)) for i in self._items_of(got.get("Items", []))]
        last = got.get("LastEvaluatedKey")
        return JobPage(items=items, next_cursor=_encode_cursor(last) if last else None)

    def _items_of(
        self, keys: Sequence[Mapping[str, Any]], *, consistent: bool = False
    ) -> list[dict[str, Any]]:
        return items_of(self._db, self._table, keys, consistent=consistent)

    def _update(
        self,
        job_id: str,
        update: str,
        condition: str,
        values: dict[str, Any],
        names: dict[str, str],
        *,
        token: bool = False,
    ) -> Job:
        """One conditional update of a job; InvalidTransition when its condition does not hold.

        With ``token``, the update also writes a token of its own (``write_token``). A write whose
        answer was lost (the connection dropped after DynamoDB applied it) is retried by the SDK, and the
        retry finds the condition false: the job has moved, but by this very write. The token tells
        that apart from another writer's move, so the caller goes on as the winner it is.
        """
        mine = str(ULID()) if token else None
        if mine is not None:
            update = _with_write_token(update)
            values = {**values, ":write_token": {"S": mine}}
        try:
            got = self._db.update_item(
                TableName=self._table,
                Key=_job_key(job_id),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
                ExpressionAttributeNames=names,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if _is_conditional_failure(exc):
                current = _job_or_none(_refused_item(exc))
                if mine is not None and current is not None and current.write_token == mine:
                    return current
                raise InvalidTransition(
                    f"Job '{job_id}' is not in a state that allows this.", current=current
                ) from exc
            raise StoreError(f"DynamoDB update failed: {exc.response.get('Error', {}).get('Code')}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"DynamoDB unreachable: {exc}") from exc
        return Job.model_validate(_unmarshal(got["Attributes"]))

    def claim(self, job: Job, *, now: datetime, lease_until: datetime) -> Job:
        """queued -> running, or take over a running job whose worker stopped renewing its lease."""
        values = _values(
            queued=JobStatus.QUEUED.value,
            running=JobStatus.RUNNING.value,
            now=now.isoformat(),
            now_ms=epoch_ms(now),
            lease=epoch_ms(lease_until),
            one=1,
            no=False,
            attempts=job.attempts,
            gsi2=_status_index_key(job.tenant, JobStatus.RUNNING),
            gsi3=_active_key(JobStatus.RUNNING),
            gsi3sk=job.job_id,
        )
        # A job whose cancel was asked is never run (again): its claimant ends it instead.
        return self._update(
            job.job_id,
            "SET #status = :running, attempts = attempts + :one, lease_until = :lease, gsi2pk = :gsi2,"
            " gsi3pk = :gsi3, gsi3sk = :gsi3sk, started_at = if_not_exists(started_at, :now)",
            "attempts = :attempts AND (#status = :queued OR (#status = :running AND lease_until < :now_ms))"
            " AND (attribute_not_exists(cancel_requested) OR cancel_requested = :no)",
            values,
            {"#status": "status"},
            token=True,
        )

    def claim_delivered(
        self, job_id: str, *, tenant: str, now: datetime, lease_until: datetime, max_attempts: int
    ) -> Job:
        """Claim the job a message names, without reading it first: queued -> running, or take over a
        running job whose lease has run out while attempts are left; a job whose cancel was asked never.

        When the claim misses, InvalidTransition carries the job as it is (`current`), for the caller to
        decide (end it, skip it, claim it as read); NotFound when there is no such job.
        """
        values = _values(
            tenant=tenant,
            queued=JobStatus.QUEUED.value,
            running=JobStatus.RUNNING.value,
            now=now.isoformat(),
            now_ms=epoch_ms(now),
            lease=epoch_ms(lease_until),
            one=1,
            no=False,
            most=max_attempts,
            gsi2=_status_index_key(tenant, JobStatus.RUNNING),
            gsi3=_active_key(JobStatus.RUNNING),
            gsi3sk=job_id,
        )
        try:
            return self._update(
                job_id,
                "SET #status = :running, attempts = attempts + :one, lease_until = :lease, gsi2pk = :gsi2,"
                " gsi3pk = :gsi3, gsi3sk = :gsi3sk, started_at = if_not_exists(started_at, :now)",
                "attribute_exists(pk) AND tenant = :tenant"
                " AND (attribute_not_exists(cancel_requested) OR cancel_requested = :no)"
                " AND (#status = :queued OR (#status = :running AND lease_until < :now_ms AND"
                " (attempts < max_attempts OR (attribute_not_exists(max_attempts) AND attempts < :most))))",
                values,
                {"#status": "status"},
                token=True,
            )
        except InvalidTransition as exc:
            if exc.current is None:
                raise NotFound(f"No job '{job_id}'.") from exc
            raise

    def pulse(self, job_id: str) -> JobPulse | None:
        """The job's status, attempt, cancel flag and subscriber count; None when it is gone."""
        got = _guard(
            lambda: self._db.get_item(
                TableName=self._table,
                Key=_job_key(job_id),
                ProjectionExpression="#status, attempts, cancel_requested, watchers",
                ExpressionAttributeNames={"#status": "status"},
                ConsistentRead=True,
            )
        )
        if "Item" not in got:
            return None
        doc = _unmarshal(got["Item"])
        return JobPulse(
            status=JobStatus(doc["status"]),
            attempts=int(doc.get("attempts", 0)),
            cancel_requested=bool(doc.get("cancel_requested", False)),
            watchers=int(doc.get("watchers", 0)),
        )

    def commit_events(self, job_id: str, *, attempt: int, commit: EventCommit, progress: float) -> None:
        """Write a running attempt's events and move the job's counter (and progress) past them, in one
        transaction that holds only while this attempt holds the job and the counter and subscriber
        count are as the writer saw them; otherwise InvalidTransition with the job as it is."""
        conditions, condition_values = _event_conditions(commit)
        self._transact(
            job_id,
            "SET event_seq = :last_seq, progress = :progress",
            "#status = :running AND attempts = :a" + conditions,
            {
                "last_seq": commit.last_seq,
                "progress": progress,
                "running": JobStatus.RUNNING.value,
                "a": attempt,
                **condition_values,
            },
            {"#status": "status"},
            commit.items,
        )

    def _transact(
        self,
        job_id: str,
        update: str,
        condition: str,
        values: dict[str, Any],
        names: dict[str, str],
        items: list[dict[str, Any]],
    ) -> str:
        """One conditional update of a job and puts of new items, all or nothing; the write's token.

        A transaction whose answer was lost is sent again by the SDK with the same client token, which
        DynamoDB answers as done; an emulator that applies it twice finds the condition false, and the
        token written on the job tells that apart from another writer's move (see `_update`).
        """
        mine = str(ULID())
        update_item = {
            "TableName": self._table,
            "Key": _job_key(job_id),
            "UpdateExpression": _with_write_token(update),
            "ConditionExpression": condition,
            "ExpressionAttributeValues": _values(**values, write_token=mine),
            "ExpressionAttributeNames": names,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        puts = [{"Put": {"TableName": self._table, "Item": item}} for item in items]
        try:
            self._db.transact_write_items(TransactItems=[{"Update": update_item}, *puts])  # type: ignore[typeddict-item, list-item]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            reasons = _cancelled_because(exc)
            if code == "TransactionCanceledException" and reasons == {"ConditionalCheckFailed"}:
                current = _job_or_none(_refused_item(exc))
                if current is not None and current.write_token == mine:
                    return mine
                raise InvalidTransition(
                    f"Job '{job_id}' is not in a state that allows this.", current=current
                ) from exc
            raise StoreError(f"DynamoDB transaction failed: {code} {sorted(reasons)}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"DynamoDB unreachable: {exc}") from exc
        return mine

    def heartbeat(
        self, job_id: str, *, attempt: int, lease_until: datetime, progress: float | None = None
    ) -> Job:
        """Renew this attempt's lease; the answer carries cancel_requested."""
        update = "SET lease_until = :lease"
        vals: dict[str, Any] = {
            "lease": epoch_ms(lease_until),
            "running": JobStatus.RUNNING.value,
            "a": attempt,
        }
        if progress is not None:
            update += ", progress = :p"
            vals["p"] = progress
        return self._update(
            job_id, update, "#status = :running AND attempts = :a", _values(**vals), {"#status": "status"}
        )

    def release(self, job_id: str, *, attempt: int, now: datetime) -> None:
        """Give up this attempt's lease at once so a redelivery can take the job over."""
        try:
            self._update(
                job_id,
                "SET lease_until = :now",
                "#status = :running AND attempts = :a",
                _values(now=epoch_ms(now), running=JobStatus.RUNNING.value, a=attempt),
                {"#status": "status"},
            )
        except InvalidTransition:
            pass  # already ended or taken over: nothing to release

    def finish(
        self,
        job: Job,
        *,
        attempt: int,
        result: JobResult,
        now: datetime,
        events: EventCommit | None = None,
    ) -> Job:
        """running -> a terminal state, only by the attempt that holds the job; with `events`, the
        attempt's last events (its final status among them) in the same transaction."""
        condition = "#status = :running AND attempts = :a"
        cond_values: dict[str, Any] = {"running": JobStatus.RUNNING.value, "a": attempt}
        if events is None:
            return self._terminal(job, result, now, condition=condition, cond_values=cond_values)
        return self._terminal_with_events(job, result, now, condition, cond_values, events)

    def _terminal_with_events(
        self,
        job: Job,
        result: JobResult,
        now: datetime,
        condition: str,
        cond_values: dict[str, Any],
        events: EventCommit,
    ) -> Job:
        """The terminal write and `events` in one transaction, held on `condition` and the event counter."""
        conditions, event_values = _event_conditions(events)
        mine = self._transact(
            job.job_id,
            _TERMINAL_UPDATE.replace(" REMOVE", ", event_seq = :last_seq REMOVE"),
            condition + conditions,
            {
                **self._terminal_values(job, result, now),
                **cond_values,
                **event_values,
                "last_seq": events.last_seq,
            },
            _TERMINAL_NAMES,
            events.items,
        )
        # A transaction answers nothing: the job as this write left it is the job as read, changed as
        # written (the write held only while the job was as the condition says, so nothing else changed it).
        fields = self._terminal_fields(job, result, now)
        return job.model_copy(
            update={**fields, "event_seq": events.last_seq, "write_token": mine, "lease_until": None}
        )

    # A job becomes queued (again) with no confirmed message: whoever sends it confirms the send
    # (`confirm_enqueue`); until then the sweeper may send it again.
    _QUEUED = (
        "SET #status = :queued, gsi2pk = :gsi2, gsi3pk = :gsi3, gsi3sk = :gsi3sk, queued_at = :now"
        " REMOVE enqueued_at, requeues"
    )

    def _queued_values(self, job: Job, now: datetime) -> dict[str, Any]:
        return {
            "queued": JobStatus.QUEUED.value,
            "gsi2": _status_index_key(job.tenant, JobStatus.QUEUED),
            "gsi3": _active_key(JobStatus.QUEUED),
            "gsi3sk": _queued_sk(job.job_id, now, sent=False),
            "now": now.isoformat(),
        }

    def unblock(self, job: Job, *, now: datetime) -> Job:
        """blocked -> queued, once: the steps it reads from have all succeeded."""
        return self._update(
            job.job_id,
            self._QUEUED,
            "#status = :blocked",
            _values(blocked=JobStatus.BLOCKED.value, **self._queued_values(job, now)),
            {"#status": "status"},
            token=True,
        )

    def requeue(self, job: Job, *, attempt: int, now: datetime) -> Job:
        """running -> queued for another attempt (a retriable failure), only by the attempt holding it."""
        return self._update(
            job.job_id,
            self._QUEUED + ", lease_until",
            "#status = :running AND attempts = :a",
            _values(running=JobStatus.RUNNING.value, a=attempt, **self._queued_values(job, now)),
            {"#status": "status"},
            token=True,
        )

    def confirm_enqueue(self, job: Job, *, now: datetime) -> bool:
        """Record that this queued spell's message was sent; False when the job has moved on already."""
        try:
            self._update(
                job.job_id,
                "SET enqueued_at = :now, gsi3sk = :gsi3sk",
                "#status = :queued AND attempts = :a AND attribute_not_exists(enqueued_at)",
                _values(
                    now=now.isoformat(),
                    gsi3sk=_queued_sk(job.job_id, now, sent=True),
                    queued=JobStatus.QUEUED.value,
                    a=job.attempts,
                ),
                {"#status": "status"},
            )
        except InvalidTransition:
            return False  # claimed, ended or confirmed meanwhile: its message was delivered
        return True

    def link_retry_of(self, retry: Job, original: Job) -> Job:
        return self._update(
            retry.job_id, "SET retry_of = :o", "attribute_exists(pk)", _values(o=original.job_id), {}
        )

    def link_retry(self, original: Job, retry: Job) -> Job:
        return self._update(
            original.job_id,
            "SET retried_by = :r",
            "attribute_exists(pk)",
            _values(r=retry.job_id),
            {},
        )

    def create_many(self, jobs: list[Job], extra_items: list[dict[str, Any]]) -> None:
        """Write a pipeline's jobs and its own records in one transaction (all or nothing)."""
        puts: list[Any] = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": item,
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
            for item in [*extra_items, *(_new_job_item(_with_queued_at(j), self._ttl) for j in jobs)]
        ]
        if len(puts) > 100:
            raise ValidationFailed(
                "A pipeline has at most 98 steps.", [{"loc": ["body", "steps"], "msg": "too many"}]
            )
        try:
            self._db.transact_write_items(TransactItems=puts)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "TransactionCanceledException":
                raise Conflict("A record of this pipeline exists already.") from exc
            raise StoreError("DynamoDB transaction failed") from exc
        except BotoCoreError as exc:
            raise StoreError(f"DynamoDB unreachable: {exc}") from exc

    def put_new_jobs(self, jobs: list[Job]) -> None:
        """Write many new jobs (a map's chunks), 25 to a BatchWriteItem, each checked like a new job.

        Not one transaction: the caller writes its own record after them, and the sweeper ends the
        blocked jobs of a record that never came. A put sent again writes the same item (the ids are new).
        """
        items = [_new_job_record(_with_queued_at(j), self._ttl)[1] for j in jobs]
        batches = [items[start : start + 25] for start in range(0, len(items), 25)]

        def write(batch: list[dict[str, Any]]) -> None:
            pending: dict[str, Any] = {self._table: [{"PutRequest": {"Item": item}} for item in batch]}
            while pending:
                got = _guard(lambda: self._db.batch_write_item(RequestItems=pending))  # noqa: B023
                pending = dict(got.get("UnprocessedItems") or {})

        # A few batches at once (10,000 chunks are 400 calls); each in a copy of this context, so the
        # request's deadline (adapters/aws.py) bounds every call as it bounds the caller's own.
        with ThreadPoolExecutor(max_workers=PARALLEL_WRITES) as pool:
            for done in [pool.submit(contextvars.copy_context().run, write, b) for b in batches]:
                done.result()

    def update_record(
        self,
        pk: str,
        sk: str,
        update: str,
        condition: str,
        values: Mapping[str, Any],
        names: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One conditional update of a record that is not a job (a map); InvalidTransition when its
        condition does not hold."""
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": {"pk": {"S": pk}, "sk": {"S": sk}},
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeValues": _values(**values),
            "ReturnValues": "ALL_NEW",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if names:
            request["ExpressionAttributeNames"] = dict(names)
        try:
            got = self._db.update_item(**request)
        except ClientError as exc:
            if _is_conditional_failure(exc):
                raise InvalidTransition(f"Record '{pk}' is not in a state that allows this.") from exc
            raise StoreError(f"DynamoDB update failed: {exc.response.get('Error', {}).get('Code')}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"DynamoDB unreachable: {exc}") from exc
        return _unmarshal(got["Attributes"])

    def active_records(self, kind: str, *, page_size: int = 100) -> list[dict[str, Any]]:
        """Every record (not job) in the sweeper's sparse index under `ACTIVE#<kind>`, all pages read,
        whole and strongly consistent."""
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": "gsi3",
            "KeyConditionExpression": "gsi3pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": f"ACTIVE#{kind}"}},
            "Limit": page_size,
        }
        records: list[dict[str, Any]] = []
        while True:
            got = _guard(lambda: self._db.query(**query))
            records.extend(_unmarshal(i) for i in self._items_of(got.get("Items", []), consistent=True))
            last = got.get("LastEvaluatedKey")
            if not last:
                return records
            query["ExclusiveStartKey"] = last

    def get_many(self, job_ids: list[str]) -> dict[str, Job]:
        found: dict[str, Job] = {}
        for start in range(0, len(job_ids), 100):
            keys = [_job_key(j) for j in job_ids[start : start + 100]]
            pending: dict[str, Any] = {self._table: {"Keys": keys, "ConsistentRead": True}}
            while pending:
                got = _guard(lambda: self._db.batch_get_item(RequestItems=pending))  # noqa: B023
                for item in got.get("Responses", {}).get(self._table, []):
                    job = Job.model_validate(_unmarshal(item))
                    found[job.job_id] = job
                pending = dict(got.get("UnprocessedKeys") or {})
        return found

    def get_fields(self, job_ids: list[str], fields: Sequence[str]) -> dict[str, dict[str, Any]]:
        """A few fields of many jobs (strongly consistent), by id: a map's chunk states without their
        args, logs and outputs, so a read of 100 stays small."""
        names = {f"#f{i}": name for i, name in enumerate(["job_id", *fields])}
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(job_ids), 100):
            keys = [_job_key(j) for j in job_ids[start : start + 100]]
            pending: dict[str, Any] = {
                self._table: {
                    "Keys": keys,
                    "ConsistentRead": True,
                    "ProjectionExpression": ", ".join(names),
                    "ExpressionAttributeNames": names,
                }
            }
            while pending:
                got = _guard(lambda: self._db.batch_get_item(RequestItems=pending))  # noqa: B023
                for item in got.get("Responses", {}).get(self._table, []):
                    doc = _unmarshal(item)
                    found[str(doc["job_id"])] = doc
                pending = dict(got.get("UnprocessedKeys") or {})
        return found

    def get_record(self, pk: str, sk: str) -> dict[str, Any] | None:
        key = {"pk": {"S": pk}, "sk": {"S": sk}}
        got = _guard(lambda: self._db.get_item(TableName=self._table, Key=key, ConsistentRead=True))
        return _unmarshal(got["Item"]) if "Item" in got else None

    def query_index(
        self, pk_value: str, *, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Items of one gsi1 partition (a tenant's list), newest first, with a cursor."""
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": "gsi1",
            "KeyConditionExpression": "gsi1pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk_value}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if cursor:
            query["ExclusiveStartKey"] = _decode_cursor(cursor, "gsi1pk", pk_value)
        got = _guard(lambda: self._db.query(**query))
        last = got.get("LastEvaluatedKey")
        items = self._items_of(got.get("Items", []))
        return [_unmarshal(i) for i in items], (_encode_cursor(last) if last else None)

    def marshal(self, doc: dict[str, Any]) -> dict[str, Any]:
        return _marshal(doc)

    def fail_unfinished(
        self, job: Job, *, error: JobError, now: datetime, announce: Announce | None = None
    ) -> Job:
        """End an unfinished job as failed, only if it is still exactly as `job` was read."""
        result = JobResult(
            status=JobStatus.FAILED,
            exit_code=job.exit_code,
            stdout_tail=job.stdout,
            stderr_tail=job.stderr,
            error=error,
        )
        return self.end_unfinished(job, result, now=now, announce=announce)

    def end_unfinished(
        self, job: Job, result: JobResult, *, now: datetime, announce: Announce | None = None
    ) -> Job:
        """End a job nobody is running any more (lost message, dead worker, dead letter, cancel).

        Conditional on the exact state read: the same status and attempt, and for a running job the
        same lease, for a queued one the same enqueue record. A worker that claimed the job, or renewed
        its lease, in between makes this an InvalidTransition, never a job ended under its feet. With
        `announce`, the status event is written in the same transaction; a write that misses only
        because the event counter or the subscribers moved is numbered again and retried.
        """
        for _ in range(_CANCEL_ROUNDS):
            if job.terminal:
                raise InvalidTransition(f"Job '{job.job_id}' has already ended ({job.status.value}).")
            condition, values = _as_read(job)
            try:
                return self._terminal(
                    job, result, now, condition=condition, cond_values=values, announce=announce
                )
            except InvalidTransition as exc:
                current = exc.current
                if announce is None or current is None or _as_read(current) != (condition, values):
                    raise
                job = current  # the same state, another event or subscriber meanwhile
        raise StoreError(f"Job '{job.job_id}': its events kept moving while it was being ended.")

    def _terminal_fields(self, job: Job, result: JobResult, now: datetime) -> dict[str, Any]:
        """The job's fields as a terminal write leaves them."""
        assert result.status in TERMINAL_STATUSES
        return {
            "status": result.status,
            "exit_code": result.exit_code,
            "stdout": result.stdout_tail,
            "stderr": result.stderr_tail,
            "error": result.error,
            "outputs": list(result.outputs),
            "output_count": result.output_count if result.output_count is not None else len(result.outputs),
            "outputs_manifest": result.outputs_manifest,
            "archive": result.archive,
            "finished_at": now,
            "progress": 1.0 if result.status == JobStatus.SUCCEEDED else job.progress,
        }

    def _terminal_values(self, job: Job, result: JobResult, now: datetime) -> dict[str, Any]:
        fields = self._terminal_fields(job, result, now)
        return {
            "status": result.status.value,
            "exit_code": fields["exit_code"],
            "stdout": fields["stdout"],
            "stderr": fields["stderr"],
            "error": result.error.model_dump() if result.error else None,
            "outputs": [o.model_dump() for o in result.outputs],
            "output_count": fields["output_count"],
            "manifest": fields["outputs_manifest"],
            "archive": result.archive.model_dump() if result.archive else None,
            "finished_at": now.isoformat(),
            "progress": fields["progress"],
            "gsi2": _status_index_key(job.tenant, result.status),
            "expires_at": _epoch(now + self._ttl),
        }

    def _terminal(
        self,
        job: Job,
        result: JobResult,
        now: datetime,
        *,
        condition: str,
        cond_values: dict[str, Any],
        announce: Announce | None = None,
    ) -> Job:
        if announce is None:
            return self._update(
                job.job_id,
                _TERMINAL_UPDATE,
                condition,
                _values(**self._terminal_values(job, result, now), **cond_values),
                _TERMINAL_NAMES,
                token=True,
            )
        events = announce(job.model_copy(update=self._terminal_fields(job, result, now)))
        return self._terminal_with_events(job, result, now, condition, cond_values, events)

    def cancel(
        self,
        job: Job,
        *,
        now: datetime,
        reason: str = "Cancelled before it started.",
        announce: Announce | None = None,
    ) -> Job:
        """End a blocked or queued job at once, or flag a running one for its worker to kill.

        The job may move between the read and the write (unblocked, claimed, re-queued for a retry):
        each conditional write that misses reads the job again and tries what its new state takes,
        until it is cancelled, flagged, or has ended (then 409).
        """
        for _ in range(_CANCEL_ROUNDS):
            if job.terminal:
                raise InvalidTransition(f"Job '{job.job_id}' has already ended ({job.status.value}).")
            try:
                if job.status == JobStatus.RUNNING:
                    return self._update(
                        job.job_id,
                        "SET cancel_requested = :t",
                        "#status = :running",
                        _values(t=True, running=JobStatus.RUNNING.value),
                        {"#status": "status"},
                    )
                result = JobResult(
                    status=JobStatus.CANCELLED,
                    exit_code=job.exit_code,
                    stdout_tail=job.stdout,  # a job re-queued for a retry keeps its last attempt's tails
                    stderr_tail=job.stderr,
                    error=JobError(type="cancelled", message=reason),
                )
                return self._terminal(
                    job,
                    result,
                    now,
                    condition="#status = :from",
                    cond_values={"from": job.status.value},
                    announce=announce,
                )
            except InvalidTransition:
                job = self.get(job.job_id)
        raise StoreError(f"Job '{job.job_id}' kept changing while it was being cancelled; try again.")

    def active(
        self, status: JobStatus, *, created_before: str | None = None, page_size: int = 100
    ) -> list[Job]:
        """Every unfinished job in one status (created before the given ULID, if any), all pages read."""
        before = created_before if status != JobStatus.QUEUED else None
        jobs = self._active_range(status, upper=before, page_size=page_size)
        if status == JobStatus.QUEUED and created_before is not None:
            jobs = [j for j in jobs if j.job_id < created_before]
        return jobs

    def queued_unconfirmed(self, *, queued_before: datetime, page_size: int = 100) -> list[Job]:
        """Queued jobs whose message is not confirmed sent, queued before the given time."""
        upper = _queued_sk("", queued_before, sent=False)
        jobs = self._active_range(JobStatus.QUEUED, upper=upper, page_size=page_size)
        # Records written before the Q#/S# keys sort here by their ULID, whatever their age.
        return [j for j in jobs if (j.queued_at or j.created_at) < queued_before and j.enqueued_at is None]

    def queued_sent(self, *, sent_before: datetime, page_size: int = 100) -> list[Job]:
        """Queued jobs whose message was sent before the given time (and no worker took it since)."""
        return self._active_range(
            JobStatus.QUEUED,
            lower="S#",
            upper=_queued_sk("", sent_before, sent=True),
            page_size=page_size,
        )

    def _active_range(
        self, status: JobStatus, *, lower: str | None = None, upper: str | None = None, page_size: int
    ) -> list[Job]:
        values: dict[str, Any] = {":pk": {"S": _active_key(status)}}
        key = "gsi3pk = :pk"
        if lower is not None and upper is not None:
            key += " AND gsi3sk BETWEEN :lo AND :hi"
            values.update({":lo": {"S": lower}, ":hi": {"S": upper}})
        elif upper is not None:
            key += " AND gsi3sk < :hi"
            values[":hi"] = {"S": upper}
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": "gsi3",
            "KeyConditionExpression": key,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": True,
            "Limit": page_size,
        }
        jobs: list[Job] = []
        while True:
            got = _guard(lambda: self._db.query(**query))
            # Read whole and strongly consistent: the sweeper's writes hold only on the exact state read.
            items = self._items_of(got.get("Items", []), consistent=True)
            jobs.extend(Job.model_validate(_unmarshal(i)) for i in items)
            last = got.get("LastEvaluatedKey")
            if not last:
                return jobs
            query["ExclusiveStartKey"] = last

    def note_resend(self, job: Job) -> Job:
        """Count one more send of a queued job's unconfirmed message, if the job is as it was read."""
        condition, values = _as_read(job)
        return self._update(job.job_id, "ADD requeues :one", condition, _values(one=1, **values), _STATUS)

    # -- assets -------------------------------------------------------------------------------

    def put_asset(self, asset: Asset) -> Asset:
        doc = asset.model_dump(mode="json")
        doc.update(
            pk=f"ASSET#{asset.asset_id}",
            sk=ASSET_SK,
            gsi1pk=f"TENANT#{asset.tenant}#ASSETS",
            gsi1sk=asset.asset_id,
            expires_at=_epoch(asset.created_at + self._ttl),
        )
        _guard(lambda: self._db.put_item(TableName=self._table, Item=_marshal(doc)))
        return asset

    def get_asset(self, asset_id: str, *, tenant: str) -> Asset:
        key = {"pk": {"S": f"ASSET#{asset_id}"}, "sk": {"S": ASSET_SK}}
        got = _guard(lambda: self._db.get_item(TableName=self._table, Key=key, ConsistentRead=True))
        if "Item" not in got:
            raise NotFound(f"No asset '{asset_id}'.")
        asset = Asset.model_validate(_unmarshal(got["Item"]))
        if asset.tenant != tenant:
            raise NotFound(f"No asset '{asset_id}'.")
        return asset

    def settle_asset(self, asset: Asset) -> Asset:
        """PENDING -> AVAILABLE or FAILED, once; a second settlement answers the first one's result."""
        doc = _marshal(
            {
                "status": asset.status.value,
                "size": asset.size,
                "media_type": asset.media_type,
                "etag": asset.etag,
                "reason": asset.reason,
                "available_at": asset.available_at.isoformat() if asset.available_at else None,
            }
        )
        names = {f"#{k}": k for k in doc}
        values = {f":{k}": v for k, v in doc.items()}
        values[":pending"] = {"S": "PENDING"}
        update = "SET " + ", ".join(f"#{k} = :{k}" for k in doc) + " REMOVE upload_id"
        try:
            got = self._db.update_item(
                TableName=self._table,
                Key={"pk": {"S": f"ASSET#{asset.asset_id}"}, "sk": {"S": ASSET_SK}},
                UpdateExpression=update,
                ConditionExpression="#status = :pending",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _is_conditional_failure(exc):
                return self.get_asset(asset.asset_id, tenant=asset.tenant)
            raise StoreError(f"DynamoDB update failed: {exc.response.get('Error', {}).get('Code')}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"DynamoDB unreachable: {exc}") from exc
        return Asset.model_validate(_unmarshal(got["Attributes"]))

    def list_assets(
        self,
        tenant: str,
        *,
        status: str | None,
        media_type: str | None,
        limit: int,
        cursor: str | None,
        labels: Mapping[str, str] | None = None,
    ) -> AssetPage:
        pk_value = f"TENANT#{tenant}#ASSETS"
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": "gsi1",
            "KeyConditionExpression": "gsi1pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk_value}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if cursor:
            query["ExclusiveStartKey"] = _decode_cursor(cursor, "gsi1pk", pk_value)
        items: list[Asset] = []
        # The index holds keys only: the filters apply to the assets read whole, and a page that the
        # filters empty is followed by the next until the page is full or the list ends. The cursor is
        # the index key of the last asset answered, so a page cut short resumes right after it.
        while True:
            got = _guard(lambda: self._db.query(**query))
            keys = got.get("Items", [])
            for raw in self._items_of(keys):
                asset = Asset.model_validate(_unmarshal(raw))
                if (
                    (status and asset.status.value != status)
                    or (media_type and asset.media_type != media_type)
                    or any(asset.labels.get(k) != v for k, v in (labels or {}).items())
                ):
                    continue
                items.append(asset)
                if len(items) == limit:
                    last_key = {k: raw[k] for k in ("pk", "sk", "gsi1pk", "gsi1sk")}
                    more = (
                        "LastEvaluatedKey" in got
                        or raw["sk"] != keys[-1]["sk"]
                        or raw["pk"] != keys[-1]["pk"]
                    )
                    return AssetPage(items=items, next_cursor=_encode_cursor(last_key) if more else None)
            last = got.get("LastEvaluatedKey")
            if not last:
                return AssetPage(items=items, next_cursor=None)
            query["ExclusiveStartKey"] = last

    def ping(self) -> None:
        _guard(lambda: self._db.describe_table(TableName=self._table))


_STATUS = {"#status": "status"}
_TERMINAL_UPDATE = (
    "SET #status = :status, exit_code = :exit_code, stdout = :stdout, stderr = :stderr,"
    " #error = :error, outputs = :outputs, output_count = :output_count,"
    " outputs_manifest = :manifest, #archive = :archive, finished_at = :finished_at,"
    " progress = :progress,"
    " gsi2pk = :gsi2, expires_at = :expires_at REMOVE lease_until, gsi3pk, gsi3sk"
)
_TERMINAL_NAMES = {"#status": "status", "#error": "error", "#archive": "archive"}
# A job records where its inputs' files are (so its worker reads no asset) only for this many inputs.
MAX_RECORDED_INPUTS = 32


def job_item(job: Job, ttl: timedelta) -> dict[str, Any]:
    """The job as its DynamoDB item: every field, the index keys and the expiry."""
    doc = job.model_dump(mode="json")
    doc.update(
        pk=f"JOB#{job.job_id}",
        sk=JOB_SK,
        gsi1pk=f"TENANT#{job.tenant}#JOBS",
        gsi1sk=job.job_id,
        gsi2pk=_status_index_key(job.tenant, job.status),
        gsi2sk=job.job_id,
        gsi3pk=_active_key(job.status),
        gsi3sk=job.job_id,
        expires_at=_epoch(job.created_at + ttl),
    )
    if job.status == JobStatus.QUEUED:
        doc["gsi3sk"] = _queued_sk(job.job_id, job.queued_at or job.created_at, sent=False)
    if job.terminal:
        doc.pop("gsi3pk")
        doc.pop("gsi3sk")
    return _marshal(doc)


def _new_job_item(job: Job, ttl: timedelta) -> dict[str, Any]:
    """A new job's item; 422 when the request would take too much of the record to leave room to run."""
    item = job_item(job, ttl)
    size = item_size(item)
    if size > MAX_NEW_JOB_BYTES:
        where = f"step '{job.step}'" if job.step else "the job"
        raise ValidationFailed(
            f"The request of {where} takes {size} bytes on its record; at most {MAX_NEW_JOB_BYTES}.",
            [
                {
                    "loc": ["body", "args"],
                    "msg": f"at most {MAX_NEW_JOB_BYTES} bytes recorded",
                    "type": "too_long",
                }
            ],
        )
    return item


def _new_job_record(job: Job, ttl: timedelta) -> tuple[Job, dict[str, Any]]:
    """A new job and its item. Where its inputs' files are is recorded only for a few inputs, and only
    while the record stays within MAX_NEW_JOB_BYTES; its worker reads the assets otherwise."""
    if job.input_objects and len(job.input_objects) <= MAX_RECORDED_INPUTS:
        item = job_item(job, ttl)
        if item_size(item) <= MAX_NEW_JOB_BYTES:
            return job, item
    job = job.model_copy(update={"input_objects": {}})
    return job, _new_job_item(job, ttl)


def _with_queued_at(job: Job) -> Job:
    if job.status == JobStatus.QUEUED and job.queued_at is None:
        return job.model_copy(update={"queued_at": job.created_at})
    return job


def _as_read(job: Job) -> tuple[str, dict[str, Any]]:
    """A condition that holds only while the job is exactly as read: what the sweeper and a claimant
    that ends a job nobody runs must check, so they never end one that someone else took meanwhile."""
    condition = "#status = :seen_status AND attempts = :seen_attempts"
    values: dict[str, Any] = {"seen_status": job.status.value, "seen_attempts": job.attempts}
    if job.status == JobStatus.RUNNING:
        if job.lease_until is None:
            condition += " AND attribute_not_exists(lease_until)"
        else:
            condition += " AND lease_until = :seen_lease"
            values["seen_lease"] = job.lease_until
    if job.status == JobStatus.QUEUED:
        condition += (
            " AND attribute_not_exists(enqueued_at)"
            if job.enqueued_at is None
            else " AND attribute_exists(enqueued_at)"
        )
        if job.requeues:
            condition += " AND requeues = :seen_requeues"
            values["seen_requeues"] = job.requeues
        else:
            condition += " AND (attribute_not_exists(requeues) OR requeues = :seen_requeues)"
            values["seen_requeues"] = 0
    return condition, values


def _encode_cursor(key: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, sort_keys=True).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, pk_name: str, pk_value: str) -> dict[str, Any]:
    invalid = ValidationFailed(
        "The cursor is not one this list gave out.", [{"loc": ["query", "cursor"], "msg": "invalid cursor"}]
    )
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise invalid from exc
    # A cursor is bound to the list it came from: no paging into another tenant's index.
    if not isinstance(key, dict) or key.get(pk_name) != {"S": pk_value}:
        raise invalid
    return key


def _with_write_token(update: str) -> str:
    """The update expression, also setting ``write_token`` (see JobStore._update)."""
    if update.startswith("SET "):
        return "SET write_token = :write_token, " + update[len("SET ") :]
    return "SET write_token = :write_token " + update


def epoch_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)
