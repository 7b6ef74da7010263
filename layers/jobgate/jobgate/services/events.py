"""Job events: numbered, stored, and fanned out to WebSocket subscribers; the output batcher."""

from __future__ import annotations

import codecs
import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from jobgate.adapters.connections import ConnectionGone, Connections, SendFailed
from jobgate.adapters.events import EventStore
from jobgate.errors import JobgateError, NotFound
from jobgate.models import Job, JobEvent, JobStatus, Subscription, utcnow
from jobgate.observability import logger

# API Gateway's WebSocket frames are at most 32 KB; a log event's text stays well under.
MAX_EVENT_TEXT = 16 * 1024
# A documented line any command can print to report its own progress: `progress: 0.42` or `progress: 42%`.
PROGRESS_LINE = re.compile(r"^\s*progress:\s*(\d+(?:\.\d+)?)\s*(%?)\s*$", re.IGNORECASE)
# Zyra logs each file it writes as `INFO: <path>`.
WROTE_LINE = re.compile(r"^INFO:\s+(\S.*?)\s*$")

STAGED, STARTED, EXITED = 0.1, 0.2, 0.9


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
    }
    return job.model_dump(mode="json", exclude=hidden)


class Publisher:
    """Stores a job's events and delivers them, in order and once, to each subscriber."""

    def __init__(
        self, events: EventStore, connections: Connections | None, clock: Callable[[], datetime] = utcnow
    ):
        self._events = events
        self._connections = connections
        self._clock = clock

    def publish(self, events: list[JobEvent]) -> list[JobEvent]:
        numbered, watchers = self._events.append_counted(events, self._clock())
        if numbered and watchers > 0:
            self.deliver(numbered[0].job_id)
        return numbered

    def deliver(self, job_id: str, only: Subscription | None = None) -> None:
        if self._connections is None:
            return
        subs = [only] if only is not None else self._events.subscriptions(job_id)
        for sub in subs:
            self._catch_up(sub)

    def send(self, connection_id: str, message: dict[str, Any]) -> bool:
        """Send one message; a connection that is gone is forgotten. Answer whether it was sent."""
        if self._connections is None:
            return False
        try:
            self._connections.send(connection_id, message)
        except ConnectionGone:
            logger.info("subscriber gone", connection_id=connection_id)
            self._events.delete_connection(connection_id)
            return False
        except SendFailed as exc:
            logger.warning("could not reach subscriber", connection_id=connection_id, error=str(exc))
            return False
        return True

    def _catch_up(self, sub: Subscription) -> None:
        # Claim a range with a conditional write, then send it: whoever wins sends; no event twice.
        for _ in range(20):
            pending = self._events.after(sub.job_id, sub.delivered_seq)
            if not pending:
                return
            up_to = pending[-1].seq
            if not self._events.claim_range(sub, up_to):
                return  # another sender holds this subscriber's next range
            for event in pending:
                if not self.send(sub.connection_id, event.wire()):
                    return
            sub = sub.model_copy(update={"delivered_seq": up_to})


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
    """A running job's output and progress, published a few times a second in small batches.

    Publishing never stops the job: an error is logged and the batch is dropped (the whole logs
    are in S3 when the job ends).
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
    ) -> None:
        self._job_id = job_id
        self._publisher = publisher
        self._workdir = workdir
        self._expected = expected_outputs
        self._interval = interval_s
        self._now = monotonic
        self._last_flush = 0.0
        self._decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in ("stdout", "stderr")}
        self._partial = {"stdout": "", "stderr": ""}
        self._pending: list[JobEvent] = []
        self._progress = 0.0
        self._published_progress = 0.0
        self._written: set[str] = set()

    @property
    def progress(self) -> float:
        return self._progress

    def milestone(self, value: float) -> None:
        self._set_progress(value)
        self.flush()

    def note(self, value: float) -> None:
        """Progress to publish with the next batch."""
        self._set_progress(value)

    def queue_status(self, job: Job) -> None:
        """A status event to publish with the next batch, ahead of what follows it."""
        self._pending.append(status_event(job))

    def output(self, stream: str, chunk: bytes) -> None:
        text = self._partial[stream] + self._decoders[stream].decode(chunk)
        lines = text.split("\n")
        self._partial[stream] = lines.pop()
        if lines:
            self._add_lines(stream, lines)
        self.tick()

    def tick(self) -> None:
        if self._now() - self._last_flush >= self._interval:
            self.flush()

    def close(self) -> None:
        """The command has exited: publish what remains, the last partial lines included."""
        for stream in ("stdout", "stderr"):
            rest = self._partial[stream] + self._decoders[stream].decode(b"", final=True)
            self._partial[stream] = ""
            if rest:
                self._add_lines(stream, [rest])
        self._set_progress(EXITED)
        self.flush()

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
        events = self._pending
        self._pending = []
        if self._progress > self._published_progress:
            events.append(JobEvent(type="progress", job_id=self._job_id, progress=round(self._progress, 4)))
            self._published_progress = self._progress
        self._publish(events)

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
        text = "\n".join(lines) + "\n"
        last = self._pending[-1] if self._pending else None
        if last is not None and last.stream == stream and len(last.text or "") + len(text) <= MAX_EVENT_TEXT:
            last.text = (last.text or "") + text
            return
        for start in range(0, len(text), MAX_EVENT_TEXT):
            part = text[start : start + MAX_EVENT_TEXT]
            self._pending.append(JobEvent(type="log", job_id=self._job_id, stream=stream, text=part))

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
        self._progress = max(self._progress, min(1.0, value))  # progress never goes down


def announce(publisher: Publisher | None, job: Job) -> None:
    """Publish a job's status change; a failure to publish never changes what happens to the job."""
    JobStream(job.job_id, publisher).status(job)


def status_event(job: Job) -> JobEvent:
    return JobEvent(
        type="status", job_id=job.job_id, status=job.status, exit_code=job.exit_code, error=job.error
    )
