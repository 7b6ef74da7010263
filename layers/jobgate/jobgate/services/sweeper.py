"""The sweeper: finds jobs that lost their message or their worker, so none stays unfinished.

It never fails a job for waiting: a job whose message was sent waits in the queue as long as the
queue keeps the message. Every write it makes holds only while the job is exactly as it read it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ulid import ULID

from jobgate import observability as obs
from jobgate.adapters.dynamo import JobStore, epoch_ms
from jobgate.adapters.queue import JobQueue
from jobgate.errors import InvalidTransition, JobgateError
from jobgate.models import Job, JobError, JobStatus, utcnow
from jobgate.observability import logger
from jobgate.services.dispatch import dispatch
from jobgate.services.events import Publisher, ended_announced
from jobgate.services.maps import ACTIVE_MAPS, MapRecord
from jobgate.services.pipelines import Advancer

# SQS keeps a message this long (JobsQueue's MessageRetentionPeriod in template.yaml), then drops
# it without a trace: a job whose message was sent longer ago than this can never be delivered.
QUEUE_RETENTION_S = 4 * 24 * 3600


@dataclass(frozen=True)
class SweepConfig:
    # Whoever queues a job records the send right after it; a queued job with no such record after
    # this long lost its message (the API died between its write and its send): send it again.
    enqueue_grace_s: int = 120
    # Re-sends of an unrecorded message that may fail before the job ends `never_started`.
    max_resends: int = 3
    # Past this, a sent message is gone from the queue: the job ends `queue_expired`.
    queue_retention_s: int = QUEUE_RETENTION_S
    # A running job whose lease ran out this long ago lost its worker: hand it to another one now
    # rather than after the queue's visibility timeout.
    lost_after_s: int = 60
    # A blocked step this old whose upstream ended was not moved on (its worker died right then).
    blocked_after_s: int = 600
    page_size: int = 100


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
        self._maps_found: dict[str, bool] = {}
        now = self._clock()
        cfg = self._config
        passes: list[tuple[str, Callable[[], list[Job]], Callable[[Job], None]]] = [
            (
                "unsent",
                lambda: self._store.queued_unconfirmed(
                    queued_before=now - timedelta(seconds=cfg.enqueue_grace_s), page_size=cfg.page_size
                ),
                lambda job: self._resend(job, now, report),
            ),
            (
                "expired",
                lambda: self._store.queued_sent(
                    sent_before=now - timedelta(seconds=cfg.queue_retention_s), page_size=cfg.page_size
                ),
                lambda job: self._expire(job, now, report),
            ),
            (
                "running",
                lambda: self._store.active(JobStatus.RUNNING, page_size=cfg.page_size),
                lambda job: self._rescue(job, now, report),
            ),
            (
                "blocked",
                lambda: self._store.active(
                    JobStatus.BLOCKED,
                    created_before=str(
                        ULID.from_timestamp((now - timedelta(seconds=cfg.blocked_after_s)).timestamp())
                    ),
                    page_size=cfg.page_size,
                ),
                self._move_on,
            ),
        ]
        for name, read, sweep_one in passes:
            try:
                jobs = read()
            except JobgateError as exc:
                logger.error("could not read jobs to sweep", sweep=name, error=exc.detail)
                continue
            self._each(name, jobs, sweep_one)
        self._sweep_maps()
        if report.requeued or report.failed or report.rescued:
            logger.warning("swept unfinished jobs", **report.__dict__)
        return report

    @staticmethod
    def _each(name: str, jobs: Iterable[Job], sweep_one: Callable[[Job], None]) -> None:
        """One job's trouble is logged and the sweep goes on with the next."""
        for job in jobs:
            try:
                sweep_one(job)
            except InvalidTransition:
                continue  # it moved on (claimed, sent, ended) since it was read: nothing to do
            except Exception as exc:  # noqa: BLE001 - isolation is the point: log every kind, go on
                detail = exc.detail if isinstance(exc, JobgateError) else repr(exc)
                logger.error("could not sweep job", sweep=name, job_id=job.job_id, error=detail)

    def _resend(self, job: Job, now: datetime, report: SweepReport) -> None:
        """A queued job with no recorded send: send it again, or end it after the last failed send."""
        if job.requeues >= self._config.max_resends:
            message = f"Its message could not be sent to the queue ({job.requeues + 1} tries)."
            self._end(job, JobError(type="never_started", message=message), now, report)
            return
        counted = self._store.note_resend(job)  # counted first: a send that keeps failing ends the job
        dispatch(self._store, self._queue, counted, self._clock)
        report.requeued.append(job.job_id)

    def _expire(self, job: Job, now: datetime, report: SweepReport) -> None:
        days = self._config.queue_retention_s / 86400
        message = (
            f"No worker took it while the queue kept its message ({days:g} days); the queue has dropped it. "
            "Submit it again."
        )
        self._end(job, JobError(type="queue_expired", message=message), now, report)

    def _end(self, job: Job, error: JobError, now: datetime, report: SweepReport) -> None:
        failed = ended_announced(
            self._publisher,
            lambda note: self._store.fail_unfinished(job, error=error, now=now, announce=note),
        )
        report.failed.append(job.job_id)
        obs.job_finished(failed.status.value, None)
        if self._advancer is not None:
            self._advancer.advance(failed)

    def _rescue(self, job: Job, now: datetime, report: SweepReport) -> None:
        stale = epoch_ms(now - timedelta(seconds=self._config.lost_after_s))
        if job.lease_until is None or job.lease_until >= stale:
            return
        # The worker that takes the message over retries the job, or fails it after its last attempt.
        self._queue.send(job.job_id, job.tenant, runner=job.runner)
        report.rescued.append(job.job_id)

    def _sweep_maps(self) -> None:
        """Every open map: chunks released but not queued, free slots, its merge and its end, a cancel
        left unfinished. One map's trouble is logged and the sweep goes on with the next."""
        if self._advancer is None:
            return
        try:
            records = self._store.active_records(ACTIVE_MAPS, page_size=self._config.page_size)
        except JobgateError as exc:
            logger.error("could not read maps to sweep", error=exc.detail)
            return
        for record in records:
            try:
                self._advancer.maps.sweep(MapRecord.model_validate(record))
            except Exception as exc:  # noqa: BLE001 - isolation is the point: log every kind, go on
                detail = exc.detail if isinstance(exc, JobgateError) else repr(exc)
                logger.error("could not sweep map", map_id=record.get("map_id"), error=detail)

    def _move_on(self, job: Job) -> None:
        """A blocked step whose upstream ended but was never moved on (its worker died right then), or
        a map's chunk whose map was never written."""
        if self._advancer is None:
            return
        if job.map_id is not None:
            # The map's own pass releases the chunks of written maps; a map is looked up once a sweep.
            if job.map_id not in self._maps_found:
                self._maps_found[job.map_id] = self._advancer.maps.exists(job.map_id)
            if not self._maps_found[job.map_id]:
                self._advancer.maps.cancel_orphan(job)
            return
        upstream = {ref.split("/", 1)[0] for ref in job.upstream.values()}
        for ended in self._store.get_many(sorted(upstream)).values():
            if ended.terminal:
                self._advancer.advance(ended)
