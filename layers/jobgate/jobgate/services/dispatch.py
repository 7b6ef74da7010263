"""Sending a queued job's message, then recording on the job that it was sent."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from jobgate.adapters.dynamo import JobStore
from jobgate.adapters.queue import JobQueue
from jobgate.errors import StoreError
from jobgate.models import Job
from jobgate.observability import logger


def dispatch(
    store: JobStore, queue: JobQueue, job: Job, clock: Callable[[], datetime], *, delay_s: int = 0
) -> None:
    """Send the job's message (QueueError when it cannot), then confirm the send on its record.

    The sweeper re-sends only queued jobs whose send is not confirmed; a send whose confirmation is
    lost is sent again after its grace period, which is harmless: a worker runs a job only once.
    """
    queue.send(job.job_id, job.tenant, delay_s=delay_s, runner=job.runner)
    try:
        store.confirm_enqueue(job, now=clock())
    except StoreError as exc:
        logger.warning("could not record that a job's message was sent", job_id=job.job_id, error=exc.detail)
