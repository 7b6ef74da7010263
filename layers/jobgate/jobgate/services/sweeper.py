"""The sweeper: finds jobs that lost their message or their worker, so none stays unfinished."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ulid import ULID

from jobgate.adapters.dynamo import JobStore, epoch_ms
from jobgate.adapters.queue import JobQueue
from jobgate.errors import InvalidTransition, JobgateError
from jobgate.models import JobError, JobStatus, utcnow
from jobgate.observability import logger
from jobgate.services.events import Publisher, announce
from jobgate.services.pipelines import Advancer


@dataclass(frozen=True)
class SweepConfig:
    # A queued job older than this has probably lost its message (the API died between the write
    # and the send); re-sending it is harmless, since a worker runs a job only once.
    requeue_after_s: int = 600
    max_requeues: int = 3
    # A running job whose lease ran out this long ago lost its worker: hand it to another one now
    # rather than after the queue's visibility timeout.
    lost_after_s: int = 60
    batch: int = 100


@dataclass
class SweepReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    rescued: list[str] = field(default_factory=list)


class Sweeper:
    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        config: SweepConfig,
        *,
        publisher: Publisher | None = None,
        advancer: Advancer | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._advancer = advancer
        self._store = store
        self._queue = queue
        self._config = config
        self._publisher = publisher
        self._clock = clock

    def sweep(self) -> SweepReport:
        report = SweepReport()
        now = self._clock()
        self._sweep_queued(now, report)
        self._sweep_running(now, report)
        self._sweep_blocked(now)
        if report.requeued or report.failed or report.rescued:
            logger.warning("swept unfinished jobs", **report.__dict__)
        return report

    def _sweep_queued(self, now: datetime, report: SweepReport) -> None:
        cutoff = now - timedelta(seconds=self._config.requeue_after_s)
        before = str(ULID.from_timestamp(cutoff.timestamp()))
        for job in self._store.active(JobStatus.QUEUED, created_before=before, limit=self._config.batch):
            try:
                if job.requeues >= self._config.max_requeues:
                    message = f"No worker picked it up after {job.requeues + 1} sends of its message."
                    failed = self._store.fail_unfinished(
                        job, error=JobError(type="never_started", message=message), now=now
                    )
                    announce(self._publisher, failed)
                    if self._advancer is not None:
                        self._advancer.advance(failed)
                    report.failed.append(job.job_id)
                    continue
                self._store.note_requeue(job)
                self._queue.send(job.job_id, job.tenant)
                report.requeued.append(job.job_id)
            except InvalidTransition:
                continue  # it started or ended meanwhile
            except JobgateError as exc:
                logger.warning("could not sweep job", job_id=job.job_id, error=exc.detail)

    def _sweep_blocked(self, now: datetime) -> None:
        """A blocked step whose upstream ended but was never moved on (its worker died right then)."""
        if self._advancer is None:
            return
        cutoff = now - timedelta(seconds=self._config.requeue_after_s)
        before = str(ULID.from_timestamp(cutoff.timestamp()))
        for job in self._store.active(JobStatus.BLOCKED, created_before=before, limit=self._config.batch):
            upstream = {ref.split("/", 1)[0] for ref in job.upstream.values()}
            for ended in self._store.get_many(sorted(upstream)).values():
                if ended.terminal:
                    self._advancer.advance(ended)

    def _sweep_running(self, now: datetime, report: SweepReport) -> None:
        stale = epoch_ms(now - timedelta(seconds=self._config.lost_after_s))
        for job in self._store.active(JobStatus.RUNNING, limit=self._config.batch):
            if job.lease_until is None or job.lease_until >= stale:
                continue
            try:
                # The worker that takes the message over retries the job, or fails it after its last attempt.
                self._queue.send(job.job_id, job.tenant)
                report.rescued.append(job.job_id)
            except JobgateError as exc:
                logger.warning("could not sweep job", job_id=job.job_id, error=exc.detail)
