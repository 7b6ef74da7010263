"""The worker service: take one job from its message to a terminal state, exactly once."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from jobgate import observability as obs
from jobgate.adapters.blobs import BlobStore
from jobgate.adapters.dynamo import JobStore, epoch_ms
from jobgate.adapters.queue import JobQueue
from jobgate.errors import Gone, InvalidTransition, JobgateError, NotFound, SecretUnavailable
from jobgate.media import guess_media_type
from jobgate.models import LOG_TAIL_BYTES, Job, JobError, JobEvent, JobResult, JobStatus, Output, tail, utcnow
from jobgate.observability import logger
from jobgate.services.dispatch import dispatch
from jobgate.services.egress import EgressPolicy
from jobgate.services.events import (
    STAGED,
    STARTED,
    AttemptLog,
    JobStream,
    Publisher,
    announce,
    ended_announced,
)
from jobgate.services.executor import CommandRunner, ExecResult, ForkRunner, Watch
from jobgate.services.jobs import archive_key, log_key, manifest_key, output_key, staged_asset_path
from jobgate.services.maps import CHUNKS_DIR, MapStore, chunk_output_name
from jobgate.services.outputs import OutputCatalog
from jobgate.services.pipelines import Advancer
from jobgate.services.registry import CommandContract, ParamSpec, Registry, build_argv
from jobgate.services.secrets import CommandSecrets, masked_parts

# Reads and conditional writes a claim (or a dead letter) tries while the job moves under it.
_CLAIM_ROUNDS = 3
# Time kept back from the Lambda deadline, when the command starts, to upload logs and outputs and
# record the end.
FINISH_MARGIN_S = 20.0
# Time kept back from the deadline for the last write (the terminal status) once the uploads run.
RECORD_MARGIN_S = 5.0

# The child's whole environment: no AWS credentials, nothing of the worker's own.
_CHILD_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "TZ", "LD_LIBRARY_PATH", "PROJ_LIB", "PROJ_DATA", "GDAL_DATA")


@dataclass(frozen=True)
class WorkerConfig:
    lease_s: int = 30
    # How often, between renewals of the lease, the attempt reads its job (a strongly consistent read of
    # four attributes, cheaper than a write by the job's size and its index copies): how soon a cancel
    # request, a take-over or a new subscriber is learned.
    pulse_s: float = 1.0
    # How often the running command's supervisor looks at the cancel flag (a read, never a call).
    cancel_poll_s: float = 0.25
    max_attempts: int = 3
    max_log_bytes: int = 64 * 1024 * 1024  # per stream; the stored log keeps its head and its tail
    work_root: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "jobgate")

    @property
    def renew_every_s(self) -> float:
        """A third of the lease: two renewals can fail before it runs out."""
        return max(0.05, self.lease_s / 3)

    @property
    def pulse_every_s(self) -> float:
        return max(0.05, min(self.pulse_s, self.renew_every_s))


class InputError(JobgateError):
    """An input could not be staged for a reason a retry will not fix."""


class OutOfTime(JobgateError):
    """A phase of the attempt (staging, uploads) would run past the worker's deadline."""


class LeaseLost(InvalidTransition):
    """This attempt no longer holds its job: another attempt took it over, the job ended, or the lease
    ran out while it could not be renewed."""

    def __init__(self, detail: str, *, taken_over: bool) -> None:
        super().__init__(detail)
        self.taken_over = taken_over


