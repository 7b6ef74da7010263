"""Maps: one command over many items, each item a chunk job; at most max_parallel run, pause and resume,
then one merge job over every chunk's outputs.

A chunk's job id is derived from the map's (the map's ULID plus 1 + the chunk's index), so the map
record holds no list of its chunks (a map of 10,000 items would not fit one item): chunk n is read by
its id, and a retried chunk by following `retried_by`. Chunks are written `blocked` and released (queued,
their message sent) by advancing the map's `released` cursor with a conditional write; every chunk end
releases the next one, so no SQS delay is involved and pausing is a flag the cursor's write checks.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from ulid import ULID

from jobgate.adapters.blobs import BlobStore
from jobgate.adapters.dynamo import JobStore
from jobgate.adapters.queue import JobQueue
from jobgate.errors import Conflict, InvalidTransition, JobgateError, NotFound, QueueError, ValidationFailed
from jobgate.models import InputObject, Job, JobStatus, utcnow
from jobgate.observability import logger
from jobgate.services.dispatch import dispatch
from jobgate.services.events import Publisher, announce, ended_announced
from jobgate.services.limits import JobAdmission
from jobgate.services.registry import Invocation, Registry

if TYPE_CHECKING:
    from jobgate.services.jobs import Placement  # services.jobs imports this module's neighbours

MAX_ITEMS = 10_000
MAX_PARALLEL = 1000
DEFAULT_PARALLEL = 10
CHUNKS_DIR = "chunks"  # where a merge job finds the chunks' outputs, in chunk order
CONCAT_OUTPUT = {"csv": "merged.csv", "jsonl": "merged.jsonl", "text": "merged.txt"}
MAP_SK = "MAP"
# The sweeper's sparse index of maps not finished yet (their chunks, merge and releases to look after).
ACTIVE_MAPS = "map"
# How long the API spends cancelling a map's chunks itself; the sweeper cancels the rest.
CANCEL_BUDGET_S = 10.0
# A request releases at most this many chunks itself (three AWS calls each: its unblock, its message, the
# send's record), so that it answers in time; the sweeper's next pass releases what max_parallel leaves.
API_RELEASES = 100
# A WebSocket subscription to a map follows at most this many chunks (each is a subscription of its own).
MAX_MAP_CHUNKS_FOLLOWED = 100

MapStatus = Literal["queued", "running", "paused", "succeeded", "failed", "cancelled"]


class RangeItems(BaseModel):
    model_config = ConfigDict(extra="forbid")

    range: tuple[int, int] = Field(description="[start, stop): the integers start, start+1, ... stop-1")


class CommandMerge(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str = Field(min_length=1, max_length=64)
    command: str = Field(min_length=1, max_length=64)
    args: dict[str, Any] = Field(default_factory=dict)


class ConcatMerge(BaseModel):
    model_config = ConfigDict(extra="forbid")

    concat: Literal["csv", "jsonl", "text"]


class MapRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str = Field(min_length=1, max_length=64)
    command: str = Field(min_length=1, max_length=64)
    args: dict[str, Any] = Field(default_factory=dict)
    over: str = Field(min_length=1, max_length=64, description="The argument each item is given to.")
    items: list[Any] | RangeItems
    max_parallel: int = Field(default=DEFAULT_PARALLEL, ge=1, le=MAX_PARALLEL)
    merge: CommandMerge | ConcatMerge | None = None
    timeout_s: int | None = Field(default=None, ge=1)
    run_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")

    @model_validator(mode="after")
    def _bounded(self) -> MapRequest:
        count = len(self.values())
        if not 1 <= count <= MAX_ITEMS:
            raise ValueError(f"a map has 1 to {MAX_ITEMS} items, not {count}")
        return self

    def values(self) -> list[Any] | range:
        if isinstance(self.items, RangeItems):
            start, stop = self.items.range
            return range(start, stop)
        return self.items

    def fingerprint(self) -> str:
        body = self.model_dump(mode="json", exclude={"run_id"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class MergeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    force: bool = False
    concat: Literal["csv", "jsonl", "text"] | None = None


class MapRecord(BaseModel):
    map_id: str
    tenant: str
    run_id: str | None = None
    stage: str
    command: str
    over: str
    count: int
    max_parallel: int
    released: int = 0  # chunks 0..released-1 have been released (queued)
    ended: int = 0  # chunk ends counted (a trigger to look for the map's end, not a truth)
    paused: bool = False
    cancelled: bool = False
    merge: dict[str, Any] | None = None  # {stage, command, args} of the merge job
    merge_job_id: str | None = None
    closed: bool = False  # every chunk and the merge have ended: the sweeper leaves it
    request_hash: str
    created_at: datetime


class MapCounts(BaseModel):
    waiting: int = 0
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0
    cancelled: int = 0


def chunk_job_id(map_id: str, chunk: int) -> str:
    """Chunk n's first job: the map's ULID plus 1 + n (same millisecond, so it sorts with its map)."""
    return str(ULID.from_int(int(ULID.from_str(map_id)) + 1 + chunk))


@dataclass(frozen=True)
class ChunkState:
    """What a map needs of a chunk to count, release and settle: its latest job's id and status."""

    job_id: str
    status: JobStatus
    progress: float = 0.0

    @property
    def terminal(self) -> bool:
        return self.status.terminal


