"""The job service: submit, wait, read, list and cancel jobs for one tenant at a time."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel
from ulid import ULID

from jobgate.adapters.blobs import BlobStore
from jobgate.adapters.dynamo import JobStore
from jobgate.adapters.queue import JobQueue
from jobgate.errors import (
    AssetFailed,
    AssetNotReady,
    Conflict,
    Gone,
    InvalidTransition,
    NotFound,
    QueueError,
    StoreError,
    UnsupportedMediaType,
    ValidationFailed,
)
from jobgate.models import Asset, AssetStatus, Job, JobError, JobPage, JobRequest, JobStatus, Output, utcnow
from jobgate.observability import logger
from jobgate.services.dispatch import dispatch
from jobgate.services.events import Publisher, announce
from jobgate.services.outputs import OutputCatalog
from jobgate.services.pipelines import Advancer
from jobgate.services.registry import Invocation, Registry

INLINE_LOG_LIMIT = 1024 * 1024


# Every attempt writes under a prefix of its own: an attempt that was superseded (its worker lost the
# lease but still runs) can never change an object the job's record points at. The record names the
# attempt that finished it (`attempts`), so readers find its objects from the record alone.


def log_key(tenant: str, job_id: str, attempt: int, stream: str) -> str:
    return f"logs/{tenant}/{job_id}/a{attempt}/{stream}.log"


def output_key(tenant: str, job_id: str, attempt: int, name: str) -> str:
    return f"results/{tenant}/{job_id}/a{attempt}/{name}"


def archive_key(tenant: str, job_id: str, attempt: int) -> str:
    # Beside the attempt's folder, never inside it: no output name can collide with it.
    return f"results/{tenant}/{job_id}/a{attempt}.zip"


# Sync mode reads the job this soon after submitting it, then ever less often up to sync_poll_s.
FIRST_SYNC_POLL_S = 0.025


def manifest_key(tenant: str, job_id: str, attempt: int) -> str:
    """The list of every output of one attempt, when they are too many for the job record.

    Beside that attempt's folder of outputs (`results/<tenant>/<job_id>/a<attempt>/`), never inside.
    """
    return f"results/{tenant}/{job_id}/a{attempt}.outputs.json"


class JobLimits(BaseModel):
    default_timeout_s: int
    max_timeout_s: int
    sync_poll_s: float = 0.25  # the longest interval between two reads of a sync-mode job


class OutputLink(Output):
    url: str
    expires_in: int


class OutputLinkPage(BaseModel):
    items: list[OutputLink]
    next_cursor: str | None = None


class LogContent(BaseModel):
    """Either the log's text, or a presigned URL when it is too large to answer inline."""

    text: str | None = None
    url: str | None = None


