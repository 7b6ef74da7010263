"""The worker service: take one job from its message to a terminal state, exactly once."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from jobgate.adapters.blobs import BlobStore
from jobgate.adapters.dynamo import JobStore, epoch_ms
from jobgate.adapters.queue import JobQueue
from jobgate.errors import InvalidTransition, JobgateError, NotFound
from jobgate.media import guess_media_type
from jobgate.models import LOG_TAIL_BYTES, Job, JobError, JobResult, JobStatus, Output, tail, utcnow
from jobgate.observability import logger
from jobgate.services.egress import EgressPolicy
from jobgate.services.events import STAGED, STARTED, JobStream, Publisher, announce
from jobgate.services.executor import CommandRunner, ExecResult, ForkRunner, Watch
from jobgate.services.jobs import archive_key, log_key, output_key
from jobgate.services.pipelines import Advancer
from jobgate.services.registry import CommandContract, Registry, build_argv

# Time kept back from the Lambda deadline to upload logs and outputs and record the end.
FINISH_MARGIN_S = 20.0
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")

# The child's whole environment: no AWS credentials, nothing of the worker's own.
_CHILD_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "TZ", "LD_LIBRARY_PATH", "PROJ_LIB", "PROJ_DATA", "GDAL_DATA")


@dataclass(frozen=True)
class WorkerConfig:
    lease_s: int = 30
    heartbeat_s: float = 1.0
    cancel_poll_s: float = 0.25
    max_attempts: int = 3
    max_log_bytes: int = 64 * 1024 * 1024  # per stream; the stored log keeps its head and its tail
    work_root: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "jobgate")


class InputError(JobgateError):
    """An input could not be staged for a reason a retry will not fix."""


def child_environment(parent: Mapping[str, str], workdir: Path) -> dict[str, str]:
    env = {k: parent[k] for k in _CHILD_ENV_KEEP if k in parent}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(
        HOME=str(workdir), TMPDIR=str(workdir / ".tmp"), MPLBACKEND="Agg", MPLCONFIGDIR=str(workdir / ".tmp")
    )
    return env


class WorkerService:
    def __init__(
        self,
        store: JobStore,
        blobs: BlobStore,
        registry: Registry,
        config: WorkerConfig,
        *,
        clock: Callable[[], datetime] = utcnow,
        parent_env: Mapping[str, str] | None = None,
        publisher: Publisher | None = None,
        egress: EgressPolicy | None = None,
        advancer: Advancer | None = None,
        queue: JobQueue | None = None,
        runner: CommandRunner | None = None,
    ) -> None:
        self._publisher = publisher
        self._advancer = advancer
        self._queue = queue
        # The child may connect to public addresses only (plus the allow-list): fail closed by default.
        self._egress = egress if egress is not None else EgressPolicy()
        self._store = store
        self._blobs = blobs
        self._registry = registry
        self._config = config
        self._clock = clock
        self._parent_env = dict(parent_env if parent_env is not None else os.environ)
        # The deployed worker runs commands in the zygote (wiring.build_worker); forking this process
        # instead suits only command sets that exist in the caller, and shares its memory with them.
        self._runner = runner if runner is not None else ForkRunner(self._guarded_target)

    def handle(self, job_id: str, *, remaining_s: Callable[[], float]) -> Job | None:
        """Run the job if this delivery should; answer the job as it ended, or None when skipped.

        Raises when the infrastructure failed, so the message is retried; the job's lease is
        released first, so the retry can take it over at once.
        """
        job = self._claim(job_id)
        if job is None:
            return None
        attempt = job.attempts
        try:
            return self._run(job, attempt, remaining_s)
        except InvalidTransition:
            logger.warning("job taken over by another attempt", job_id=job_id, attempt=attempt)
            return None
        except Exception:
            self._store.release(job_id, attempt=attempt, now=self._clock())
            raise

    def _claim(self, job_id: str) -> Job | None:
        try:
            job = self._store.get(job_id)
        except NotFound:
            logger.warning("message for an unknown job dropped", job_id=job_id)
            return None
        now = self._clock()
        if job.terminal:
            logger.info("duplicate delivery of a finished job", job_id=job_id, status=job.status.value)
            return None
        if job.status == JobStatus.RUNNING:
            if job.lease_until is not None and job.lease_until >= epoch_ms(now):
                logger.info("job already running under a live lease", job_id=job_id, attempt=job.attempts)
                return None
            if job.attempts >= (job.max_attempts or self._config.max_attempts):
                lost = self._store.fail_unfinished(
                    job,
                    error=JobError(
                        type="worker_lost",
                        message=f"The worker running attempt {job.attempts} stopped without finishing; "
                        f"no attempts left (max {job.max_attempts or self._config.max_attempts}).",
                    ),
                    now=now,
                )
                logger.error("job failed after its last attempt was lost", job_id=job_id)
                announce(self._publisher, lost)
                self._move_on(lost)
                return None
            logger.warning("taking over a job whose worker stopped", job_id=job_id, attempt=job.attempts)
        try:
            return self._store.claim(job, now=now, lease_until=now + timedelta(seconds=self._config.lease_s))
        except InvalidTransition:
            logger.info("job claimed by another delivery", job_id=job_id)
            return None

    def _run(self, job: Job, attempt: int, remaining_s: Callable[[], float]) -> Job:
        contract = self._registry.get(job.stage, job.command)
        self._registry.command_set(contract.command_set)  # not installed here: raise before staging
        workdir = self._config.work_root / f"{job.job_id}-{attempt}"
        shutil.rmtree(workdir, ignore_errors=True)
        (workdir / ".tmp").mkdir(parents=True)
        logs = workdir.parent / f"{job.job_id}-{attempt}.logs"
        logs.mkdir(exist_ok=True)
        stream = JobStream(
            job.job_id, self._publisher, workdir=workdir, expected_outputs=_expected_outputs(job, contract)
        )
        # Published with the first progress, in one batch: fewer round trips before the command runs.
        stream.queue_status(job)
        try:
            try:
                paths, staged = self._stage_inputs(job, workdir)
            except InputError as exc:
                return self._finish(job, attempt, _failure("input", exc.detail), stream)
            stream.note(STAGED)
            job = self._heartbeat(job, attempt, progress=STAGED)  # staging may be long: renew the lease
            argv = build_argv(job.args, contract, paths)
            logger.info("job started", job_id=job.job_id, attempt=attempt, argv=argv)
            stream.milestone(STARTED)
            cancel = _CancelFlag(self._config.heartbeat_s)
            budget = max(1.0, min(float(job.timeout_s), remaining_s() - FINISH_MARGIN_S))
            result = self._runner.run(
                contract.command_set,
                argv,
                workdir=workdir,
                env=child_environment(self._parent_env, workdir),
                stdout_path=logs / "stdout",
                stderr_path=logs / "stderr",
                watch=Watch(
                    timeout_s=budget,
                    should_cancel=cancel.is_set,
                    cancel_poll_s=self._config.cancel_poll_s,
                    on_output=stream.output,
                    on_tick=lambda: self._tick(job, attempt, cancel, stream),
                    max_log_bytes=self._config.max_log_bytes,
                ),
            )
            stream.close()
            if cancel.lost:
                raise InvalidTransition(f"Job '{job.job_id}' attempt {attempt} lost its lease.")
            logger.info(
                "job exited", job_id=job.job_id, exit_code=result.exit_code, duration_s=result.duration_s
            )
            outputs = self._store_outputs(job, workdir, staged)
            archive = self._store_archive(job, workdir, outputs, logs) if job.zip_outputs else None
            stdout, stderr = self._store_logs(job, logs)
            result_ = _result(result, budget < job.timeout_s, stdout, stderr, outputs)
            result_.archive = archive
            return self._finish(job, attempt, result_, stream)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.rmtree(logs, ignore_errors=True)

    def _tick(self, job: Job, attempt: int, cancel: _CancelFlag, stream: JobStream) -> None:
        stream.tick()
        if not cancel.heartbeat_due():
            return
        try:
            cancel.update(self._heartbeat(job, attempt, progress=stream.progress))
        except InvalidTransition:
            # Another attempt owns the job now (or it ended): stop this child, write nothing.
            cancel.lost = True
        except JobgateError as exc:
            logger.warning("heartbeat failed; will retry", job_id=job.job_id, error=exc.detail)

    def dead_letter(self, job_id: str, *, receive_count: int) -> Job | None:
        """End as failed a job whose message was given up on; a finished job is left alone."""
        try:
            job = self._store.get(job_id)
        except NotFound:
            return None
        if job.terminal:
            return job
        message = f"Its message was moved to the dead-letter queue after {receive_count} deliveries."
        try:
            return self._store.fail_unfinished(
                job, error=JobError(type="dead_letter", message=message), now=self._clock()
            )
        except InvalidTransition:
            return self._store.get(job_id)

    def _guarded_target(self, command_set: str) -> Callable[[list[str]], int | None]:
        return self._egress.guarded(self._registry.command_set(command_set).run)

    def _heartbeat(self, job: Job, attempt: int, progress: float | None = None) -> Job:
        lease_until = self._clock() + timedelta(seconds=self._config.lease_s)
        return self._store.heartbeat(job.job_id, attempt=attempt, lease_until=lease_until, progress=progress)

    def _stage_inputs(self, job: Job, workdir: Path) -> tuple[dict[str, str], set[Path]]:
        paths: dict[str, str] = {}
        staged: set[Path] = set()
        for name, asset_id in job.inputs.items():
            try:
                asset = self._store.get_asset(asset_id, tenant=job.tenant)
            except NotFound as exc:
                raise InputError(f"Input '{name}': asset '{asset_id}' no longer exists.") from exc
            filename = _SAFE_NAME.sub("_", Path(asset.filename).name).lstrip(".") or "input"
            relative = Path("inputs") / asset_id / filename
            target = workdir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._blobs.download_file(asset.key, target)
            except NotFound as exc:
                raise InputError(f"Input '{name}': the file of asset '{asset_id}' is gone.") from exc
            paths[name] = str(relative)
            staged.add(target)
        upstream_ids = sorted({ref.split("/", 1)[0] for ref in job.upstream.values()})
        upstream = self._store.get_many(upstream_ids) if upstream_ids else {}
        for name, ref in job.upstream.items():
            paths[name] = self._stage_upstream(job, name, ref, upstream, workdir, staged)
        return paths, staged

    def _stage_upstream(
        self, job: Job, name: str, ref: str, jobs: Mapping[str, Job], workdir: Path, staged: set[Path]
    ) -> str:
        """Fetch what a pipeline step reads from an earlier step: one output, or a folder of them."""
        upstream_id, _, path = ref.partition("/")
        wanted = path.strip("/")
        if upstream_id not in jobs:
            raise InputError(f"Input '{name}': the step it reads from no longer exists.")
        upstream = jobs[upstream_id]
        base = Path("inputs") / (upstream.step or upstream_id)
        matches = [
            o for o in upstream.outputs if not wanted or o.name == wanted or o.name.startswith(f"{wanted}/")
        ]
        if not matches:
            raise InputError(f"Input '{name}': step '{upstream.step}' wrote no '{wanted or '*'}'.")
        for output in matches:
            target = workdir / base / output.name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._blobs.download_file(output_key(job.tenant, upstream_id, output.name), target)
            except NotFound as exc:
                raise InputError(
                    f"Input '{name}': output '{output.name}' of step '{upstream.step}' is gone."
                ) from exc
            staged.add(target)
        return str(base / wanted) if wanted else str(base)

    def _store_outputs(self, job: Job, workdir: Path, staged: set[Path]) -> list[Output]:
        outputs: list[Output] = []
        for path in sorted(workdir.rglob("*")):
            relative = path.relative_to(workdir)
            # Symlinks are never followed: a command could point one anywhere on the worker.
            if path in staged or path.is_symlink() or not path.is_file() or relative.parts[0] == ".tmp":
                continue
            media_type = guess_media_type(path)
            name = relative.as_posix()
            self._blobs.upload_file(path, output_key(job.tenant, job.job_id, name), media_type)
            outputs.append(
                Output(name=name, size=path.stat().st_size, media_type=media_type, sha256=_sha256(path))
            )
        return outputs

    def _store_archive(self, job: Job, workdir: Path, outputs: list[Output], scratch: Path) -> Output | None:
        """One zip of every output, built here so the client downloads one file."""
        if not outputs:
            return None
        path = scratch / "outputs.zip"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for output in outputs:
                archive.write(workdir / output.name, arcname=output.name)
        self._blobs.upload_file(path, archive_key(job.tenant, job.job_id), "application/zip")
        return Output(
            name=f"{job.job_id}.zip",
            size=path.stat().st_size,
            media_type="application/zip",
            sha256=_sha256(path),
        )

    def _store_logs(self, job: Job, logs: Path) -> tuple[str, str]:
        """Upload each whole log from disk (never read whole into memory); answer their tails."""
        tails = []
        for stream in ("stdout", "stderr"):
            path = logs / stream
            path.touch()
            self._blobs.upload_file(
                path, log_key(job.tenant, job.job_id, stream), "text/plain; charset=utf-8"
            )
            with path.open("rb") as fh:
                fh.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
                tails.append(tail(fh.read()))
        return tails[0], tails[1]

    def _finish(self, job: Job, attempt: int, result: JobResult, stream: JobStream) -> Job:
        if self._retriable(job, attempt, result):
            again = self._store.requeue(job, attempt=attempt)
            assert self._queue is not None
            self._queue.send(job.job_id, job.tenant, delay_s=min(60, 2**attempt))
            logger.info(
                "job failed and will run again",
                job_id=job.job_id,
                attempt=attempt,
                exit_code=result.exit_code,
            )
            stream.status(again)
            return again
        done = self._store.finish(job, attempt=attempt, result=result, now=self._clock())
        logger.info("job finished", job_id=job.job_id, status=done.status.value, exit_code=done.exit_code)
        stream.status(done)
        self._move_on(done)
        return done

    def _retriable(self, job: Job, attempt: int, result: JobResult) -> bool:
        """Only a non-zero exit the request asked to retry, while attempts are left."""
        if self._queue is None or not job.retry_on_exit or result.status != JobStatus.FAILED:
            return False
        if result.error is None or result.error.type not in ("exit", "signal"):
            return False
        return attempt < (job.max_attempts or 1)

    def _move_on(self, job: Job) -> None:
        if self._advancer is None or job.pipeline_id is None:
            return
        try:
            self._advancer.advance(job)
        except JobgateError as exc:
            # The sweeper moves a pipeline on later if this fails now.
            logger.warning("could not move the pipeline on", job_id=job.job_id, error=exc.detail)


class _CancelFlag:
    """What the heartbeats learn: a cancel request, or that another attempt took the job."""

    def __init__(self, heartbeat_s: float) -> None:
        self._set = False
        self.lost = False
        self._every = heartbeat_s
        self._last = time.monotonic()

    def heartbeat_due(self) -> bool:
        if time.monotonic() - self._last < self._every:
            return False
        self._last = time.monotonic()
        return True

    def update(self, job: Job) -> None:
        self._set = self._set or job.cancel_requested

    def is_set(self) -> bool:
        return self._set or self.lost


def _expected_outputs(job: Job, contract: CommandContract) -> int:
    """How many files a multi-file command will write: one per input, or one per output name."""
    counts = [
        len(job.args[p.dest])
        for p in contract.params
        if p.multiple
        and isinstance(job.args.get(p.dest), list)
        and (p.role == "input" or p.dest == "output_names")
    ]
    return max(counts, default=0)


def _failure(kind: str, message: str) -> JobResult:
    return JobResult(
        status=JobStatus.FAILED,
        exit_code=None,
        stdout_tail="",
        stderr_tail="",
        error=JobError(type=kind, message=message),
    )


def _result(
    run: ExecResult, cut_by_deadline: bool, stdout: str, stderr: str, outputs: list[Output]
) -> JobResult:
    error: JobError | None = None
    if run.cancelled:
        status, error = (
            JobStatus.CANCELLED,
            JobError(type="cancelled", message="Cancelled while running; killed."),
        )
    elif run.timed_out:
        why = "the worker's time limit" if cut_by_deadline else "its timeout_s"
        status = JobStatus.TIMED_OUT
        error = JobError(type="timeout", message=f"Killed after {run.duration_s:.1f} s: it ran past {why}.")
    elif run.signal is not None:
        status = JobStatus.FAILED
        error = JobError(
            type="signal", message=f"The command was killed by {run.signal_name} (exit {run.exit_code})."
        )
    elif run.exit_code != 0:
        status = JobStatus.FAILED
        error = JobError(type="exit", message=f"The command exited with code {run.exit_code}.")
    else:
        status = JobStatus.SUCCEEDED
    return JobResult(
        status=status,
        exit_code=run.exit_code,
        stdout_tail=stdout,
        stderr_tail=stderr,
        error=error,
        outputs=outputs,
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