def count_chunks(chunks: Iterable[ChunkState | Job]) -> MapCounts:
    counts = MapCounts()
    for job in chunks:
        key = "waiting" if job.status == JobStatus.BLOCKED else job.status.value
        setattr(counts, key, getattr(counts, key) + 1)
    return counts


def map_status(record: MapRecord, counts: MapCounts, merge: JobStatus | None = None) -> MapStatus:
    """The map's status from its chunks' counts and, once they all succeeded, its merge's (`merge`:
    None while the merge job is not written yet): a map that asks for a merge has not ended before its
    merged file is there."""
    ended = counts.succeeded + counts.failed + counts.timed_out + counts.cancelled
    if record.cancelled:
        return "cancelled"
    if ended == record.count:
        if counts.succeeded != record.count:
            return "failed"
        if record.merge is None:
            return "succeeded"
        if merge is None or not merge.terminal:
            return "running"
        return "succeeded" if merge == JobStatus.SUCCEEDED else "failed"
    if record.paused:
        return "paused"
    return "running" if counts.running or ended else "queued"


class MapStore:
    """A map's record and its chunks, over the job table."""

    def __init__(self, store: JobStore) -> None:
        self._store = store

    def get(self, map_id: str, *, tenant: str | None = None) -> MapRecord:
        record = self._store.get_record(f"MAP#{map_id}", MAP_SK)
        if record is None or (tenant is not None and record.get("tenant") != tenant):
            raise NotFound(f"No map '{map_id}'.")
        return MapRecord.model_validate(record)

    def find(self, map_id: str) -> MapRecord | None:
        record = self._store.get_record(f"MAP#{map_id}", MAP_SK)
        return MapRecord.model_validate(record) if record is not None else None

    def update(
        self, record: MapRecord, update: str, condition: str = "attribute_exists(pk)", **values: Any
    ) -> MapRecord:
        """A conditional update of the map record; `#name` in the expressions stands for the attribute
        `name` (the record's names are not all free of DynamoDB's reserved words)."""
        used = set(re.findall(r"#(\w+)", f"{update} {condition}"))
        names = {f"#{name}": name for name in used}
        got = self._store.update_record(f"MAP#{record.map_id}", MAP_SK, update, condition, values, names)
        return MapRecord.model_validate(got)

    def states(self, record: MapRecord, start: int = 0, stop: int | None = None) -> dict[int, ChunkState]:
        """Chunks start..stop-1 as they stand now, by their latest job's status (a few fields read)."""
        stop = record.count if stop is None else min(stop, record.count)
        ids = {chunk_job_id(record.map_id, n): n for n in range(start, stop)}
        fields = ("status", "progress", "retried_by")
        docs = {ids[job_id]: doc for job_id, doc in self._store.get_fields(list(ids), fields).items()}
        while True:
            retried = {str(doc["retried_by"]): n for n, doc in docs.items() if doc.get("retried_by")}
            if not retried:
                break
            for job_id, doc in self._store.get_fields(list(retried), fields).items():
                docs[retried[job_id]] = doc
        return {
            n: ChunkState(
                job_id=str(doc["job_id"]),
                status=JobStatus(doc["status"]),
                progress=float(doc.get("progress") or 0),
            )
            for n, doc in docs.items()
        }

    def jobs(self, states: Mapping[int, ChunkState]) -> dict[int, Job]:
        """The whole jobs of these chunks."""
        found = self._store.get_many([state.job_id for state in states.values()])
        return {n: found[state.job_id] for n, state in states.items() if state.job_id in found}

    def chunks(self, record: MapRecord, start: int = 0, stop: int | None = None) -> dict[int, Job]:
        """Chunks start..stop-1 as they stand now: each one's latest job (a retry replaces its original)."""
        stop = record.count if stop is None else min(stop, record.count)
        ids = {chunk_job_id(record.map_id, n): n for n in range(start, stop)}
        found = self._store.get_many(list(ids))
        chunks = {ids[job_id]: job for job_id, job in found.items()}
        while True:
            retried = {job.retried_by: n for n, job in chunks.items() if job.retried_by}
            if not retried:
                return chunks
            for job_id, job in self._store.get_many(list(retried)).items():
                chunks[retried[job_id]] = job


