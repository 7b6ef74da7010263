"""What an operator asks of a running stack (`jobgate admin`): which jobs are stuck, and moving dead
letters back to their queue once their cause is fixed (docs/operations.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from jobgate.adapters.dynamo import JobStore, epoch_ms
from jobgate.adapters.queue import QueueMover
from jobgate.models import Job, JobStatus, utcnow


@dataclass(frozen=True)
class StuckJob:
    job: Job
    reason: str  # "lease expired", "message not sent", "queued"
    since: datetime  # when the lease ran out, or the job was queued

    def age_s(self, now: datetime) -> float:
        return (now - self.since).total_seconds()


class Operations:
    def __init__(self, store: JobStore, mover: QueueMover, clock: Callable[[], datetime] = utcnow) -> None:
        self._store = store
        self._mover = mover
        self._clock = clock

    def stuck(self, *, queued_for_s: float, page_size: int = 100) -> list[StuckJob]:
        """Unfinished jobs past their lease (their worker stopped; the sweeper or the next delivery
        takes them over), and jobs queued for longer than `queued_for_s`, oldest first."""
        now = self._clock()
        found: list[StuckJob] = []
        for job in self._store.active(JobStatus.RUNNING, page_size=page_size):
            if job.lease_until is not None and job.lease_until < epoch_ms(now):
                expired = datetime.fromtimestamp(job.lease_until / 1000, tz=now.tzinfo)
                found.append(StuckJob(job, "lease expired", expired))
        queued_before = now - timedelta(seconds=queued_for_s)
        for job in self._store.active(JobStatus.QUEUED, page_size=page_size):
            since = job.queued_at or job.created_at
            if since < queued_before:
                reason = "queued" if job.enqueued_at is not None else "message not sent"
                found.append(StuckJob(job, reason, since))
        return sorted(found, key=lambda s: s.since)

    def redrive(self, source_url: str, destination_url: str, *, limit: int) -> int:
        """Move up to `limit` messages from a dead-letter queue back to the queue its consumer reads."""
        return self._mover.move(source_url, destination_url, limit=limit)

    def waiting(self, queue_url: str) -> int:
        return self._mover.depth(queue_url)
