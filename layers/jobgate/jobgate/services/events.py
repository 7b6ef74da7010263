"""Job events: numbered, stored, and fanned out to WebSocket subscribers; the output batcher."""

from __future__ import annotations

import codecs
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from jobgate import observability as obs
from jobgate.adapters.connections import MAX_PAYLOAD_BYTES, ConnectionGone, Connections, SendFailed
from jobgate.adapters.dynamo import Announce, EventCommit, JobStore
from jobgate.adapters.events import EventStore, Lease
from jobgate.errors import InvalidTransition, JobgateError, NotFound, StoreError
from jobgate.models import Job, JobEvent, JobStatus, Subscription, utcnow
from jobgate.observability import logger

T = TypeVar("T")

# Every message goes out as compact UTF-8 JSON (adapters/connections.py), measured in bytes on the wire.
# An event (log, progress, status) fits one API Gateway WebSocket frame (32 KB, read as 32,000 bytes);
# a log event's text is cut at LOG_TEXT_BYTES of JSON so that the rest of the event fits beside it.
# The snapshot may be larger, up to the 128 KB payload limit: API Gateway sends it in several frames.
MAX_EVENT_BYTES = 32_000
LOG_TEXT_BYTES = 30_000
MAX_SNAPSHOT_BYTES = MAX_PAYLOAD_BYTES
# A sender renews its hold on a subscriber after this long (the lease is 15 s; one send takes <= 3 s).
RENEW_AFTER_S = 5.0
PAGE = 500
MAX_ROUNDS = 20
# A documented line any command can print to report its own progress: `progress: 0.42` or `progress: 42%`.
PROGRESS_LINE = re.compile(r"^\s*progress:\s*(\d+(?:\.\d+)?)\s*(%?)\s*$", re.IGNORECASE)
# Zyra logs each file it writes as `INFO: <path>`.
WROTE_LINE = re.compile(r"^INFO:\s+(\S.*?)\s*$")

STAGED, STARTED, EXITED = 0.1, 0.2, 0.9
# The live stream is for people watching: past this much text a stream publishes one line saying where
# the whole log is, and no more (the whole log, bounded by JOBGATE_MAX_LOG_BYTES, is stored either way).
MAX_LIVE_LOG_CHARS = 8 * 1024 * 1024
# A line with no end in sight (progress bars, binary output) is published in pieces of this size.
MAX_PARTIAL_LINE_CHARS = LOG_TEXT_BYTES


def public_job(job: Job) -> dict[str, Any]:
    """A job as clients see it (the API's JobView without links)."""
    hidden = {
        "tenant",
        "argv",
        "inputs",
        "request_hash",
        "lease_until",
        "event_seq",
        "requeues",
        "queued_at",
        "enqueued_at",
        "outputs_manifest",
        "write_token",
        "watchers",
        "input_objects",
    }
    view = job.model_dump(mode="json", exclude=hidden)
    view["output_count"] = job.total_outputs  # as the API's JobView answers it: never null
    return view