class MapAdvancer:
    """Moves a map on when one of its jobs ends: releases the next chunk, merges, closes the map.

    Every write is conditional on the map record or the job as read, so the workers, the API and the
    sweeper may all call it for the same map at once; what one misses (it died in between), the
    sweeper's pass over open maps (`sweep`) does.
    """

    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        publisher: Publisher | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._maps = MapStore(store)
        self._queue = queue
        self._publisher = publisher
        self._clock = clock

    def advance(self, job: Job) -> None:
        """After a chunk's (or the merge's) end."""
        if not job.terminal:
            return
        if job.merge_of is not None:
            record = self._maps.find(job.merge_of)
            if record is not None:
                self.settle(record)
            return
        if job.map_id is None:
            return
        record = self._maps.find(job.map_id)
        if record is None:
            return
        if job.retry_of is None:
            record = self._maps.update(record, "ADD #ended :one", one=1)
            # A slot is freed by a released chunk's end only: not by a retry (it runs outside
            # max_parallel), nor by a chunk cancelled while it waited (it never held one).
            if job.queued_at is not None:
                record = self.release(record, 1)
        if record.ended >= record.count:
            self.settle(record)

    def release(self, record: MapRecord, how_many: int) -> MapRecord:
        """Queue the next `how_many` waiting chunks, unless the map is paused, cancelled or all released."""
        for _ in range(8):
            if how_many <= 0 or record.paused or record.cancelled or record.released >= record.count:
                return record
            upto = min(record.count, record.released + how_many)
            try:
                claimed = self._maps.update(
                    record,
                    "SET #released = :upto",
                    "#released = :seen AND #paused = :no AND #cancelled = :no",
                    upto=upto,
                    seen=record.released,
                    no=False,
                )
            except InvalidTransition:
                record = self._maps.get(record.map_id)  # another release or a pause came first
                continue
            self.start_chunks(claimed, range(record.released, upto))
            return claimed
        return record

    def start_chunks(self, record: MapRecord, chunks: Iterable[int]) -> None:
        ids = [chunk_job_id(record.map_id, n) for n in chunks]
        for job in self._store.get_many(ids).values():
            if job.status != JobStatus.BLOCKED:
                continue
            try:
                queued = self._store.unblock(job, now=self._clock())
            except InvalidTransition:
                continue  # cancelled meanwhile, or released by another caller
            try:
                dispatch(self._store, self._queue, queued, self._clock)
            except QueueError as exc:
                # The chunk is queued: the sweeper sends its message within minutes.
                logger.warning("could not queue a map chunk", job_id=job.job_id, error=exc.detail)
            announce(self._publisher, queued)

    def send(self, job: Job) -> None:
        """Send a queued job's message and record the send (the sweeper re-sends unrecorded ones)."""
        dispatch(self._store, self._queue, job, self._clock)

    def top_up(
        self, record: MapRecord, chunks: Mapping[int, ChunkState], *, at_most: int | None = None
    ) -> MapRecord:
        """Release as many chunks as max_parallel leaves room for (after a resume, or a release lost)."""
        in_flight = sum(1 for job in chunks.values() if job.status in (JobStatus.QUEUED, JobStatus.RUNNING))
        room = record.max_parallel - in_flight
        return self.release(record, room if at_most is None else min(room, at_most))

    def settle(self, record: MapRecord, chunks: Mapping[int, ChunkState] | None = None) -> MapRecord:
        """When every chunk has ended: merge once if all succeeded and a merge is asked; close the map
        once the merge (if any) has ended."""
        if record.closed:
            return record
        chunks = self._maps.states(record) if chunks is None else chunks
        if not all(job.terminal for job in chunks.values()):
            return record
        all_succeeded = all(job.status == JobStatus.SUCCEEDED for job in chunks.values())
        if record.merge is not None and all_succeeded and not record.cancelled:
            if record.merge_job_id is None:
                return self.start_merge(record, record.merge)
            merge = self._store.find(record.merge_job_id)
            if merge is None:
                self._create_merge(record, record.merge_job_id, record.merge)
                return record
            if not merge.terminal:
                return record
        elif record.merge_job_id is not None:
            merge = self._store.find(record.merge_job_id)
            if merge is not None and not merge.terminal:
                return record
        try:
            return self._maps.update(
                record, "SET #closed = :yes REMOVE gsi3pk, gsi3sk", "#closed = :no", yes=True, no=False
            )
        except InvalidTransition:
            return self._maps.get(record.map_id)

    def start_merge(self, record: MapRecord, merge: dict[str, Any]) -> MapRecord:
        """Name the merge job on the map (once per merge: the write holds only on the id as read), then
        write it; a merge named but never written is written by the sweeper's next pass."""
        merge_job_id = str(ULID())
        if record.merge_job_id is None:
            condition, seen = "attribute_not_exists(#merge_job_id)", {}
        else:
            condition, seen = "#merge_job_id = :seen", {"seen": record.merge_job_id}
        try:
            record = self._maps.update(
                record,
                "SET #merge_job_id = :id, #merge = :merge, #closed = :no, gsi3pk = :active, gsi3sk = :map",
                condition,
                id=merge_job_id,
                merge=merge,
                no=False,
                active=f"ACTIVE#{ACTIVE_MAPS}",
                map=record.map_id,
                **seen,
            )
        except InvalidTransition as exc:
            raise Conflict(f"Map '{record.map_id}' started another merge meanwhile.") from exc
        self._create_merge(record, merge_job_id, merge)
        return record

    def _create_merge(self, record: MapRecord, merge_job_id: str, merge: dict[str, Any]) -> None:
        job = Job(
            job_id=merge_job_id,
            tenant=record.tenant,
            stage=merge["stage"],
            command=merge["command"],
            args=merge["args"],
            timeout_s=int(merge.get("timeout_s") or 600),
            request_hash=hashlib.sha256(json.dumps(merge, sort_keys=True).encode()).hexdigest(),
            created_at=self._clock(),
            merge_of=record.map_id,
        )
        created, _ = self._store.create(job)
        if self._publisher is not None:
            try:  # the map's WebSocket watchers follow its merge from its first event
                watchers = self._publisher.events.map_watchers(record.map_id, self._clock())
                if watchers:
                    self._publisher.follow(merge_job_id, watchers)
                    self._publisher.deliver(merge_job_id)
            except JobgateError as exc:
                logger.warning("could not subscribe a map's watchers to its merge", error=exc.detail)
        if created.status == JobStatus.QUEUED and created.enqueued_at is None:
            try:
                dispatch(self._store, self._queue, created, self._clock)
            except QueueError as exc:
                logger.warning("could not queue a map's merge", job_id=merge_job_id, error=exc.detail)

    def cancel_chunks(self, chunks: Mapping[int, Job], *, budget_s: float | None) -> int:
        """Cancel every chunk that has not ended (a running one is flagged for its worker); answers how
        many are left for later when the time budget ran out."""
        started = time.monotonic()
        open_chunks = [job for _, job in sorted(chunks.items()) if not job.terminal]
        for done, job in enumerate(open_chunks):
            if budget_s is not None and time.monotonic() - started > budget_s:
                return len(open_chunks) - done
            try:
                ended_announced(
                    self._publisher,
                    lambda note, job=job: self._store.cancel(  # type: ignore[misc]
                        job, now=self._clock(), reason="The map was cancelled.", announce=note
                    ),
                )
            except InvalidTransition:
                continue  # it ended meanwhile
        return 0

    def sweep(self, record: MapRecord) -> None:
        """The sweeper's pass over one open map: what a lost release, merge or cancel left undone."""
        chunks = self._maps.states(record)
        if record.cancelled:
            self.cancel_chunks(
                self._maps.jobs({n: c for n, c in chunks.items() if not c.terminal}), budget_s=None
            )
        else:
            lost = [n for n, job in chunks.items() if n < record.released and job.status == JobStatus.BLOCKED]
            if lost:
                logger.warning("map chunks released but not queued", map_id=record.map_id, chunks=lost[:20])
                self.start_chunks(record, lost)
            if not record.paused:
                record = self.top_up(record, self._maps.states(record) if lost else chunks)
        self.settle(record)

    def exists(self, map_id: str) -> bool:
        return self._maps.find(map_id) is not None

    def cancel_orphan(self, job: Job) -> None:
        """A blocked chunk whose map record was never written (the API died first): it can never run."""
        ended_announced(
            self._publisher,
            lambda note: self._store.cancel(
                job, now=self._clock(), reason="Its map was never accepted.", announce=note
            ),
        )