class JobService:
    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        blobs: BlobStore,
        registry: Registry,
        limits: JobLimits,
        *,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        download_expiry_s: int = 900,
        settle: Callable[[Asset], Asset] | None = None,
        publisher: Publisher | None = None,
        admit: Callable[[str, JobRequest, Invocation], None] | None = None,
        advancer: Advancer | None = None,
    ) -> None:
        self._advancer = advancer
        self._publisher = publisher
        self._admit = admit  # limits and egress checks (services.limits.JobAdmission); raises to refuse
        self._settle = settle
        self._presign_s = download_expiry_s
        self._store = store
        self._queue = queue
        self._blobs = blobs
        self._registry = registry
        self._limits = limits
        self._clock = clock
        self._sleep = sleep
        self._monotonic = monotonic
        self._catalog = OutputCatalog(blobs)

    def submit(self, tenant: str, request: JobRequest) -> tuple[Job, bool]:
        """Check, record and enqueue a job; answer (job, created). Nothing is queued when a check fails."""
        invocation = self._registry.check(request.stage, request.command, request.args)
        timeout_s = self._timeout(request, invocation)
        self.check_inputs(tenant, invocation)
        if self._admit is not None:
            self._admit(tenant, request, invocation)
        job = Job(
            job_id=str(ULID()),
            tenant=tenant,
            run_id=request.run_id,
            stage=invocation.contract.stage,
            command=invocation.contract.command,
            args=invocation.args,
            inputs=invocation.inputs,
            timeout_s=timeout_s,
            max_attempts=request.max_attempts,
            retry_on_exit=request.retry_on_exit,
            zip_outputs=request.zip_outputs,
            request_hash=request.fingerprint(),
            created_at=self._clock(),
        )
        job, created = self._store.create(job)
        if created or (job.status == JobStatus.QUEUED and job.enqueued_at is None):
            # The same request again (same run_id) finds its job queued with no message recorded as
            # sent: the first request's send failed or its answer was lost. A second message is
            # harmless (a worker runs a job once); a job with none would wait for the sweeper.
            self._enqueue(job)
        return job, created

    def _timeout(self, request: JobRequest, invocation: Invocation) -> int:
        return self.timeout_for(request.timeout_s, invocation)

    def timeout_for(self, requested: int | None, invocation: Invocation) -> int:
        """The job's timeout: as asked, else the default; never past what a worker can see through."""
        ceiling = min(
            self._limits.max_timeout_s, invocation.contract.max_timeout_s or self._limits.max_timeout_s
        )
        timeout_s = requested or min(self._limits.default_timeout_s, ceiling)
        if timeout_s > ceiling:
            raise ValidationFailed(
                f"timeout_s {timeout_s} is longer than a worker can run a job ({ceiling} s).",
                [{"loc": ["body", "timeout_s"], "msg": f"at most {ceiling}"}],
            )
        return timeout_s

    def retry(self, tenant: str, job_id: str) -> Job:
        """A new job with the same request as an ended one, linked both ways."""
        original = self._store.get(job_id, tenant=tenant)
        if not original.terminal:
            raise InvalidTransition(
                f"Job '{job_id}' is {original.status.value}; only an ended job can be retried."
            )
        if original.upstream:
            raise Conflict(f"Job '{job_id}' reads other pipeline steps' outputs; retry its pipeline instead.")
        request = JobRequest(
            stage=original.stage,
            command=original.command,
            args=original.args,
            timeout_s=original.timeout_s,
            max_attempts=original.max_attempts,
            retry_on_exit=original.retry_on_exit,
            zip_outputs=original.zip_outputs,
        )
        retry, _ = self.submit(tenant, request)
        retry = self._store.link_retry_of(retry, original)
        self._store.link_retry(original, retry)
        return retry

    def check_inputs(self, tenant: str, invocation: Invocation) -> None:
        for name, asset_id in invocation.inputs.items():
            try:
                asset = self._store.get_asset(asset_id, tenant=tenant)
            except NotFound as exc:
                raise NotFound(f"Argument '{name}' names asset '{asset_id}', which does not exist.") from exc
            if asset.status == AssetStatus.PENDING and self._settle is not None:
                asset = self._settle(asset)  # its S3 event may not have arrived yet
            if asset.status == AssetStatus.FAILED:
                raise AssetFailed(
                    f"Argument '{name}' names asset '{asset_id}', which FAILED its upload check: "
                    f"{asset.reason}. Upload the file again.",
                    extra={"asset_id": asset_id, "reason": asset.reason},
                )
            if asset.status != AssetStatus.AVAILABLE:
                raise AssetNotReady(
                    f"Argument '{name}' names asset '{asset_id}', which is {asset.status.value}, "
                    "not AVAILABLE."
                )
            spec = invocation.contract.param(name.split("[", 1)[0])
            accepted = spec.media_types if spec else []
            if accepted and asset.media_type not in accepted:
                raise UnsupportedMediaType(
                    f"Argument '{name}' takes {', '.join(accepted)}; "
                    f"asset '{asset_id}' is {asset.media_type}.",
                    [{"loc": ["body", "args", name], "msg": f"media type {asset.media_type} not accepted"}],
                )

    def _enqueue(self, job: Job) -> None:
        try:
            dispatch(self._store, self._queue, job, self._clock)
        except QueueError:
            # The job must not stay queued with no message to run it: end it, then tell the client.
            try:
                self._store.fail_unfinished(
                    job,
                    error=JobError(type="enqueue", message="The job could not be queued."),
                    now=self._clock(),
                )
            except InvalidTransition:
                return  # a worker claimed it: the send went through after all, whatever SQS answered
            raise

    def wait(self, job: Job, *, until: float) -> Job:
        """Read the job until it ends or `until` (time.monotonic()) comes; answer the latest record.

        The reads start 25 ms apart and grow by a quarter each time up to `sync_poll_s`: a short job is
        seen ending soon after it does, a long wait costs a few reads a second. A read that fails (or
        that could not end before the request's deadline) ends the wait with the record last read.
        """
        interval = min(FIRST_SYNC_POLL_S, self._limits.sync_poll_s)
        while not job.terminal:
            left = until - self._monotonic()
            if left <= 0:
                break
            self._sleep(min(interval, left))
            interval = min(interval * 1.25, self._limits.sync_poll_s)
            try:
                job = self._store.get(job.job_id)
            except StoreError as exc:
                logger.warning("sync wait ends early", job_id=job.job_id, error=exc.detail)
                break
        return job

    def get(self, tenant: str, job_id: str) -> Job:
        return self._store.get(job_id, tenant=tenant)

    def list_jobs(self, tenant: str, *, status: JobStatus | None, limit: int, cursor: str | None) -> JobPage:
        return self._store.list_jobs(tenant, status=status, limit=limit, cursor=cursor)

    def cancel(self, tenant: str, job_id: str) -> Job:
        job = self._store.get(job_id, tenant=tenant)
        job = self._store.cancel(job, now=self._clock())
        if job.terminal:  # a running job's worker announces its own end
            announce(self._publisher, job)
            if self._advancer is not None:
                self._advancer.advance(job)
        return job

    def logs(self, tenant: str, job_id: str, stream: str) -> LogContent:
        job = self._store.get(job_id, tenant=tenant)
        tail = job.stdout if stream == "stdout" else job.stderr
        if not job.terminal:
            return LogContent(text=tail)
        key = log_key(tenant, job_id, job.attempts, stream)
        size = self._blobs.size(key)
        if size is None:
            return LogContent(text=tail)
        if size > INLINE_LOG_LIMIT:
            return LogContent(
                url=self._blobs.presign_get(key, expires_s=self._presign_s, filename=f"{job_id}-{stream}.log")
            )
        return LogContent(text=self._blobs.get_bytes(key).decode("utf-8", errors="replace"))

    def outputs(self, tenant: str, job_id: str, *, limit: int, cursor: str | None) -> OutputLinkPage:
        """A page of the job's outputs, each with a presigned download URL."""
        job = self._store.get(job_id, tenant=tenant)
        page, next_cursor = self._catalog.page(job, limit=limit, cursor=cursor)
        return OutputLinkPage(items=[self._link(job, o) for o in page], next_cursor=next_cursor)

    def _link(self, job: Job, output: Output) -> OutputLink:
        url = self._blobs.presign_get(
            self._output_key(job, output.name),
            expires_s=self._presign_s,
            filename=output.name.rsplit("/", 1)[-1],
        )
        return OutputLink(**output.model_dump(), url=url, expires_in=self._presign_s)

    @staticmethod
    def _output_key(job: Job, name: str) -> str:
        return output_key(job.tenant, job.job_id, job.attempts, name)

    def archive_url(self, tenant: str, job_id: str) -> str:
        """The zip of every output, which the worker builds when the request asked for it."""
        job = self._store.get(job_id, tenant=tenant)
        if job.archive is None:
            hint = (
                "submit with zip_outputs: true"
                if not job.zip_outputs
                else "the job has not finished with outputs"
            )
            raise Conflict(f"Job '{job_id}' has no zip of its outputs ({hint}).")
        key = archive_key(tenant, job_id, job.attempts)
        if self._blobs.size(key) is None:
            raise Gone(f"The zip of job '{job_id}' has expired; the retention policy removed it.")
        return self._blobs.presign_get(key, expires_s=self._presign_s, filename=f"{job_id}.zip")

    def download_url(self, tenant: str, job_id: str, name: str | None) -> str:
        job = self._store.get(job_id, tenant=tenant)
        if name is None:
            if job.total_outputs == 0:
                raise NotFound(f"Job '{job_id}' has no outputs.")
            if job.total_outputs > 1:
                raise Conflict(
                    f"Job '{job_id}' has {job.total_outputs} outputs; "
                    "name one with ?name=, or ask for ?zip=1.",
                    extra={"outputs": [o.name for o in job.outputs]},
                )
            name = job.outputs[0].name
        elif self._catalog.find(job, name) is None:
            raise NotFound(f"Job '{job_id}' has no output '{name}'.")
        key = self._output_key(job, name)
        if self._blobs.size(key) is None:
            raise Gone(f"Output '{name}' of job '{job_id}' has expired; the retention policy removed it.")
        return self._blobs.presign_get(key, expires_s=self._presign_s, filename=name.rsplit("/", 1)[-1])