class Lease:
    """Keeps one attempt's lease alive from claim to finish, on a thread of its own.

    Staging, the command and the uploads all run under it, so no phase of an attempt can outlast its
    lease while the worker is still working, and a slow renewal never delays the command's timeout or
    cancel. It also carries the job's progress to the record and learns of a cancel request. When it
    cannot renew before the lease would run out (the table unreachable), the attempt counts as lost:
    another worker may take the job over, so this one must stop and write nothing more.
    """

    def __init__(
        self,
        store: JobStore,
        job: Job,
        attempt: int,
        *,
        lease_s: int,
        every_s: float,
        clock: Callable[[], datetime],
        progress: Callable[[], float | None] = lambda: None,
        pulse_every_s: float | None = None,
        on_watchers: Callable[[int], None] = lambda _: None,
    ) -> None:
        self._store = store
        self._job_id = job.job_id
        self._attempt = attempt
        self._lease = timedelta(seconds=lease_s)
        self._every_s = every_s
        self._pulse_s = min(every_s, pulse_every_s if pulse_every_s is not None else every_s)
        self._on_watchers = on_watchers
        self._clock = clock
        self._progress = progress
        self._held_until = job.lease_until or epoch_ms(clock() + self._lease)
        self._cancel = job.cancel_requested
        self._lost: str | None = None
        self._taken_over = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, name=f"lease-{job.job_id}", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel

    @property
    def lost(self) -> bool:
        return self._lost is not None

    def should_stop(self) -> bool:
        """What the command's supervisor asks: a flag read, never a call to AWS."""
        return self._cancel or self._lost is not None

    def check(self) -> None:
        """Raise LeaseLost when the attempt may no longer write anything."""
        if self._lost is not None:
            raise LeaseLost(self._lost, taken_over=self._taken_over)

    def _keep(self) -> None:
        renew_at = time.monotonic() + self._every_s
        while not self._stop.wait(max(0.0, min(self._pulse_s, renew_at - time.monotonic()))):
            if time.monotonic() >= renew_at:
                self.renew()
                renew_at = time.monotonic() + self._every_s
            else:
                self.pulse()
            if self._lost is not None:
                return

    def pulse(self) -> None:
        """Between renewals: learn a cancel request, a take-over and the job's subscribers by a read."""
        try:
            pulse = self._store.pulse(self._job_id)
        except JobgateError as exc:
            logger.info("job pulse failed", job_id=self._job_id, error=exc.detail)
            return  # the renewals decide whether the lease still holds
        if pulse is None or pulse.status != JobStatus.RUNNING or pulse.attempts != self._attempt:
            self._taken_over = True
            self._lost = f"Job '{self._job_id}' attempt {self._attempt} was taken over or ended."
            return
        self._cancel = self._cancel or pulse.cancel_requested
        self._on_watchers(pulse.watchers)

    def renew(self) -> None:
        until = self._clock() + self._lease
        try:
            job = self._store.heartbeat(
                self._job_id, attempt=self._attempt, lease_until=until, progress=self._progress()
            )
        except InvalidTransition:
            self._taken_over = True
            self._lost = f"Job '{self._job_id}' attempt {self._attempt} was taken over or ended."
        except JobgateError as exc:
            left_ms = self._held_until - epoch_ms(self._clock())
            logger.warning("lease renewal failed", job_id=self._job_id, error=exc.detail, left_ms=left_ms)
            if left_ms <= self._every_s * 1000:
                self._lost = f"Job '{self._job_id}' attempt {self._attempt} could not renew its lease."
        else:
            self._held_until = epoch_ms(until)
            self._cancel = self._cancel or job.cancel_requested
            self._on_watchers(job.watchers)


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
        secrets: CommandSecrets | None = None,
    ) -> None:
        self._secrets = secrets if secrets is not None else CommandSecrets({})
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
        self._catalog = OutputCatalog(blobs)
        # The deployed worker runs commands in the zygote (wiring.build_worker); forking this process
        # instead suits only command sets that exist in the caller, and shares its memory with them.
        self._runner = runner if runner is not None else ForkRunner(self._guarded_target)

    def handle(
        self, job_id: str, *, remaining_s: Callable[[], float], tenant: str | None = None
    ) -> Job | None:
        """Run the job if this delivery should; answer the job as it ended, or None when skipped.

        `tenant` is the one the message names (older messages name none). Raises when the
        infrastructure failed, so the message is retried; the job's lease is released first, so the
        retry can take it over at once.
        """
        job = self._claim(job_id, tenant)
        if job is None:
            return None
        attempt = job.attempts
        logger.append_keys(job_id=job_id, tenant=job.tenant, attempt=attempt)  # on every line that follows
        try:
            return self._run(job, attempt, remaining_s)
        except LeaseLost as exc:
            if not exc.taken_over:
                raise  # the table is unreachable: let the message come back
            logger.warning("job taken over by another attempt", job_id=job_id, attempt=attempt)
            return None
        except InvalidTransition:
            logger.warning("job taken over by another attempt", job_id=job_id, attempt=attempt)
            return None
        except Exception:
            self._store.release(job_id, attempt=attempt, now=self._clock())
            raise

    def prepare(self) -> None:
        """At cold start: remove what an earlier runtime left in the work folder (killed by a timeout
        or out of memory, it never reached its own clean-up)."""
        root = self._config.work_root
        if root.is_dir():
            for entry in root.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    def _claim(self, job_id: str, tenant: str | None) -> Job | None:
        """The job, claimed for this delivery; None when it must not run here (ended, held, cancelled).

        The claim is written first, without reading the job: it holds for a queued job, or a running
        one whose lease ran out while attempts are left, and never for one whose cancel was asked. When
        it misses, DynamoDB answers the job as it is, and what to do is decided from that (as for a
        job read first): end it, leave it, or claim it as read.
        """
        now = self._clock()
        try:
            if tenant is None:  # a message from before messages named their tenant
                job = self._store.get(job_id)
            else:
                claimed = self._store.claim_delivered(
                    job_id,
                    tenant=tenant,
                    now=now,
                    lease_until=now + timedelta(seconds=self._config.lease_s),
                    max_attempts=self._config.max_attempts,
                )
                if claimed.attempts > 1:
                    logger.warning("job claimed again", job_id=job_id, attempt=claimed.attempts)
                return claimed
        except NotFound:
            logger.warning("message for an unknown job dropped", job_id=job_id)
            return None
        except InvalidTransition as exc:
            if exc.current is None:
                raise
            job = exc.current
        for _ in range(_CLAIM_ROUNDS):
            try:
                return self._claim_as_read(job)
            except InvalidTransition as exc:
                # It moved meanwhile (claimed, cancelled, ended): the refusal says how it is now.
                job = exc.current if exc.current is not None else self._store.get(job_id)
        logger.info("job claimed by another delivery", job_id=job_id)
        return None

    def _claim_as_read(self, job: Job) -> Job | None:
        now = self._clock()
        if job.terminal:
            logger.info("duplicate delivery of a finished job", job_id=job.job_id, status=job.status.value)
            return None
        live = job.lease_until is not None and job.lease_until >= epoch_ms(now)
        if job.status == JobStatus.RUNNING and live:
            logger.info("job already running under a live lease", job_id=job.job_id, attempt=job.attempts)
            return None
        if job.cancel_requested:
            # Its cancel was asked, and the worker that should have killed it is gone (or it was
            # re-queued meanwhile): end it cancelled; running it again would repeat what it did.
            self._end(job, _cancelled(job, "Cancelled; its worker stopped before it could end the job."), now)
            return None
        if job.status == JobStatus.RUNNING:
            most = job.max_attempts or self._config.max_attempts
            if job.attempts >= most:
                message = (
                    f"The worker running attempt {job.attempts} stopped without finishing; "
                    f"no attempts left (max {most})."
                )
                self._end(job, _failure("worker_lost", message, job), now)
                logger.error("job failed after its last attempt was lost", job_id=job.job_id)
                obs.emit(obs.JOBS_WORKER_LOST)
                return None
            logger.warning("taking over a job whose worker stopped", job_id=job.job_id, attempt=job.attempts)
        return self._store.claim(job, now=now, lease_until=now + timedelta(seconds=self._config.lease_s))

    def _end(self, job: Job, result: JobResult, now: datetime) -> Job:
        """End a job nobody runs, if it is still as read; announce it and move its pipeline on."""
        done = ended_announced(
            self._publisher, lambda note: self._store.end_unfinished(job, result, now=now, announce=note)
        )
        obs.job_finished(done.status.value, None)  # no command ran: counted by status only
        self._move_on(done)
        return done

    def _run(self, job: Job, attempt: int, remaining_s: Callable[[], float]) -> Job:
        contract = self._registry.get(job.stage, job.command)
        self._registry.command_set(contract.command_set)  # not installed here: raise before staging
        deadline = time.monotonic() + remaining_s()
        workdir = self._config.work_root / f"{job.job_id}-{attempt}"
        shutil.rmtree(workdir, ignore_errors=True)
        (workdir / ".tmp").mkdir(parents=True)
        logs = workdir.parent / f"{job.job_id}-{attempt}.logs"
        logs.mkdir(exist_ok=True)
        # The stream holds the attempt's events; its log writes them off the job's path (AttemptLog).
        stream = JobStream(
            job.job_id, None, workdir=workdir, expected_outputs=_expected_outputs(job, contract)
        )
        stream.queue_status(job)
        log = (
            AttemptLog(
                self._store, self._publisher.events, self._publisher, stream, job, attempt, clock=self._clock
            )
            if self._publisher is not None
            else None
        )
        lease = Lease(
            self._store,
            job,
            attempt,
            lease_s=self._config.lease_s,
            every_s=self._config.renew_every_s,
            pulse_every_s=self._config.pulse_every_s,
            clock=self._clock,
            progress=lambda: stream.progress,
            on_watchers=log.note_watchers if log is not None else lambda _: None,
        )
        attempt_run = _Attempt(job, attempt, contract, workdir, logs, stream, lease, deadline, log)
        try:
            if log is not None:
                log.start()
            with lease:
                return self._attempt(attempt_run)
        finally:
            if log is not None:
                log.close()
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.rmtree(logs, ignore_errors=True)

    def _attempt(self, a: _Attempt) -> Job:
        job, stream, lease = a.job, a.stream, a.lease
        try:
            # After staging, the command needs the finish margin and at least a second to run.
            paths, staged = self._stage_inputs(job, a.workdir, lease, a.deadline - FINISH_MARGIN_S - 1.0)
        except InputError as exc:
            return self._finish(a, _failure("input", exc.detail))
        except OutOfTime as exc:
            return self._finish(a, _out_of_time(exc.detail))
        stream.note(STAGED)
        try:
            # Read now, for this command's child only; never logged, never on the record.
            secrets = self._secrets.resolve(a.contract.secrets)
        except SecretUnavailable as exc:
            return self._finish(a, _failure("secret", exc.detail))
        argv = build_argv(job.args, a.contract, paths)
        logger.info("job started", job_id=job.job_id, attempt=a.attempt, argv=argv, secrets=sorted(secrets))
        stream.milestone(STARTED)
        command_set = a.contract.command_set
        obs.emit(obs.JOBS_STARTED, command_set=command_set)
        obs.seconds(obs.QUEUE_WAIT, (self._clock() - job.created_at).total_seconds(), command_set=command_set)
        budget = max(1.0, min(float(job.timeout_s), a.deadline - time.monotonic() - FINISH_MARGIN_S))
        run = self._runner.run(
            a.contract.command_set,
            argv,
            workdir=a.workdir,
            env={**child_environment(self._parent_env, a.workdir), **secrets},
            stdout_path=a.logs / "stdout",
            stderr_path=a.logs / "stderr",
            watch=Watch(
                timeout_s=budget,
                should_cancel=lease.should_stop,
                cancel_poll_s=self._config.cancel_poll_s,
                on_output=stream.output,
                on_tick=stream.tick,
                max_log_bytes=self._config.max_log_bytes,
                redact=tuple(masked_parts(secrets.values())),
            ),
        )
        stream.close()
        lease.check()
        logger.info("job exited", job_id=job.job_id, exit_code=run.exit_code, duration_s=run.duration_s)
        a.timing.command_s = run.duration_s
        upload_by = a.deadline - RECORD_MARGIN_S
        try:
            stdout, stderr = self._store_logs(a, upload_by)
            outputs = self._store_outputs(a, staged, upload_by)
            archive = self._store_archive(a, outputs, upload_by) if job.zip_outputs else None
        except OutOfTime as exc:
            return self._finish(a, _out_of_time(exc.detail))
        result = _result(run, budget < job.timeout_s, stdout, stderr, outputs, a.contract.partial_exit_codes)
        result.archive = archive
        if result.status == JobStatus.SUCCEEDED:
            missing = missing_outputs(job.args, a.contract, a.workdir)
            if missing:
                result.status = JobStatus.FAILED
                result.error = JobError(type="missing_output", message=_missing_message(missing))
        return self._finish(a, result)

    def dead_letter(self, job_id: str, *, receive_count: int) -> Job | None:
        """End as failed a job whose message was given up on, announced and its pipeline moved on.

        A finished job, or one a worker runs under a live lease (the message was a duplicate), is
        left alone.
        """
        try:
            job = self._store.get(job_id)
        except NotFound:
            return None
        message = f"Its message was moved to the dead-letter queue after {receive_count} deliveries."
        for _ in range(_CLAIM_ROUNDS):
            now = self._clock()
            if job.terminal or job.status == JobStatus.BLOCKED:
                return job  # a blocked step waits for its upstream, whatever happened to a stray message
            if job.status == JobStatus.RUNNING and (job.lease_until or 0) >= epoch_ms(now):
                logger.warning("dead letter of a job running under a live lease; left to it", job_id=job_id)
                return job
            try:
                done = self._end(job, _failure("dead_letter", message, job), now)
                obs.emit(obs.JOBS_DEAD_LETTERED)
                return done
            except InvalidTransition:
                job = self._store.get(job_id)
        return job

    def _guarded_target(self, command_set: str) -> Callable[[list[str]], int | None]:
        return self._egress.guarded(self._registry.command_set(command_set).run)

    def _stage_inputs(
        self, job: Job, workdir: Path, lease: Lease, stage_by: float
    ) -> tuple[dict[str, str], set[Path]]:
        paths: dict[str, str] = {}
        staged: set[Path] = set()
        for name, asset_id in job.inputs.items():
            _in_time(stage_by, lease, "Staging the inputs")
            # The API recorded where the file is when it checked the asset; older jobs, and jobs with
            # many inputs, have the asset read here. The file name is the key's last part.
            recorded = job.input_objects.get(asset_id)
            if recorded is not None:
                key, size = recorded.key, recorded.size
            else:
                try:
                    asset = self._store.get_asset(asset_id, tenant=job.tenant)
                except NotFound as exc:
                    raise InputError(f"Input '{name}': asset '{asset_id}' no longer exists.") from exc
                key, size = asset.key, asset.size
            relative = Path(staged_asset_path(asset_id, PurePosixPath(key).name))
            target = workdir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._blobs.fetch(key, target, size)
            except NotFound as exc:
                raise InputError(f"Input '{name}': the file of asset '{asset_id}' is gone.") from exc
            paths[name] = str(relative)
            staged.add(target)
        upstream_ids = sorted({ref.split("/", 1)[0] for ref in job.upstream.values()})
        upstream = self._store.get_many(upstream_ids) if upstream_ids else {}
        for name, ref in job.upstream.items():
            _in_time(stage_by, lease, "Staging the inputs")
            paths[name] = self._stage_upstream(job, name, ref, upstream, workdir, staged)
        if job.merge_of is not None:
            self._stage_chunks(job, workdir, staged, lambda: _in_time(stage_by, lease, "Staging the chunks"))
        _in_time(stage_by, lease, "Staging the inputs")
        return paths, staged

    def _stage_chunks(self, job: Job, workdir: Path, staged: set[Path], in_time: Callable[[], None]) -> None:
        """A map's merge reads every succeeded chunk's outputs, in one folder, named in chunk order."""
        assert job.merge_of is not None
        maps = MapStore(self._store)
        record = maps.find(job.merge_of)
        if record is None:
            raise InputError(f"The map this merge reads ({job.merge_of}) no longer exists.")
        folder = workdir / CHUNKS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        for start in range(0, record.count, 100):
            chunks = maps.chunks(record, start, start + 100)
            for n in sorted(chunks):
                chunk = chunks[n]
                if chunk.status != JobStatus.SUCCEEDED:
                    continue
                try:
                    written = self._catalog.every(chunk)
                except Gone as exc:
                    raise InputError(f"The outputs of chunk {n} are gone.") from exc
                for output in written:
                    in_time()
                    target = folder / chunk_output_name(n, output.name)
                    key = output_key(job.tenant, chunk.job_id, chunk.attempts, output.name)
                    try:
                        self._blobs.download_file(key, target)
                    except NotFound as exc:
                        raise InputError(f"Output '{output.name}' of chunk {n} is gone.") from exc
                    staged.add(target)

    def _stage_upstream(
        self, job: Job, name: str, ref: str, jobs: Mapping[str, Job], workdir: Path, staged: set[Path]
    ) -> str:
        """Fetch what a job reads from an earlier one: a pipeline step's output (or a folder of them), or
        the output a `job://<job_id>/<name>` input names."""
        upstream_id, _, path = ref.partition("/")
        wanted = path.strip("/")
        if upstream_id not in jobs:
            raise InputError(f"Input '{name}': the job it reads from ({upstream_id}) no longer exists.")
        upstream = jobs[upstream_id]
        # A step of the same pipeline is staged under its step name (the same place in every step);
        # any other job under its id (staged_job_output_path), so no two can collide.
        own_step = upstream.pipeline_id is not None and upstream.pipeline_id == job.pipeline_id
        what = f"step '{upstream.step}'" if own_step else f"job '{upstream_id}'"
        base = Path("inputs") / (upstream.step if own_step and upstream.step else upstream_id)
        try:
            written = self._catalog.every(upstream)
        except Gone as exc:
            raise InputError(f"Input '{name}': the outputs of {what} are gone.") from exc
        matches = [o for o in written if not wanted or o.name == wanted or o.name.startswith(f"{wanted}/")]
        if not matches:
            raise InputError(f"Input '{name}': {what} wrote no '{wanted or '*'}'.")
        for output in matches:
            target = workdir / base / output.name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                key = output_key(job.tenant, upstream_id, upstream.attempts, output.name)
                self._blobs.download_file(key, target)
            except NotFound as exc:
                raise InputError(f"Input '{name}': output '{output.name}' of {what} is gone.") from exc
            staged.add(target)
        return str(base / wanted) if wanted else str(base)

    def _store_outputs(self, a: _Attempt, staged: set[Path], upload_by: float) -> list[Output]:
        job = a.job
        outputs: list[Output] = []
        for path in sorted(a.workdir.rglob("*")):
            relative = path.relative_to(a.workdir)
            # Symlinks are never followed: a command could point one anywhere on the worker.
            if path in staged or path.is_symlink() or not path.is_file() or relative.parts[0] == ".tmp":
                continue
            _in_time(upload_by, a.lease, "Uploading the outputs")
            media_type = guess_media_type(path)
            name = relative.as_posix()
            self._blobs.upload_file(path, output_key(job.tenant, job.job_id, a.attempt, name), media_type)
            outputs.append(
                Output(name=name, size=path.stat().st_size, media_type=media_type, sha256=_sha256(path))
            )
        return outputs

    def _store_archive(self, a: _Attempt, outputs: list[Output], upload_by: float) -> Output | None:
        """One zip of every output, built here so the client downloads one file."""
        if not outputs:
            return None
        path = a.logs / "outputs.zip"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for output in outputs:
                archive.write(a.workdir / output.name, arcname=output.name)
        _in_time(upload_by, a.lease, "Uploading the outputs")
        job = a.job
        self._blobs.upload_file(path, archive_key(job.tenant, job.job_id, a.attempt), "application/zip")
        return Output(
            name=f"{job.job_id}.zip",
            size=path.stat().st_size,
            media_type="application/zip",
            sha256=_sha256(path),
        )

    def _store_logs(self, a: _Attempt, upload_by: float) -> tuple[str, str]:
        """Answer each log's tail, which the job record keeps; upload the whole log from disk (never
        read whole into memory) only when the tail is not all of it. A log that fits the record (empty,
        or a few lines) gets no object: the logs endpoint answers the record's text for it."""
        job = a.job
        tails = []
        for stream in ("stdout", "stderr"):
            path = a.logs / stream
            path.touch()
            size = path.stat().st_size
            with path.open("rb") as fh:
                fh.seek(max(0, size - LOG_TAIL_BYTES))
                end = fh.read()
            tails.append(tail(end))
            if size == len(end) and tails[-1] == end.decode("utf-8", errors="replace"):
                continue  # the record holds the whole log
            _in_time(upload_by, a.lease, "Uploading the logs")
            key = log_key(job.tenant, job.job_id, a.attempt, stream)
            self._blobs.upload_file(path, key, "text/plain; charset=utf-8")
        return tails[0], tails[1]

    def _finish(self, a: _Attempt, result: JobResult) -> Job:
        job, attempt, stream = a.job, a.attempt, a.stream
        retry = self._retriable(job, attempt, result)
        if not retry:
            a.lease.check()
            result = self._recorded(job, attempt, result)  # a manifest is written under the lease
        # The renewals stop before the last write: the conditional write decides, not the lease.
        if a.log is not None:
            a.log.close()
        a.lease.stop()
        a.lease.check()
        if retry:
            if a.log is not None:
                a.log.flush()  # the attempt's events, before the job is queued again
            again = self._store.requeue(job, attempt=attempt, now=self._clock())
            assert self._queue is not None
            dispatch(self._store, self._queue, again, self._clock, delay_s=min(60, 2**attempt))
            logger.info(
                "job failed and will run again",
                job_id=job.job_id,
                attempt=attempt,
                exit_code=result.exit_code,
            )
            announce(self._publisher, again)
            obs.emit(obs.JOBS_RETRIED, command_set=a.contract.command_set)
            return again
        if a.log is None:
            done = self._store.finish(job, attempt=attempt, result=result, now=self._clock())
        else:
            # The end carries the attempt's last events, its status last: one write, and the log is
            # whole before anyone can read that the job ended.
            ended = JobEvent(
                type="status",
                job_id=job.job_id,
                status=result.status,
                exit_code=result.exit_code,
                error=result.error,
            )
            done = a.log.finish(
                stream.closing(ended),
                lambda events: self._store.finish(
                    job.model_copy(
                        update={"cancel_requested": a.lease.cancel_requested, "progress": stream.progress}
                    ),
                    attempt=attempt,
                    result=result,
                    now=self._clock(),
                    events=events,
                ),
            )
        logger.info("job finished", job_id=job.job_id, status=done.status.value, exit_code=done.exit_code)
        self._measure(a, done)
        self._move_on(done)
        return done

    @staticmethod
    def _measure(a: _Attempt, done: Job) -> None:
        """The attempt's end in metrics: its status, the command's run time and what the worker added
        around it (claim to end, less the command: staging, uploads, records)."""
        command_set = a.contract.command_set
        obs.job_finished(done.status.value, command_set)
        command_s = a.timing.command_s or 0.0
        if a.timing.command_s is not None:
            obs.seconds(obs.RUN_TIME, command_s, command_set=command_set)
        overhead_s = time.monotonic() - a.timing.claimed - command_s
        obs.seconds(obs.WORKER_OVERHEAD, overhead_s, command_set=command_set)

    def _recorded(self, job: Job, attempt: int, result: JobResult) -> JobResult:
        """The result as the job record keeps it: too many outputs go to a manifest, written first."""
        recorded = self._catalog.record(
            job.job_id, attempt, result.outputs, manifest_key=manifest_key(job.tenant, job.job_id, attempt)
        )
        return result.model_copy(
            update={
                "outputs": recorded.page,
                "output_count": recorded.count,
                "outputs_manifest": recorded.manifest,
            }
        )

    def _retriable(self, job: Job, attempt: int, result: JobResult) -> bool:
        """Only a non-zero exit the request asked to retry, while attempts are left."""
        if self._queue is None or not job.retry_on_exit or result.status != JobStatus.FAILED:
            return False
        if result.error is None or result.error.type not in ("exit", "signal"):
            return False
        return attempt < (job.max_attempts or 1)

    def _move_on(self, job: Job) -> None:
        if self._advancer is None or not (job.pipeline_id or job.map_id or job.merge_of):
            return
        try:
            self._advancer.advance(job)
        except JobgateError as exc:
            # The sweeper moves a pipeline or a map on later if this fails now.
            logger.warning("could not move the pipeline or map on", job_id=job.job_id, error=exc.detail)