class Publisher:
    """Stores a job's events and delivers them, in order, to each subscriber.

    A subscriber's cursor (`delivered_seq`) moves only past what API Gateway took: a send that fails
    leaves it, and the rest, to the next delivery (the next publish, or the next subscribe with
    `after_seq`). One sender at a time holds a subscriber (a lease, adapters/events.py), so concurrent
    publishers never send one event twice, or out of order, to it.
    """

    def __init__(
        self,
        events: EventStore,
        connections: Connections | None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self._events = events
        self._connections = connections
        self._clock = clock
        self._monotonic = monotonic

    @property
    def events(self) -> EventStore:
        return self._events

    def publish(self, events: list[JobEvent]) -> list[JobEvent]:
        numbered, watchers = self._events.append_counted(events, self._clock())
        if numbered and watchers > 0:
            self.deliver(numbered[0].job_id, fresh=numbered)
        return numbered

    def follow(self, job_id: str, connection_ids: list[str]) -> None:
        """Subscribe these connections to a job from its first event (a map's merge, as it is written)."""
        for connection_id in connection_ids:
            sub = Subscription(job_id=job_id, connection_id=connection_id, delivered_seq=0)
            self._events.put_subscription(sub, self._clock())

    def deliver(
        self, job_id: str, only: Subscription | None = None, fresh: list[JobEvent] | None = None
    ) -> None:
        """Send each subscriber (or `only` one) what it has not been sent; `fresh` are events just stored."""
        if self._connections is None:
            return
        subs = [only] if only is not None else self._events.subscriptions(job_id)
        for sub in subs:
            self._catch_up(sub, fresh or [])

    def send(self, connection_id: str, message: dict[str, Any]) -> bool:
        """Send one message; a connection that is gone is forgotten. Answer whether it was sent."""
        if self._connections is None:
            return False
        try:
            self._connections.send(connection_id, fit_message(message))
        except ConnectionGone:
            logger.info("subscriber gone", connection_id=connection_id)
            obs.emit(obs.WS_GONE)
            self._events.delete_connection(connection_id)
            return False
        except SendFailed as exc:
            logger.warning("could not reach subscriber", connection_id=connection_id, error=str(exc))
            return False
        return True

    def _catch_up(self, sub: Subscription, fresh: list[JobEvent]) -> None:
        sender = uuid.uuid4().hex
        for _ in range(3):
            lease = self._events.take_lease(sub.job_id, sub.connection_id, sender, now=self._clock())
            if lease is not None:
                self._send_held(lease, fresh)
                return
            if self._events.wake(sub.job_id, sub.connection_id, now=self._clock()):
                return  # its holder sends these too before it lets go
            # Neither held nor free: the holder let go in between (or the subscription is gone).

    def _send_held(self, lease: Lease, fresh: list[JobEvent]) -> None:
        sent = self._send_held_from(lease, fresh)
        if sent:  # one data point per delivery run, not per event: a job's output is many events
            obs.emit(obs.WS_DELIVERIES, sent)

    def _send_held_from(self, lease: Lease, fresh: list[JobEvent]) -> int:
        """Send under the lease until caught up; answer how many events were sent."""
        cursor = lease.delivered_seq
        sent = 0
        renew_at = self._monotonic() + RENEW_AFTER_S
        for _ in range(MAX_ROUNDS):
            if fresh and fresh[0].seq == cursor + 1:
                pending = fresh  # just stored by this publisher: no need to read them back
            else:
                pending = self._events.after(lease.job_id, cursor, limit=PAGE)
            fresh = []
            failed = False
            for event in pending:
                if self._monotonic() >= renew_at:
                    break
                if not self.send(lease.connection_id, event.wire()):
                    failed = True
                    break
                cursor = event.seq
                sent += 1
            if failed:
                # The rest waits for the next delivery; a publisher that woke us meanwhile is covered too.
                self._events.release_lease(lease, cursor, whatever_woke=True)
                return sent
            more = len(pending) == PAGE or bool(pending and cursor < pending[-1].seq)
            if not more and self._events.release_lease(lease, cursor):
                return sent
            # More to read (a full page, a publisher woke us, time to renew): record progress, go on.
            renewed = self._events.renew_lease(lease, cursor, now=self._clock())
            if renewed is None:
                return sent  # taken over (we were too slow), or the subscription was replaced
            lease = renewed
            renew_at = self._monotonic() + RENEW_AFTER_S
        self._events.release_lease(lease, cursor, whatever_woke=True)
        return sent


class SubscriptionService:
    """The WebSocket routes: connect, subscribe (snapshot, then events), unsubscribe, disconnect."""

    def __init__(
        self,
        jobs: Any,
        events: EventStore,
        publisher: Publisher,
        resolve_tenant: Callable[[str | None], str | None],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._jobs = jobs  # a JobStore
        self._events = events
        self._publisher = publisher
        self._resolve_tenant = resolve_tenant
        self._clock = clock

    def connect(self, connection_id: str, api_key: str | None) -> bool:
        tenant = self._resolve_tenant(api_key)
        if tenant is None:
            return False
        self._events.put_connection(connection_id, tenant, self._clock())
        return True

    def disconnect(self, connection_id: str) -> None:
        self._events.delete_connection(connection_id)

    def subscribe(self, connection_id: str, job_id: str, after_seq: int | None) -> None:
        tenant = self._events.connection_tenant(connection_id)
        if tenant is None:
            self._publisher.send(connection_id, _error("unknown_connection", "Connect again.", job_id))
            return
        logger.append_keys(tenant=tenant)  # the rest of this route's lines name it
        try:
            job = self._jobs.get(job_id, tenant=tenant)
        except NotFound:
            # Another tenant's job is as unknown as a missing one.
            self._publisher.send(connection_id, _error("not_found", f"No job '{job_id}'.", job_id))
            return
        current = job.event_seq
        if after_seq is not None:
            start = max(0, min(after_seq, current))
        else:
            # A finished job's last event is its status: send it after the snapshot.
            start = max(0, current - 1) if job.terminal else current
        # The snapshot goes out before the subscription exists: a worker publishing meanwhile cannot
        # send an event ahead of it. What it publishes in between is caught up by the deliver below.
        snapshot = {"type": "snapshot", "job_id": job_id, "seq": current, "job": public_job(job)}
        if not self._publisher.send(connection_id, snapshot):
            return
        sub = Subscription(job_id=job_id, connection_id=connection_id, delivered_seq=start)
        self._events.put_subscription(sub, self._clock())
        self._publisher.deliver(job_id, only=sub)

    def subscribe_pipeline(self, connection_id: str, pipeline_id: str) -> None:
        """Every job of a pipeline: a snapshot and the events of each, as for single jobs."""
        tenant = self._events.connection_tenant(connection_id)
        record = self._jobs.get_record(f"PIPE#{pipeline_id}", "PIPE")
        if tenant is None or record is None or record.get("tenant") != tenant:
            self._publisher.send(connection_id, _error("not_found", f"No pipeline '{pipeline_id}'.", None))
            return
        for step in record.get("steps", []):
            self.subscribe(connection_id, str(step["job_id"]), None)

    def subscribe_map(self, connection_id: str, map_id: str) -> None:
        """A map: its chunks not ended yet (the first MAX_MAP_CHUNKS_FOLLOWED, in chunk order) and its
        merge, each as a job; a merge written later is followed too (the map keeps its watchers)."""
        from jobgate.services.maps import MAX_MAP_CHUNKS_FOLLOWED, MapRecord, MapStore

        tenant = self._events.connection_tenant(connection_id)
        found = self._jobs.get_record(f"MAP#{map_id}", "MAP")
        if tenant is None or found is None or found.get("tenant") != tenant:
            self._publisher.send(connection_id, _error("not_found", f"No map '{map_id}'.", None))
            return
        record = MapRecord.model_validate(found)
        self._events.put_map_watcher(map_id, connection_id, self._clock())
        followed: list[str] = []
        maps = MapStore(self._jobs)
        for start in range(0, record.count, 100):
            chunks = maps.states(record, start, start + 100)
            followed.extend(chunks[n].job_id for n in sorted(chunks) if not chunks[n].terminal)
            if len(followed) >= MAX_MAP_CHUNKS_FOLLOWED:
                break
        followed = followed[:MAX_MAP_CHUNKS_FOLLOWED]
        if record.merge_job_id is not None:
            followed.append(record.merge_job_id)
        for job_id in followed:
            self.subscribe(connection_id, job_id, None)

    def unsubscribe(self, connection_id: str, job_id: str) -> None:
        self._events.delete_subscription(job_id, connection_id)
        self._publisher.send(connection_id, {"type": "unsubscribed", "job_id": job_id})

    def reject(self, connection_id: str, message: str) -> None:
        self._publisher.send(connection_id, _error("bad_request", message, None))


def _error(code: str, message: str, job_id: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if job_id:
        out["job_id"] = job_id
    return out


class JobStream:
    """A running job's output and progress, as events in small batches.

    Either it publishes them itself a few times a second (with a publisher), or it holds them until
    they are taken (`take`, with `on_pending` told each time there is something to take): a running
    attempt's AttemptLog takes them on a thread of its own. Publishing never stops the job: an error is
    logged and the batch is dropped (the whole logs are in S3 when the job ends).
    """

    def __init__(
        self,
        job_id: str,
        publisher: Publisher | None,
        *,
        workdir: Path | None = None,
        expected_outputs: int = 0,
        interval_s: float = 0.25,
        monotonic: Callable[[], float] = time.monotonic,
        on_pending: Callable[[], None] | None = None,
    ) -> None:
        self._job_id = job_id
        self._publisher = publisher
        self.on_pending = on_pending
        # The command's output arrives on the supervisor's callback thread, takes on the log's thread.
        self._lock = threading.RLock()
        # When (monotonic) the oldest event not yet taken arrived, and the oldest of the command's output.
        self._pending_since: float | None = None
        self._output_since: float | None = None
        self._workdir = workdir
        self._expected = expected_outputs
        self._interval = interval_s
        self._now = monotonic
        self._last_flush = 0.0
        self._decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in ("stdout", "stderr")}
        self._partial = {"stdout": "", "stderr": ""}
        self._live_chars = {"stdout": 0, "stderr": 0}
        self._pending: list[JobEvent] = []
        self._last_text_bytes = 0  # of the last pending event's text, as JSON
        self._progress = 0.0
        self._published_progress = 0.0
        self._written: set[str] = set()

    @property
    def progress(self) -> float:
        return self._progress

    @property
    def pending_since(self) -> float | None:
        """When (monotonic) the oldest event not yet taken arrived; None when there is none."""
        return self._pending_since

    @property
    def output_since(self) -> float | None:
        """When (monotonic) the oldest output of the command not yet taken arrived (a status or a
        milestone alone does not count); None when there is none."""
        return self._output_since

    def milestone(self, value: float) -> None:
        self._set_progress(value)
        self.flush()

    def note(self, value: float) -> None:
        """Progress to publish with the next batch."""
        self._set_progress(value)

    def queue_status(self, job: Job) -> None:
        """A status event to publish with the next batch, ahead of what follows it."""
        with self._lock:
            self._pending.append(status_event(job))
            self._mark_pending()

    def output(self, stream: str, chunk: bytes) -> None:
        with self._lock:
            text = self._partial[stream] + self._decoders[stream].decode(chunk)
            lines = text.split("\n")
            partial = lines.pop()
            if lines:
                self._add_lines(stream, lines)
            if len(partial) > MAX_PARTIAL_LINE_CHARS:
                self._add_text(stream, partial)  # no line end yet: what there is goes out as it is
                partial = ""
            self._partial[stream] = partial
        self.tick()

    def tick(self) -> None:
        if self.on_pending is not None or self._now() - self._last_flush >= self._interval:
            self.flush()  # a taker is told at once: it decides when to write

    def close(self) -> None:
        """The command has exited: publish what remains, the last partial lines included."""
        with self._lock:
            for stream in ("stdout", "stderr"):
                rest = self._partial[stream] + self._decoders[stream].decode(b"", final=True)
                self._partial[stream] = ""
                if rest:
                    self._add_lines(stream, [rest])
        self._set_progress(EXITED)
        self.flush()

    def take(self) -> list[JobEvent]:
        """The events not yet published, and the progress reached if it moved; they are now taken."""
        with self._lock:
            events = self._pending
            self._pending = []
            self._pending_since = None
            self._output_since = None
            if self._progress > self._published_progress:
                events.append(
                    JobEvent(type="progress", job_id=self._job_id, progress=round(self._progress, 4))
                )
                self._published_progress = self._progress
            return events

    def closing(self, status: JobEvent) -> list[JobEvent]:
        """What is left to publish when the job ends, its status last (progress 1.0 before a success)."""
        events = self.take()
        if status.status == JobStatus.SUCCEEDED and self._published_progress < 1.0:
            events.append(JobEvent(type="progress", job_id=self._job_id, progress=1.0))
            self._published_progress = 1.0
        return _one_progress_per_run([*events, status])

    def _mark_pending(self, *, output: bool = False) -> None:
        if self._pending_since is None:
            self._pending_since = self._now()
        if output and self._output_since is None:
            self._output_since = self._now()

    def status(self, job: Job) -> None:
        """The job's terminal (or running) status, always after every log event."""
        self.flush()
        events: list[JobEvent] = []
        if job.status == JobStatus.SUCCEEDED and self._published_progress < 1.0:
            events.append(JobEvent(type="progress", job_id=self._job_id, progress=1.0))
        events.append(status_event(job))
        self._publish(events)

    def flush(self) -> None:
        self._last_flush = self._now()
        if self.on_pending is not None:
            if self._pending_since is not None:
                self.on_pending()  # the taker decides when
            return
        self._publish(self.take())

    def _publish(self, events: list[JobEvent]) -> None:
        if not events or self._publisher is None:
            return
        try:
            self._publisher.publish(events)
        except JobgateError as exc:
            logger.warning("could not publish job events", job_id=self._job_id, error=exc.detail)

    def _add_lines(self, stream: str, lines: list[str]) -> None:
        for line in lines:
            self._read_progress(line)
        self._add_text(stream, "\n".join(lines) + "\n")

    def _add_text(self, stream: str, text: str) -> None:
        published = self._live_chars[stream]
        if published > MAX_LIVE_LOG_CHARS:
            return  # cut already, and said so
        if published + len(text) > MAX_LIVE_LOG_CHARS:
            text = (
                f"\n[jobgate] the live {stream} stops here, after {MAX_LIVE_LOG_CHARS // 2**20} MiB; "
                f"the whole log is at /v1/jobs/{self._job_id}/logs?stream={stream} once the job ends\n"
            )
            self._live_chars[stream] = MAX_LIVE_LOG_CHARS + 1
        else:
            self._live_chars[stream] = published + len(text)
        self._mark_pending(output=True)
        size = json_text_bytes(text)
        last = self._pending[-1] if self._pending else None
        if last is not None and last.type == "log" and last.stream == stream:
            if self._last_text_bytes + size <= LOG_TEXT_BYTES:
                last.text = (last.text or "") + text
                self._last_text_bytes += size
                return
        for part in split_text(text, LOG_TEXT_BYTES) if size > LOG_TEXT_BYTES else [text]:
            self._pending.append(JobEvent(type="log", job_id=self._job_id, stream=stream, text=part))
            self._last_text_bytes = json_text_bytes(part) if part is not text else size

    def _read_progress(self, line: str) -> None:
        reported = PROGRESS_LINE.match(line)
        if reported:
            value = float(reported.group(1)) / (100.0 if reported.group(2) else 1.0)
            self._set_progress(STARTED + (EXITED - STARTED) * min(1.0, max(0.0, value)))
            return
        wrote = WROTE_LINE.match(line)
        if wrote and self._expected and self._workdir is not None:
            name = wrote.group(1)
            if not Path(name).is_absolute() and (self._workdir / name).is_file():
                self._written.add(name)
                done = min(1.0, len(self._written) / self._expected)
                self._set_progress(STARTED + (EXITED - STARTED) * done)

    def _set_progress(self, value: float) -> None:
        with self._lock:
            before = self._progress
            self._progress = max(self._progress, min(1.0, value))  # progress never goes down
            if self._progress > before:
                self._mark_pending()


def _one_progress_per_run(events: list[JobEvent]) -> list[JobEvent]:
    """Events with each run of consecutive progress events cut to its last (progress never goes down,
    so nobody misses the ones left out)."""
    kept: list[JobEvent] = []
    for event in events:
        if kept and event.type == "progress" and kept[-1].type == "progress":
            kept[-1] = event
        else:
            kept.append(event)
    return kept


# A transaction holds at most 100 items and 4 MB: the events of one write stay well within both.
_COMMIT_PAGES = 90
_COMMIT_BYTES = 3 * 1024 * 1024
_COMMIT_ROUNDS = 5


class AttemptLog:
    """A running attempt's events, written off the job's path, each batch with the job's own write.

    The attempt numbers its events itself and writes each batch with the write that moves the job's
    event counter past it, in one transaction, which holds only while the attempt holds the job and the
    counter and the job's subscriber count are as it last saw them (JobStore.commit_events; the last
    batch rides on the terminal write, JobStore.finish). So the log holds exactly the events 1..event_seq
    (durable before the status that follows them is visible), an attempt that lost its job writes no
    event, and a writer always knows whether anybody is subscribed: a subscription that came in
    between makes the write miss, and the retry knows.

    A thread of its own writes what the job's stream holds once it is due (WATCHED_EVERY_S and
    UNWATCHED_EVERY_S say when): without subscribers the log serves only one still to come, and a short
    job writes its whole log with its end. After each write the new events are sent to the subscribers.
    A failure to write is logged and the batch dropped; the whole logs are in S3 when the job ends.
    """

    # With subscribers, what is pending is written at once, but at most once every WATCHED_EVERY_S (a
    # burst of lines goes out together); without, the command's output waits UNWATCHED_EVERY_S to be
    # written with what follows it, and a status or a milestone alone waits for the next write.
    WATCHED_EVERY_S = 0.1
    UNWATCHED_EVERY_S = 0.2

    def __init__(
        self,
        store: JobStore,
        events: EventStore,
        publisher: Publisher | None,
        stream: JobStream,
        job: Job,
        attempt: int,
        *,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._events = events
        self._publisher = publisher
        self._stream = stream
        self._job_id = job.job_id
        self._attempt = attempt
        self._seq = job.event_seq
        self._watchers = job.watchers
        self._clock = clock
        self._now = monotonic
        self._cond = threading.Condition()
        self._stopped = False
        self._lost = False
        self._last_write = float("-inf")
        self._thread = threading.Thread(target=self._run, name=f"events-{job.job_id}", daemon=True)
        stream.on_pending = self._wake

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop writing in the background (what is pending stays for `flush` or `finish`)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def note_watchers(self, watchers: int) -> None:
        """What the attempt's lease learned of the job's subscribers."""
        with self._cond:
            self._watchers = watchers
            self._cond.notify_all()

    def flush(self) -> None:
        """Write what the stream holds now (a failure is logged, the batch dropped)."""
        self._last_write = self._now()
        events = self._stream.take()
        if not events or self._lost:
            return
        try:
            self._commit(events, self._write_events)
        except InvalidTransition:
            self._lost = True  # another attempt holds the job now, or it ended: write nothing more
            logger.warning("job events not written: the attempt lost its job", job_id=self._job_id)
        except JobgateError as exc:
            logger.warning("could not write job events", job_id=self._job_id, error=exc.detail)

    def finish(self, final: list[JobEvent], write: Callable[[EventCommit], T]) -> T:
        """The job's terminal write, carrying what the stream still holds and `final` (its status)."""
        self.close()
        return self._commit(_one_progress_per_run([*self._stream.take(), *final]), write)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _due(self) -> float | None:
        if self._watchers > 0:
            since = self._stream.pending_since
            return None if since is None else max(since, self._last_write + self.WATCHED_EVERY_S)
        output = self._stream.output_since
        return None if output is None else output + self.UNWATCHED_EVERY_S

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    due = self._due()
                    if due is not None and self._now() >= due:
                        break
                    self._cond.wait(None if due is None else max(0.0, due - self._now()))
                if self._stopped:
                    return
            self.flush()

    def _write_events(self, commit: EventCommit) -> None:
        self._store.commit_events(
            self._job_id, attempt=self._attempt, commit=commit, progress=self._stream.progress
        )

    def _commit(self, events: list[JobEvent], write: Callable[[EventCommit], T]) -> T:
        """Number the events after the counter and write them with `write`; a write that misses because
        the counter moved or a subscriber came is numbered again and retried."""
        chunks = self._chunks(events)
        for chunk in chunks[:-1]:  # too many for one transaction: the first ones go ahead on their own
            self._commit(chunk, self._write_events)
        events = chunks[-1]
        for _ in range(_COMMIT_ROUNDS):
            numbered = [e.model_copy(update={"seq": self._seq + 1 + i}) for i, e in enumerate(events)]
            commit = EventCommit(
                seen_seq=self._seq,
                last_seq=numbered[-1].seq,
                watchers=self._watchers,
                items=self._events.pages(numbered, self._clock()),
            )
            try:
                result = write(commit)
            except InvalidTransition as exc:
                current = exc.current
                if (
                    current is None
                    or current.status != JobStatus.RUNNING
                    or current.attempts != self._attempt
                ):
                    raise
                self._seq, self._watchers = current.event_seq, current.watchers
                continue
            self._seq = commit.last_seq
            self._deliver(numbered)
            return result
        raise StoreError(f"Job '{self._job_id}': its events kept moving while they were written.")

    def _chunks(self, events: list[JobEvent]) -> list[list[JobEvent]]:
        chunks: list[list[JobEvent]] = [[]]
        size = 0
        for event in events:
            grows = wire_bytes(event.wire()) + 64
            if chunks[-1] and (size + grows > _COMMIT_BYTES or len(chunks[-1]) >= _COMMIT_PAGES):
                chunks.append([])
                size = 0
            chunks[-1].append(event)
            size += grows
        return chunks

    def _deliver(self, numbered: list[JobEvent]) -> None:
        if self._watchers <= 0 or self._publisher is None:
            return
        try:
            self._publisher.deliver(self._job_id, fresh=numbered)
        except JobgateError as exc:
            logger.warning("could not send job events", job_id=self._job_id, error=exc.detail)


def announce(publisher: Publisher | None, job: Job) -> None:
    """Publish a job's status change; a failure to publish never changes what happens to the job.

    For a change on the job's way (queued again, a step unblocked); an end is `ended_announced`."""
    JobStream(job.job_id, publisher).status(job)


class Announcement:
    """A job's end made by someone other than its worker (a cancel, the sweeper, a dead letter): the
    store writes its status event in the transaction that ends the job (`Announce`), so that nobody
    reads an ended job whose log lacks its end; then the event goes to the job's subscribers."""

    def __init__(self, publisher: Publisher, clock: Callable[[], datetime] = utcnow) -> None:
        self._publisher = publisher
        self._clock = clock
        self._numbered: list[JobEvent] = []
        self._watchers = 0

    def __call__(self, ended: Job) -> EventCommit:
        """The commit of `ended`'s status event, numbered after the counter as read (called per try)."""
        event = status_event(ended).model_copy(update={"seq": ended.event_seq + 1})
        self._numbered, self._watchers = [event], ended.watchers
        return EventCommit(
            seen_seq=ended.event_seq,
            last_seq=ended.event_seq + 1,
            watchers=ended.watchers,
            items=self._publisher.events.pages([event], self._clock()),
        )

    def deliver(self) -> None:
        if not self._numbered or self._watchers <= 0:
            return
        try:
            self._publisher.deliver(self._numbered[0].job_id, fresh=self._numbered)
        except JobgateError as exc:  # stored already: a subscriber catches up on its next delivery
            logger.warning("could not send job events", job_id=self._numbered[0].job_id, error=exc.detail)


def ended_announced(publisher: Publisher | None, end: Callable[[Announce | None], Job]) -> Job:
    """End a job with `end` (a store write given what to announce); its status event is written with
    the end when there is an event log, then sent to the subscribers."""
    if publisher is None:
        return end(None)
    note = Announcement(publisher)
    done = end(note)
    note.deliver()
    return done


def status_event(job: Job) -> JobEvent:
    return JobEvent(
        type="status", job_id=job.job_id, status=job.status, exit_code=job.exit_code, error=job.error
    )


# -- sizes on the wire ----------------------------------------------------------------------------


def wire_bytes(value: Any) -> int:
    """Bytes of a value as the wire carries it: compact JSON, UTF-8 (adapters/connections.py)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))


def json_text_bytes(text: str) -> int:
    """Bytes of a string's content inside a JSON message: UTF-8, with quotes and control characters
    escaped. It adds up: the size of a concatenation is the sum of the sizes."""
    return wire_bytes(text) - 2


def split_text(text: str, budget: int) -> list[str]:
    """`text` in pieces of at most `budget` bytes each as JSON, in order, cut between characters (never
    inside one's UTF-8 bytes), after a newline when there is one in the second half of the piece."""
    pieces: list[str] = []
    while json_text_bytes(text) > budget:
        fits = _longest_prefix(text, budget)
        cut = text.rfind("\n", 0, fits) + 1
        if cut <= fits // 2:
            cut = fits
        pieces.append(text[:cut])
        text = text[cut:]
    if text:
        pieces.append(text)
    return pieces


def _longest_prefix(text: str, budget: int) -> int:
    """How many characters of `text` fit in `budget` bytes as JSON; at least one, to make progress."""
    low, high = 1, min(len(text), budget)  # a character is at least one byte
    while low < high:
        middle = (low + high + 1) // 2
        if json_text_bytes(text[:middle]) <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def _tail_within(text: str, budget: int) -> str:
    """The longest end of `text` that fits in `budget` bytes as JSON."""
    if json_text_bytes(text) <= budget:
        return text
    if budget <= 0:
        return ""
    low, high = 0, min(len(text), budget)
    while low < high:
        middle = (low + high + 1) // 2
        if json_text_bytes(text[len(text) - middle :]) <= budget:
            low = middle
        else:
            high = middle - 1
    return text[len(text) - low :] if low else ""


CUT_MARK = " [cut to fit a WebSocket message]"


def fit_message(message: dict[str, Any]) -> dict[str, Any]:
    """The message, made to fit its budget on the wire when it does not: an event in one frame
    (MAX_EVENT_BYTES), a snapshot in one @connections payload (MAX_SNAPSHOT_BYTES).

    Log text is already cut by JobStream; what else can grow is a status's error message (its start
    is kept) and a snapshot's job record (see _fit_snapshot).
    """
    snapshot = message.get("type") == "snapshot"
    limit = MAX_SNAPSHOT_BYTES if snapshot else MAX_EVENT_BYTES
    size = wire_bytes(message)
    if size <= limit:
        return message
    if snapshot:
        return _fit_snapshot(message, limit)
    fitted = dict(message)
    for holder, key in ((fitted, "text"), (fitted, "message"), (fitted, "error")):
        size = wire_bytes(fitted)
        if size <= limit:
            break
        value = holder.get(key)
        if key == "error" and isinstance(value, dict) and isinstance(value.get("message"), str):
            error = dict(value)
            error["message"] = _cut(error["message"], size - limit)
            fitted["error"] = error
        elif isinstance(value, str):
            holder[key] = _cut(value, size - limit)
    return fitted


def _cut(text: str, over: int) -> str:
    """`text` shortened by at least `over` bytes of JSON, its start kept and the cut marked."""
    room = json_text_bytes(text) - over - json_text_bytes(CUT_MARK)
    return (text[: _longest_prefix(text, room)] if room > 0 else "") + CUT_MARK


def _fit_snapshot(message: dict[str, Any], limit: int) -> dict[str, Any]:
    """A snapshot whose job record is too large for one payload: its log tails are shortened (their
    ends kept), and if that is not enough, its args, outputs and most of its error message go first.
    `partial: true` tells the client to read the whole job with GET /v1/jobs/{id}."""
    job = dict(message.get("job") or {})
    fitted = {**message, "job": job, "partial": True}
    tails = str(job.get("stdout") or ""), str(job.get("stderr") or "")
    _place_tails(fitted, tails, limit)
    if wire_bytes(fitted) <= limit:
        return fitted
    job.update(args={}, outputs=[])
    job.pop("archive", None)
    error = job.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        over = json_text_bytes(error["message"]) - 1024
        job["error"] = {**error, "message": _cut(error["message"], over) if over > 0 else error["message"]}
    _place_tails(fitted, tails, limit)
    if wire_bytes(fitted) <= limit:
        return fitted
    essentials = ("job_id", "run_id", "stage", "command", "status", "progress", "exit_code", "attempts")
    fitted["job"] = {key: job[key] for key in essentials if key in job}
    return fitted


def _place_tails(snapshot: dict[str, Any], tails: tuple[str, str], limit: int) -> None:
    """Put as much of the ends of stdout and stderr into the snapshot as the limit leaves room for."""
    job = snapshot["job"]
    job["stdout"] = job["stderr"] = ""
    room = max(0, limit - wire_bytes(snapshot))
    out, err = tails
    if json_text_bytes(out) <= room // 2:
        err = _tail_within(err, room - json_text_bytes(out))
    elif json_text_bytes(err) <= room // 2:
        out = _tail_within(out, room - json_text_bytes(err))
    else:
        out, err = _tail_within(out, room // 2), _tail_within(err, room - room // 2)
    job["stdout"], job["stderr"] = out, err