class MapService:
    def __init__(
        self,
        store: JobStore,
        registry: Registry,
        advancer: MapAdvancer,
        *,
        check_inputs: Callable[[str, Invocation], dict[str, InputObject]],
        timeout_for: Callable[[int | None, Invocation], Placement],
        admission: JobAdmission | None = None,
        blobs: BlobStore | None = None,
        ttl_s: int,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._maps = MapStore(store)
        self._registry = registry
        self._advancer = advancer
        self._check_inputs = check_inputs
        self._timeout_for = timeout_for
        self._admission = admission
        self._ttl_s = ttl_s
        self._clock = clock

    # -- submit ---------------------------------------------------------------------------------

    def submit(self, tenant: str, request: MapRequest) -> tuple[MapRecord, bool]:
        """Check every chunk, write them all `blocked`, then the map record; release max_parallel."""
        if request.run_id is not None:
            existing = self._store.get_record(f"MRUN#{tenant}#{request.run_id}", "MRUN")
            if existing is not None:
                return self._existing(tenant, request, existing), False
        invocations = self._check(tenant, request)
        merge = self._merge_spec(request.merge)
        now = self._clock()
        map_id = str(ULID())
        first = invocations[0][0]
        placement = self._timeout_for(request.timeout_s, first)  # every chunk runs the same command
        chunk_request = request.model_dump(mode="json", include={"stage", "command", "timeout_s"})
        chunks = [
            Job(
                job_id=chunk_job_id(map_id, n),
                tenant=tenant,
                stage=inv.contract.stage,
                command=inv.contract.command,
                args=inv.args,
                inputs=inv.inputs,
                # Where each input's file is, as the API checked it: the worker reads no asset.
                input_objects=objects,
                upstream=dict(inv.jobs),
                status=JobStatus.BLOCKED,
                timeout_s=placement.timeout_s,
                runner=placement.runner,
                request_hash=hashlib.sha256(
                    json.dumps({**chunk_request, "args": inv.args}, sort_keys=True).encode()
                ).hexdigest(),
                created_at=now,
                map_id=map_id,
                chunk=n,
            )
            for n, (inv, objects) in enumerate(invocations)
        ]
        self._store.put_new_jobs(chunks)
        record = MapRecord(
            map_id=map_id,
            tenant=tenant,
            run_id=request.run_id,
            stage=first.contract.stage,
            command=first.contract.command,
            over=request.over,
            count=len(chunks),
            max_parallel=request.max_parallel,
            merge=merge,
            request_hash=request.fingerprint(),
            created_at=now,
        )
        expires = int(now.timestamp()) + self._ttl_s
        items = [
            {
                **record.model_dump(mode="json"),
                "pk": f"MAP#{map_id}",
                "sk": MAP_SK,
                "gsi1pk": f"TENANT#{tenant}#MAPS",
                "gsi1sk": map_id,
                "gsi3pk": f"ACTIVE#{ACTIVE_MAPS}",
                "gsi3sk": map_id,
                "expires_at": expires,
            }
        ]
        if request.run_id is not None:
            items.append(
                {
                    "pk": f"MRUN#{tenant}#{request.run_id}",
                    "sk": "MRUN",
                    "map_id": map_id,
                    "request_hash": record.request_hash,
                    "expires_at": expires,
                }
            )
        try:
            self._store.create_many([], [self._store.marshal(i) for i in items])
        except Conflict:
            # A concurrent submission with the same run_id won: its map is the answer; these chunks
            # have no map and the sweeper ends them.
            existing = (
                self._store.get_record(f"MRUN#{tenant}#{request.run_id}", "MRUN") if request.run_id else None
            )
            if existing is None:
                raise
            return self._existing(tenant, request, existing), False
        try:
            record = self._advancer.release(record, min(record.max_parallel, API_RELEASES))
        except JobgateError as exc:
            logger.warning("could not release a new map's first chunks", map_id=map_id, error=exc.detail)
        logger.info("map accepted", map_id=map_id, chunks=record.count, max_parallel=record.max_parallel)
        return record, True

    def _existing(self, tenant: str, request: MapRequest, run: Mapping[str, Any]) -> MapRecord:
        if run["request_hash"] != request.fingerprint():
            raise Conflict(
                f"run_id '{request.run_id}' was used for a different map ({run['map_id']}).",
                extra={"map_id": run["map_id"]},
            )
        return self._maps.get(str(run["map_id"]), tenant=tenant)

    def _check(self, tenant: str, request: MapRequest) -> list[tuple[Invocation, dict[str, InputObject]]]:
        """Every chunk's request against the contract, before anything is written; 422 naming the item."""
        try:
            target = self._registry.get(request.stage, request.command)
        except NotFound as exc:
            known = self._registry.canonical_stage(request.stage) in self._registry.stages()
            loc = "command" if known else "stage"
            raise ValidationFailed(exc.detail, [{"loc": ["body", loc], "msg": exc.detail}]) from exc
        if target.param(request.over) is None:
            msg = f"({target.stage} {target.command}) has no argument '{request.over}'"
            raise ValidationFailed(
                f"Cannot map over '{request.over}': {msg}.", [{"loc": ["body", "over"], "msg": msg}]
            )
        invocations: list[tuple[Invocation, dict[str, InputObject]]] = []
        errors: list[dict[str, Any]] = []
        # Inputs are checked once per distinct set (a map over another argument names the same ones).
        checked_inputs: dict[tuple[tuple[str, str], ...], dict[str, InputObject]] = {}
        for index, item in enumerate(request.values()):
            args = {**request.args, request.over: item}
            try:
                invocation = self._registry.check(request.stage, request.command, args)
                key = tuple(sorted(invocation.inputs.items())) + tuple(sorted(invocation.jobs.items()))
                if key not in checked_inputs:
                    checked_inputs[key] = self._check_inputs(tenant, invocation)
                if self._admission is not None:
                    self._admission.check_args(args, invocation, loc=("items", index))
            except ValidationFailed as exc:
                errors.extend(
                    {**e, "loc": ["body", "items", index, *e["loc"][1:]], "msg": f"item {index}: {e['msg']}"}
                    for e in exc.errors
                )
                if len(errors) >= 20:
                    break
                continue
            except JobgateError as exc:
                raise type(exc)(f"Item {index}: {exc.detail}") from exc
            invocations.append((invocation, checked_inputs[key]))
        if errors:
            first = errors[0]["loc"][2]
            raise ValidationFailed(
                f"Item {first} (and {len(errors) - 1} more problem(s)) cannot run.", errors
            )
        if self._admission is not None:
            self._admission.check_active(tenant, adding=len(invocations))
        return invocations

    def _merge_spec(self, merge: CommandMerge | ConcatMerge | None) -> dict[str, Any] | None:
        if merge is None:
            return None
        if isinstance(merge, ConcatMerge):
            return concat_merge(merge.concat)
        try:
            invocation = self._registry.check(merge.stage, merge.command, merge.args)
        except ValidationFailed as exc:
            errors = [{**e, "loc": ["body", "merge", *e["loc"][1:]]} for e in exc.errors]
            raise ValidationFailed(f"The merge cannot run: {exc.detail}", errors) from exc
        if invocation.inputs or invocation.jobs:
            raise ValidationFailed(
                "A merge reads the chunks' outputs only (in chunks/), not uploaded files.",
                [{"loc": ["body", "merge", "args"], "msg": "no asset:// or job:// inputs in a merge"}],
            )
        return {
            "stage": invocation.contract.stage,
            "command": invocation.contract.command,
            "args": invocation.args,
        }

    # -- read -----------------------------------------------------------------------------------

    def get(self, tenant: str, map_id: str) -> MapRecord:
        return self._maps.get(map_id, tenant=tenant)

    def states(self, record: MapRecord) -> dict[int, ChunkState]:
        return self._maps.states(record)

    def merge_job(self, record: MapRecord) -> Job | None:
        return self._store.find(record.merge_job_id) if record.merge_job_id else None

    def chunk(self, tenant: str, map_id: str, n: int) -> Job:
        record = self.get(tenant, map_id)
        if not 0 <= n < record.count:
            raise NotFound(f"Map '{map_id}' has chunks 0..{record.count - 1}, no chunk {n}.")
        return self._maps.chunks(record, n, n + 1)[n]

    def output_head(self, job: Job, name: str, size: int) -> bytes:
        """The first `size` bytes of one of a chunk's outputs (a preview)."""
        from jobgate.services.jobs import output_key  # jobs imports pipelines, which imports this module

        if self._blobs is None:
            return b""
        info = self._blobs.info(output_key(job.tenant, job.job_id, job.attempts, name), head_bytes=size)
        return info.head if info is not None else b""

    def page(
        self, record: MapRecord, *, status: str | None, limit: int, cursor: int
    ) -> tuple[list[tuple[int, Job]], int | None]:
        """Chunks from `cursor` on, `limit` of them (with `status` only those), reading at most 1,000."""
        found: list[tuple[int, Job]] = []
        position = cursor
        while position < record.count and len(found) < limit and position - cursor < 1000:
            window = self._maps.chunks(record, position, position + 100)
            for n in sorted(window):
                if len(found) == limit:
                    return found, n
                job = window[n]
                shown = "waiting" if job.status == JobStatus.BLOCKED else job.status.value
                if status is None or status == shown:
                    found.append((n, job))
                position = n + 1
        return found, (position if position < record.count else None)

    # -- control --------------------------------------------------------------------------------

    def pause(self, tenant: str, map_id: str) -> MapRecord:
        record = self.get(tenant, map_id)
        merge = self.merge_job(record)
        counted = count_chunks(self._maps.states(record).values())
        status = map_status(record, counted, merge.status if merge is not None else None)
        if status in ("succeeded", "failed", "cancelled"):
            raise Conflict(f"Map '{map_id}' has ended ({status}); there is nothing to pause.")
        return self._maps.update(record, "SET #paused = :yes", "#cancelled = :no", yes=True, no=False)

    def resume(self, tenant: str, map_id: str) -> MapRecord:
        record = self.get(tenant, map_id)
        if record.cancelled:
            raise Conflict(f"Map '{map_id}' was cancelled; it cannot resume.")
        record = self._maps.update(record, "SET #paused = :no", "#cancelled = :no", no=False)
        return self._advancer.top_up(record, self._maps.states(record), at_most=API_RELEASES)

    def cancel(self, tenant: str, map_id: str) -> MapRecord:
        """Stop releasing, then cancel every chunk not ended (and a merge under way); what the time
        budget leaves is cancelled by the sweeper's next pass."""
        record = self.get(tenant, map_id)
        if record.closed:
            raise Conflict(f"Map '{map_id}' has ended; there is nothing to cancel.")
        record = self._maps.update(record, "SET #cancelled = :yes", yes=True)
        open_chunks = {n: c for n, c in self._maps.states(record).items() if not c.terminal}
        left = self._advancer.cancel_chunks(self._maps.jobs(open_chunks), budget_s=CANCEL_BUDGET_S)
        merge = self.merge_job(record)
        if merge is not None and not merge.terminal:
            self._advancer.cancel_chunks({-1: merge}, budget_s=None)
        if left:
            logger.info("map cancel continues in the sweeper", map_id=map_id, chunks_left=left)
        return self._advancer.settle(record)

    def retry(self, tenant: str, map_id: str, n: int) -> Job:
        """Run an ended chunk again as a new job (linked both ways); it starts at once, outside
        max_parallel, and an ended map looks for its merge again when it ends."""
        record = self.get(tenant, map_id)
        original = self.chunk(tenant, map_id, n)
        if record.cancelled:
            raise Conflict(f"Map '{map_id}' was cancelled.")
        if not original.terminal:
            raise InvalidTransition(
                f"Chunk {n} is {original.status.value}; only an ended chunk can be retried."
            )
        retry = original.model_copy(
            update={
                "job_id": str(ULID()),
                "status": JobStatus.QUEUED,
                "run_id": None,
                "created_at": self._clock(),
                "retry_of": original.job_id,
                **_fresh_job_fields(),
            }
        )
        retry = Job.model_validate(retry.model_dump())
        retry, _ = self._store.create(retry)
        self._store.link_retry(original, retry)
        if record.closed:
            self._maps.update(
                record,
                "SET #closed = :no, gsi3pk = :active, gsi3sk = :map",
                no=False,
                active=f"ACTIVE#{ACTIVE_MAPS}",
                map=map_id,
            )
        # When it ends, advance() looks for the map's end again (its merge, when all chunks succeeded).
        try:
            self._advancer.send(retry)
        except QueueError as exc:
            logger.warning("could not queue a chunk's retry", job_id=retry.job_id, error=exc.detail)
        return retry

    def merge(self, tenant: str, map_id: str, request: MergeRequest) -> Job:
        """Merge now (again): every chunk must have ended; failed ones only with force (then the merge
        reads the chunks that succeeded)."""
        record = self.get(tenant, map_id)
        chunks = self._maps.states(record)
        running = sorted(n for n, job in chunks.items() if not job.terminal)
        if running:
            raise Conflict(
                f"Map '{map_id}' has {len(running)} chunk(s) not ended yet; merge once they have.",
                extra={"chunks": running[:100]},
            )
        failed = sorted(n for n, job in chunks.items() if job.status != JobStatus.SUCCEEDED)
        if failed and not request.force:
            raise Conflict(
                f"Chunk(s) {', '.join(map(str, failed[:20]))} of map '{map_id}' did not succeed; "
                'retry them, or merge the rest with {"force": true}.',
                extra={"chunks": failed[:100]},
            )
        if len(failed) == record.count:
            raise Conflict(f"No chunk of map '{map_id}' succeeded; there is nothing to merge.")
        spec = concat_merge(request.concat) if request.concat else record.merge
        if spec is None:
            raise Conflict(f'Map \'{map_id}\' has no merge; ask for one with {{"concat": "csv"}}.')
        current = self.merge_job(record)
        if current is not None and not current.terminal:
            raise Conflict(f"Map '{map_id}' is merging already (job {current.job_id}).")
        record = self._advancer.start_merge(record, spec)
        merge = self.merge_job(record)
        assert merge is not None
        return merge


def concat_merge(fmt: str) -> dict[str, Any]:
    return {
        "stage": "merge",
        "command": "concat",
        "args": {"format": fmt, "input_dir": CHUNKS_DIR, "output": CONCAT_OUTPUT[fmt]},
    }


def _fresh_job_fields() -> dict[str, Any]:
    """What a new job starts without: no attempt, output, event or link of the job it repeats."""
    return {
        "attempts": 0,
        "progress": 0.0,
        "exit_code": None,
        "stdout": "",
        "stderr": "",
        "error": None,
        "outputs": [],
        "output_count": None,
        "outputs_manifest": None,
        "write_token": None,
        "cancel_requested": False,
        "lease_until": None,
        "event_seq": 0,
        "watchers": 0,
        "requeues": 0,
        "queued_at": None,
        "enqueued_at": None,
        "retried_by": None,
        "archive": None,
        "started_at": None,
        "finished_at": None,
    }


def chunk_output_name(chunk: int, output_name: str) -> str:
    """Where a merge job finds a chunk's output: names sort in chunk order, in one flat folder."""
    return f"{chunk:05d}-{output_name.replace('/', '-')}"