@dataclass(frozen=True)
class _Attempt:
    """One attempt at a job, as the phases of `_run` share it."""

    job: Job
    attempt: int
    contract: CommandContract
    workdir: Path
    logs: Path
    stream: JobStream
    lease: Lease
    deadline: float  # time.monotonic() at which the Lambda invocation ends
    log: AttemptLog | None = None
    timing: _Timing = field(default_factory=lambda: _Timing())


@dataclass
class _Timing:
    """When the attempt was claimed (time.monotonic()) and how long its command ran, once it has."""

    claimed: float = field(default_factory=time.monotonic)
    command_s: float | None = None


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


def _failure(kind: str, message: str, job: Job | None = None) -> JobResult:
    """A failure; for a job that ran before, what its last attempt left on the record is kept."""
    return JobResult(
        status=JobStatus.FAILED,
        exit_code=job.exit_code if job else None,
        stdout_tail=job.stdout if job else "",
        stderr_tail=job.stderr if job else "",
        error=JobError(type=kind, message=message),
    )


def _cancelled(job: Job, message: str) -> JobResult:
    return JobResult(
        status=JobStatus.CANCELLED,
        exit_code=job.exit_code,
        stdout_tail=job.stdout,
        stderr_tail=job.stderr,
        error=JobError(type="cancelled", message=message),
    )


