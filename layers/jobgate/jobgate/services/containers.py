"""The container runner's dispatcher: one ECS task per job message, retried while capacity lacks.

A job whose timeout is past the worker Lambda's budget (or whose command asks for it) is queued on
ContainerJobsQueue instead of JobsQueue. The dispatcher (ContainerDispatchFunction) starts a task
of the worker image in task mode (`jobgate.task`) for each message, naming the job; the task claims
the job, runs it and records its end exactly as the worker Lambda does (claim, lease, heartbeats,
events, finish). A RunTask refused for lack of capacity is retried by the queue (the message comes
back after its visibility timeout); on its last delivery the job ends `failed` with
`error.type = capacity`.

A task that RunTask started may still never take its job (its image cannot be pulled, it dies before
its claim). So after each start the dispatcher sends itself a check, delayed by `start_grace_s`
(10 minutes): a job that still needs a task then gets another one, up to `max_starts` tasks, after
which it ends `failed` with `error.type = never_started`. A job that left `queued` (or whose lease
lives again) makes the check a no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from jobgate.adapters.dynamo import JobStore, epoch_ms
from jobgate.adapters.queue import JobQueue
from jobgate.adapters.tasks import TaskLauncher
from jobgate.errors import InvalidTransition, NoCapacity, NotFound
from jobgate.models import Job, JobError, JobResult, JobStatus, utcnow
from jobgate.observability import logger
from jobgate.services.events import Publisher, ended_announced
from jobgate.services.pipelines import Advancer


class ContainerDispatcher:
    def __init__(
        self,
        store: JobStore,
        launcher: TaskLauncher,
        *,
        tries: int,
        queue: JobQueue | None = None,
        start_grace_s: int = 600,
        max_starts: int = 3,
        publisher: Publisher | None = None,
        advancer: Advancer | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._launcher = launcher
        self._tries = tries
        self._queue = queue
        self._start_grace_s = start_grace_s
        self._max_starts = max_starts
        self._publisher = publisher
        self._advancer = advancer
        self._clock = clock

    def dispatch(
        self, job_id: str, tenant: str | None, *, receive_count: int, task_starts: int = 0
    ) -> Job | None:
        """Start the job's task unless nothing should run it; answer the job, or None when unknown.

        Raises NoCapacity (the message is retried) while deliveries are left; on the last one the
        job ends failed (`capacity`).
        """
        try:
            job = self._store.get(job_id)
        except NotFound:
            logger.warning("message for an unknown job dropped", job_id=job_id)
            return None
        now = self._clock()
        live = job.status == JobStatus.RUNNING and (job.lease_until or 0) >= epoch_ms(now)
        if job.terminal or job.status == JobStatus.BLOCKED or live:
            logger.info("no task needed", job_id=job_id, status=job.status.value)
            return job
        if task_starts >= self._max_starts:
            message = f"{task_starts} tasks were started for it and none took it up."
            return self._fail(job, "never_started", message)
        try:
            task = self._launcher.start(job_id, tenant or job.tenant)
        except NoCapacity as exc:
            if receive_count < self._tries:
                logger.warning("no capacity for a job's task; retried", job_id=job_id, tries=receive_count)
                raise
            message = f"No capacity to start its task after {receive_count} tries: {exc.detail}"
            return self._fail(job, "capacity", message)
        logger.info("job task started", job_id=job_id, task=task, task_starts=task_starts + 1)
        if self._queue is not None:
            # The check: if the task has not taken the job by then, another one is started.
            self._queue.send(
                job_id,
                tenant or job.tenant,
                delay_s=self._start_grace_s,
                runner="container",
                task_starts=task_starts + 1,
            )
        return job

    def _fail(self, job: Job, kind: str, message: str) -> Job:
        result = JobResult(
            status=JobStatus.FAILED,
            exit_code=job.exit_code,
            stdout_tail=job.stdout,
            stderr_tail=job.stderr,
            error=JobError(type=kind, message=message),
        )
        try:
            done = ended_announced(
                self._publisher,
                lambda note: self._store.end_unfinished(job, result, now=self._clock(), announce=note),
            )
        except InvalidTransition:
            # A task claimed it meanwhile (an earlier try did start one): it runs.
            return self._store.get(job.job_id)
        logger.error("job failed: no task took it", job_id=job.job_id, error_type=kind)
        if self._advancer is not None and done.pipeline_id is not None:
            self._advancer.advance(done)
        return done
