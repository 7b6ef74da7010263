"""The job service: submit, wait, read, list and cancel jobs for one tenant at a time."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, Field
from ulid import ULID

from jobgate import observability as obs
from jobgate.adapters.blobs import BlobStore
from jobgate.adapters.dynamo import JobStore
from jobgate.adapters.events import EventStore
from jobgate.adapters.queue import JobQueue
from jobgate.errors import (
    AssetFailed,
    AssetNotReady,
    Conflict,
    Gone,
    InvalidTransition,
    JobNotEnded,
    JobNotSucceeded,
    NotFound,
    QueueError,
    RunIdConflict,
    StoreError,
    UnsupportedMediaType,
    ValidationFailed,
)
from jobgate.models import (
    Asset,
    AssetStatus,
    InputObject,
    Job,
    JobError,
    JobEvent,
    JobPage,
    JobRequest,
    JobStatus,
    Output,
    Runner,
    job_id_of_server_run,
    utcnow,
)
from jobgate.observability import logger
from jobgate.services.dispatch import dispatch
from jobgate.services.events import Publisher, ended_announced
from jobgate.services.outputs import OutputCatalog
from jobgate.services.pipelines import Advancer
from jobgate.services.registry import STEP_SCHEME, Invocation, Registry, build_argv, declared_outputs

INLINE_LOG_LIMIT = 1024 * 1024
# An output this small is answered inline by GET .../outputs/{name}; a larger one by a redirect to S3
# (Lambda's answers are capped at 6 MB, and base64 adds a third).
INLINE_OUTPUT_LIMIT = 1024 * 1024
# A page of the event long poll: 100 events of at most 32,000 bytes stay well under Lambda's 6 MB.
EVENTS_PAGE = 100
# Every end is written with its status event; a job ended by an earlier version of jobgate may lack
# it. An ended job whose final status event has not appeared this long after it ended never will: the
# long poll says `done` without it.
FINAL_EVENT_GRACE = timedelta(seconds=5)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def staged_asset_path(asset_id: str, filename: str) -> str:
    """Where the worker stages an asset in the job's work folder (relative), as the command sees it."""
    safe = _SAFE_NAME.sub("_", PurePosixPath(filename).name).lstrip(".") or "input"
    return f"inputs/{asset_id}/{safe}"


def staged_job_output_path(job_id: str, name: str) -> str:
    """Where the worker stages another job's output named by `job://<job_id>/<name>`."""
    return f"inputs/{job_id}/{name}"


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
    secrets: frozenset[str] = frozenset()  # the secret names the operator mapped (JOBGATE_COMMAND_SECRETS)
    # The longest job the container runner takes; None: no container runner is deployed.
    container_max_timeout_s: int | None = None


class Placement(NamedTuple):
    """A job's timeout and where it runs."""

    timeout_s: int
    runner: Runner


class OutputLink(Output):
    url: str
    expires_in: int


class OutputLinkPage(BaseModel):
    items: list[OutputLink]
    next_cursor: str | None = None


class CheckedInput(BaseModel):
    """An input file a request names, as checked: what it is and where the command will find it."""

    arg: str
    ref: str
    source: Literal["asset", "job"]
    media_type: str
    size: int
    path: str


class DryRun(BaseModel):
    """What a submit of the request would run; nothing was written, queued or counted."""

    valid: bool = True
    stage: str
    command: str
    argv: list[str]
    inputs: list[CheckedInput]
    timeout_s: int
    runner: Runner = "lambda"
    warnings: list[str] = Field(default_factory=list)


class EventPage(BaseModel):
    """A page of a job's numbered events; pass `next_after_seq` as `after_seq` for the next."""

    events: list[JobEvent]
    next_after_seq: int
    done: bool = Field(description="The job has ended and every event of it was answered.")