def _result(
    run: ExecResult,
    cut_by_deadline: bool,
    stdout: str,
    stderr: str,
    outputs: list[Output],
    partial_exit_codes: list[int] | None = None,
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
    elif run.exit_code != 0 and run.exit_code not in (partial_exit_codes or []):
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


def _in_time(by: float, lease: Lease, what: str) -> None:
    """Before each transfer: stop when the attempt lost its job, or when the transfer would start too
    late to be recorded before the worker's deadline."""
    lease.check()
    if time.monotonic() >= by:
        raise OutOfTime(f"{what} did not finish within the worker's time limit.")


def _out_of_time(message: str) -> JobResult:
    return JobResult(
        status=JobStatus.TIMED_OUT,
        exit_code=None,
        stdout_tail="",
        stderr_tail="",
        error=JobError(type="timeout", message=message),
    )


def missing_outputs(
    args: Mapping[str, Any], contract: CommandContract, workdir: Path
) -> list[tuple[ParamSpec, str]]:
    """The declared outputs a command left unwritten: a file that does not exist, or a folder with no
    file in it. Outputs the contract marks optional are not asked for."""
    missing: list[tuple[ParamSpec, str]] = []
    for spec in contract.params:
        if spec.role not in ("output", "output_dir") or spec.optional:
            continue
        value = args.get(spec.dest)
        if value is None or value is False:
            continue
        for path in value if isinstance(value, list) else [value]:
            target = workdir / str(path)
            if spec.role == "output":
                written = target.is_file() and not target.is_symlink()
            else:
                written = target.is_dir() and any(p.is_file() for p in target.rglob("*"))
            if not written:
                missing.append((spec, str(path)))
    return missing


def _missing_message(missing: list[tuple[ParamSpec, str]]) -> str:
    named = ", ".join(
        f"'{path}' ({spec.spelling if spec.flags else spec.dest}"
        + (", a folder" if spec.role == "output_dir" else "")
        + ")"
        for spec, path in missing
    )
    return f"The command exited 0 but did not write its declared output {named}."


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