class OutputContent(BaseModel):
    """One output of an ended job: its bytes when small, else a presigned URL."""

    output: Output
    data: bytes | None = None
    url: str | None = None


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
        events: EventStore | None = None,
        preview: Callable[[Asset], Asset] | None = None,
    ) -> None:
        self._events = events
        self._preview = preview  # what settling a PENDING asset would record, without recording it
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
        self.check_secrets(invocation)
        timeout_s, runner = self._timeout(request, invocation)
        staged = self.check_inputs(tenant, invocation)
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
            input_objects=staged,
            upstream=dict(
                invocation.jobs
            ),  # job:// inputs, staged from that job's outputs as pipeline steps are
            timeout_s=timeout_s,
            runner=runner,
            max_attempts=request.max_attempts,
            retry_on_exit=request.retry_on_exit,
            zip_outputs=request.zip_outputs,
            request_hash=request.fingerprint(),
            created_at=self._clock(),
        )
        job, created = self._store.create(job)
        logger.append_keys(job_id=job.job_id)  # the rest of the request's lines name it
        if created:
            obs.emit(obs.JOBS_SUBMITTED, command_set=invocation.contract.command_set)
        if created or (job.status == JobStatus.QUEUED and job.enqueued_at is None):
            # The same request again (same run_id) finds its job queued with no message recorded as
            # sent: the first request's send failed or its answer was lost. A second message is
            # harmless (a worker runs a job once); a job with none would wait for the sweeper.
            self._enqueue(job)
        return job, created

    def dry_run(self, tenant: str, request: JobRequest) -> DryRun:
        """Every check a submit makes, in the same order and with the same problems; nothing written.

        A PENDING asset whose file has arrived is judged as a submit would settle it, but not recorded.
        """
        invocation = self._registry.check(request.stage, request.command, request.args)
        self.check_secrets(invocation)
        timeout_s, runner = self._timeout(request, invocation)
        inputs = self._check_inputs(tenant, invocation, record=False)
        if self._admit is not None:
            self._admit(tenant, request, invocation)
        warnings = [w for i in inputs for w in i[1]]
        if request.run_id is not None:
            warnings.extend(self._run_id_warnings(tenant, request))
        checked = [i[0] for i in inputs]
        argv = build_argv(invocation.args, invocation.contract, {i.arg: i.path for i in checked})
        return DryRun(
            stage=invocation.contract.stage,
            command=invocation.contract.command,
            argv=argv,
            inputs=checked,
            timeout_s=timeout_s,
            runner=runner,
            warnings=warnings,
        )

    def _run_id_warnings(self, tenant: str, request: JobRequest) -> list[str]:
        """A run_id used before: the same request is answered that job (a warning), another is a 409."""
        assert request.run_id is not None
        job_id = self._store.find_run(tenant, request.run_id)
        if job_id is None:
            return []
        existing = self._store.get(job_id)
        if existing.request_hash != request.fingerprint():
            raise RunIdConflict(
                f"run_id '{request.run_id}' was used for a different request (job {job_id}).",
                extra={"job_id": job_id},
            )
        return [f"run_id '{request.run_id}' names job {job_id} already: a submit answers that job."]

    def check_secrets(self, invocation: Invocation) -> None:
        """A command that needs a secret this deployment does not map cannot run: a 422 naming it."""
        contract = invocation.contract
        missing = sorted(set(contract.secrets) - self._limits.secrets)
        if missing:
            names = ", ".join(f"'{name}'" for name in missing)
            raise ValidationFailed(
                f"{contract.stage} {contract.command} needs the secret {names}, "
                "which is not configured on this deployment.",
                [
                    {"loc": ["body", "command"], "msg": f"needs the unconfigured secret {name}"}
                    for name in missing
                ],
            )

    def _timeout(self, request: JobRequest, invocation: Invocation) -> Placement:
        return self.timeout_for(request.timeout_s, invocation)

    def timeout_for(self, requested: int | None, invocation: Invocation) -> Placement:
        """The job's timeout (as asked, else the default) and its runner: the worker Lambda while the
        timeout fits its budget, else the container runner, up to its own limit; a command's contract
        may ask for one runner. Past what the runner can see through is a 422 naming the limit."""
        contract = invocation.contract
        lambda_max = self._limits.max_timeout_s
        container_max = self._limits.container_max_timeout_s
        if contract.runner == "container" and container_max is None:
            raise ValidationFailed(
                f"{contract.stage} {contract.command} runs on the container runner, "
                "which this deployment lacks.",
                [{"loc": ["body", "command"], "msg": "needs the container runner"}],
            )
        container = container_max is not None and contract.runner != "lambda"
        runner_max = container_max if container and container_max is not None else lambda_max
        ceiling = min(runner_max, contract.max_timeout_s or runner_max)
        timeout_s = requested or min(self._limits.default_timeout_s, ceiling)
        if timeout_s > ceiling:
            where = "the container runner runs a job" if ceiling > lambda_max else "a worker can run a job"
            raise ValidationFailed(
                f"timeout_s {timeout_s} is longer than {where} ({ceiling} s).",
                [{"loc": ["body", "timeout_s"], "msg": f"at most {ceiling}"}],
            )
        on_container = container and (contract.runner == "container" or timeout_s > lambda_max)
        return Placement(timeout_s, "container" if on_container else "lambda")

    def retry(self, tenant: str, job_id: str) -> Job:
        """A new job with the same request as an ended one, linked both ways."""
        original = self._store.get(job_id, tenant=tenant)
        if not original.terminal:
            raise InvalidTransition(
                f"Job '{job_id}' is {original.status.value}; only an ended job can be retried."
            )
        if any(v.startswith(STEP_SCHEME) for v in _string_args(original.args)):
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

    def check_inputs(self, tenant: str, invocation: Invocation) -> dict[str, InputObject]:
        """Every input file the request names exists for this tenant and fits its argument: uploaded
        assets AVAILABLE (a PENDING one whose file arrived is settled now), `job://` outputs of a job
        that succeeded. 404 unknown (another tenant's is unknown too), 409 not ready, 422 media type.
        Answers where each asset's file is, which the job records so its worker reads no asset."""
        objects: dict[str, InputObject] = {}
        self._check_inputs(tenant, invocation, record=True, objects=objects)
        return objects

    def _check_inputs(
        self,
        tenant: str,
        invocation: Invocation,
        *,
        record: bool,
        objects: dict[str, InputObject] | None = None,
    ) -> list[tuple[CheckedInput, list[str]]]:
        checked = [
            self._check_asset(tenant, invocation, n, a, record=record, objects=objects)
            for n, a in invocation.inputs.items()
        ]
        checked += [
            (self._check_job_output(tenant, invocation, n, r), []) for n, r in invocation.jobs.items()
        ]
        return checked

    def _check_asset(
        self,
        tenant: str,
        invocation: Invocation,
        name: str,
        asset_id: str,
        *,
        record: bool,
        objects: dict[str, InputObject] | None = None,
    ) -> tuple[CheckedInput, list[str]]:
        warnings = []
        try:
            asset = self._store.get_asset(asset_id, tenant=tenant)
        except NotFound as exc:
            raise NotFound(f"Argument '{name}' names asset '{asset_id}', which does not exist.") from exc
        settle = self._settle if record else self._preview
        if asset.status == AssetStatus.PENDING and settle is not None:
            asset = settle(asset)  # its S3 event may not have arrived yet
            if not record and asset.status == AssetStatus.AVAILABLE:
                warnings.append(
                    f"Asset '{asset_id}' is PENDING; its file has arrived, and a submit settles it."
                )
        if asset.status == AssetStatus.FAILED:
            raise AssetFailed(
                f"Argument '{name}' names asset '{asset_id}', which FAILED its upload check: "
                f"{asset.reason}. Upload the file again.",
                extra={"asset_id": asset_id, "reason": asset.reason},
            )
        if asset.status != AssetStatus.AVAILABLE:
            raise AssetNotReady(
                f"Argument '{name}' names asset '{asset_id}', which is {asset.status.value}, not AVAILABLE."
            )
        _check_media_type(invocation, name, asset.media_type, f"asset '{asset_id}'")
        if objects is not None:
            objects[asset_id] = InputObject(key=asset.key, size=asset.size)
        path = staged_asset_path(asset_id, asset.filename)
        ref = f"asset://{asset_id}"
        return (
            CheckedInput(
                arg=name, ref=ref, source="asset", media_type=asset.media_type, size=asset.size, path=path
            ),
            warnings,
        )

    def _check_job_output(self, tenant: str, invocation: Invocation, name: str, ref: str) -> CheckedInput:
        job_id, _, output_name = ref.partition("/")
        try:
            upstream = self._store.get(job_id, tenant=tenant)
        except NotFound as exc:
            raise NotFound(f"Argument '{name}' names job '{job_id}', which does not exist.") from exc
        if upstream.status != JobStatus.SUCCEEDED:
            raise JobNotSucceeded(
                f"Argument '{name}' names an output of job '{job_id}', which is {upstream.status.value}; "
                "only a job that succeeded can be read from.",
                extra={"job_id": job_id, "job_status": upstream.status.value},
            )
        output = self._catalog.find(upstream, output_name)
        if output is None:
            raise NotFound(
                f"Argument '{name}' names output '{output_name}' of job '{job_id}', which it did not write."
            )
        _check_media_type(invocation, name, output.media_type, f"output '{output_name}' of job '{job_id}'")
        return CheckedInput(
            arg=name,
            ref=f"job://{ref}",
            source="job",
            media_type=output.media_type,
            size=output.size,
            path=staged_job_output_path(job_id, output_name),
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

    def declared_outputs(self, job: Job) -> list[str]:
        """The output files the job's args name, by its command's contract (none if it is gone)."""
        try:
            contract = self._registry.get(job.stage, job.command)
        except NotFound:
            return []
        return declared_outputs(contract, job.args)

    def find_run(self, tenant: str, run_id: str) -> Job:
        """The job a run_id names: the client's own (reserved at submit), or one the server made."""
        unknown = NotFound(f"No run '{run_id}'.")
        job_id = job_id_of_server_run(run_id) or self._store.find_run(tenant, run_id)
        if job_id is None:
            raise unknown
        try:
            job = self._store.get(job_id, tenant=tenant)
        except NotFound as exc:
            raise unknown from exc
        if job.run_id != run_id:
            raise unknown  # a made-up id of a job that has a client's run_id
        return job

    def events(self, tenant: str, job_id: str, *, after_seq: int | None, until: float) -> EventPage:
        """The job's events after `after_seq` (None: after the latest one now), waiting for some until
        `until` (time.monotonic()); answered as soon as there are any, or the job has ended.

        `done` is true once the job has ended and its final status event has been answered. Every
        writer of an end (its worker, a cancel, the sweeper, a dead letter) writes the status event in
        the same transaction; an ended job with no status event (a record of an earlier version) is
        answered `done` FINAL_EVENT_GRACE after its end.
        """
        assert self._events is not None
        first = self._store.get(job_id, tenant=tenant)
        cursor = after_seq if after_seq is not None else self._events.last_seq(job_id)
        for job in self._polled(first, until):
            found = self._events.after(job_id, cursor, limit=EVENTS_PAGE)
            if found:
                ended = any(e.type == "status" and e.status is not None and e.status.terminal for e in found)
                return EventPage(events=found, next_after_seq=found[-1].seq, done=ended)
            if job.terminal and self._final_event_answered(job, cursor):
                return EventPage(events=[], next_after_seq=cursor, done=True)
        return EventPage(events=[], next_after_seq=cursor, done=False)

    def _final_event_answered(self, job: Job, cursor: int) -> bool:
        assert self._events is not None
        last = self._events.after(job.job_id, cursor - 1, up_to=cursor) if cursor > 0 else []
        if last and last[-1].type == "status" and last[-1].status is not None and last[-1].status.terminal:
            return True
        return job.finished_at is None or self._clock() - job.finished_at > FINAL_EVENT_GRACE

    def _polled(self, job: Job, until: float) -> Iterator[Job]:
        """The job, then read again until `until`, on the sync wait's schedule; a failed read ends it."""
        yield job
        interval = min(FIRST_SYNC_POLL_S, self._limits.sync_poll_s)
        while True:
            left = until - self._monotonic()
            if left <= 0:
                return
            self._sleep(min(interval, left))
            interval = min(interval * 1.25, self._limits.sync_poll_s)
            try:
                job = self._store.get(job.job_id)
            except StoreError as exc:
                logger.warning("event wait ends early", job_id=job.job_id, error=exc.detail)
                return
            yield job

    def list_jobs(self, tenant: str, *, status: JobStatus | None, limit: int, cursor: str | None) -> JobPage:
        return self._store.list_jobs(tenant, status=status, limit=limit, cursor=cursor)

    def cancel(self, tenant: str, job_id: str) -> Job:
        read = self._store.get(job_id, tenant=tenant)
        if read.status == JobStatus.CANCELLED:
            return read  # a cancel sent again (its first answer lost, say): the same answer
        try:
            job = ended_announced(
                self._publisher, lambda note: self._store.cancel(read, now=self._clock(), announce=note)
            )
        except InvalidTransition:
            current = self._store.get(job_id, tenant=tenant)
            if current.status == JobStatus.CANCELLED:
                return current  # cancelled meanwhile, by another request or by this one's lost answer
            raise
        if job.terminal and self._advancer is not None:  # a running job's worker announces its own end
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
        """A page of the job's outputs, each with a presigned download URL; 409 until the job ends."""
        job = self._ended(tenant, job_id)
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

    def _ended(self, tenant: str, job_id: str) -> Job:
        """The job, once it has ended: its outputs are known only then (409 before)."""
        job = self._store.get(job_id, tenant=tenant)
        if not job.terminal:
            raise JobNotEnded(
                f"Job '{job_id}' is {job.status.value}; its outputs are there once it has ended.",
                extra={"job_status": job.status.value, "status_url": f"/v1/jobs/{job_id}/status"},
            )
        return job

    def output(self, tenant: str, job_id: str, name: str) -> tuple[Job, Output]:
        """One output of an ended job, by its name (409 before the end, 404 unknown name)."""
        job = self._ended(tenant, job_id)
        output = self._catalog.find(job, name)
        if output is None:
            raise NotFound(f"Job '{job_id}' has no output '{name}'.")
        return job, output

    def output_content(self, job: Job, output: Output) -> OutputContent:
        """Its bytes when at most INLINE_OUTPUT_LIMIT, else a presigned GET; 410 once it expired."""
        key = self._output_key(job, output.name)
        gone = Gone(
            f"Output '{output.name}' of job '{job.job_id}' has expired; the retention policy removed it."
        )
        if output.size <= INLINE_OUTPUT_LIMIT:
            try:
                return OutputContent(output=output, data=self._blobs.get_bytes(key))
            except NotFound as exc:
                raise gone from exc
        if self._blobs.size(key) is None:
            raise gone
        url = self._blobs.presign_get(key, expires_s=self._presign_s, filename=output.name.rsplit("/", 1)[-1])
        return OutputContent(output=output, url=url)

    def archive_url(self, tenant: str, job_id: str) -> str:
        """The zip of every output, which the worker builds when the request asked for it."""
        job = self._ended(tenant, job_id)
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
        job = self._ended(tenant, job_id)
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


def _check_media_type(invocation: Invocation, name: str, media_type: str, what: str) -> None:
    spec = invocation.contract.param(name.split("[", 1)[0])
    accepted = spec.media_types if spec else []
    if accepted and media_type not in accepted:
        raise UnsupportedMediaType(
            f"Argument '{name}' takes {', '.join(accepted)}; {what} is {media_type}.",
            [{"loc": ["body", "args", name], "msg": f"media type {media_type} not accepted"}],
        )


def _string_args(args: dict[str, Any]) -> Iterator[str]:
    for value in args.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                yield item
