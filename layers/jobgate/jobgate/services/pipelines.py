"""Pipelines: steps that feed each other, each step a job; a step runs when what it reads exists."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from ulid import ULID

from jobgate.adapters.dynamo import JobStore
from jobgate.adapters.queue import JobQueue
from jobgate.errors import Conflict, InvalidTransition, NotFound, QueueError, RunIdConflict, ValidationFailed
from jobgate.models import Job, JobStatus, Runner, utcnow
from jobgate.observability import logger
from jobgate.services.dispatch import dispatch
from jobgate.services.events import Publisher, announce, ended_announced
from jobgate.services.limits import JobAdmission
from jobgate.services.maps import MapAdvancer
from jobgate.services.registry import ASSET_SCHEME, STEP_SCHEME, CommandContract, Invocation, Registry

MAX_STEPS = 50
MAX_REF_CHARS = 1024  # a step:// reference in `files`; the job record keeps each (bounded item size)
STEP_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class StepRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=STEP_NAME)
    stage: str = Field(min_length=1, max_length=64)
    command: str = Field(min_length=1, max_length=64)
    args: dict[str, Any] = Field(default_factory=dict)
    timeout_s: int | None = Field(default=None, ge=1)
    max_attempts: int | None = Field(default=None, ge=1, le=5)
    retry_on_exit: bool = False
    files: list[Annotated[str, Field(max_length=MAX_REF_CHARS)]] = Field(
        default_factory=list,
        max_length=MAX_STEPS,
        description="Earlier steps' outputs (step://<name>/<path>) to stage without naming them in args,"
        " for files that refer to others (a frames index that names its frames).",
    )
    after: list[str] = Field(
        default_factory=list,
        max_length=MAX_STEPS,
        description="Steps to wait for besides those it reads from.",
    )


class PipelineRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[StepRequest] = Field(min_length=1, max_length=MAX_STEPS)
    run_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")

    def fingerprint(self) -> str:
        body = self.model_dump(mode="json", exclude={"run_id"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class PipelineStepRecord(BaseModel):
    name: str
    job_id: str
    after: list[str] = Field(default_factory=list)


class Pipeline(BaseModel):
    pipeline_id: str
    tenant: str
    run_id: str | None = None
    steps: list[PipelineStepRecord]
    request_hash: str
    created_at: datetime


def pipeline_status(jobs: list[Job]) -> str:
    statuses = {j.status for j in jobs}
    if statuses & {JobStatus.FAILED, JobStatus.TIMED_OUT}:
        return "failed"
    if JobStatus.CANCELLED in statuses:
        return "cancelled"
    if statuses == {JobStatus.SUCCEEDED}:
        return "succeeded"
    if JobStatus.RUNNING in statuses or JobStatus.SUCCEEDED in statuses:
        return "running"
    return "queued"


class Advancer:
    """Moves a pipeline on when one of its jobs ends: unblocks what is ready, cancels what cannot run."""

    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        publisher: Publisher | None = None,
        clock: Callable[[], datetime] = utcnow,
        maps: MapAdvancer | None = None,
    ) -> None:
        self._store = store
        self._queue = queue
        self._publisher = publisher
        self._clock = clock
        self.maps = maps or MapAdvancer(store, queue, publisher, clock)

    def advance(self, job: Job) -> None:
        if job.map_id is not None or job.merge_of is not None:
            self.maps.advance(job)  # a map's chunk or merge ended: release the next, merge, close
            return
        if job.pipeline_id is None or not job.terminal:
            return
        record = self._store.get_record(f"PIPE#{job.pipeline_id}", "PIPE")
        if record is None:
            return
        pipeline = Pipeline.model_validate(record)
        by_name = {s.name: s for s in pipeline.steps}
        dependents = [s for s in pipeline.steps if job.step in s.after]
        if not dependents:
            return
        jobs = self._store.get_many([s.job_id for s in pipeline.steps])
        for step in dependents:
            dep = jobs[step.job_id]
            if dep.status != JobStatus.BLOCKED:
                continue
            if job.status != JobStatus.SUCCEEDED:
                reason = f"Step '{job.step}' it reads from ended {job.status.value}; it cannot run."
                self._cancel(dep, reason)
                continue
            upstream = [jobs[by_name[name].job_id] for name in step.after]
            if all(u.status == JobStatus.SUCCEEDED for u in upstream):
                self._start(dep)

    def announce(self, job: Job) -> None:
        announce(self._publisher, job)

    def cancel_step(self, job: Job, now: datetime) -> Job:
        """Cancel a step of a cancelled pipeline (a running one is flagged for its worker)."""
        return ended_announced(
            self._publisher,
            lambda note: self._store.cancel(
                job, now=now, reason="The pipeline was cancelled.", announce=note
            ),
        )

    def send(self, job: Job) -> None:
        """Send a queued step's message and record the send (the sweeper re-sends unrecorded ones)."""
        dispatch(self._store, self._queue, job, self._clock)

    def _start(self, job: Job) -> None:
        try:
            queued = self._store.unblock(job, now=self._clock())
        except InvalidTransition:
            return  # another upstream's completion queued it first, or it was cancelled
        self.send(queued)
        logger.info("pipeline step queued", job_id=job.job_id, step=job.step, pipeline_id=job.pipeline_id)

    def _cancel(self, job: Job, reason: str) -> None:
        try:
            cancelled = ended_announced(
                self._publisher,
                lambda note: self._store.cancel(job, now=self._clock(), reason=reason, announce=note),
            )
        except InvalidTransition:
            return
        self.advance(cancelled)


class PipelineService:
    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        registry: Registry,
        advancer: Advancer,
        *,
        check_inputs: Callable[[str, Invocation], object],
        timeout_for: Callable[[int | None, Invocation], tuple[int, Runner]],
        admission: JobAdmission | None = None,
        ttl: timedelta,
        clock: Callable[[], datetime] = utcnow,
        check_secrets: Callable[[Invocation], None] | None = None,
    ) -> None:
        self._check_secrets = check_secrets
        self._store = store
        self._queue = queue
        self._registry = registry
        self._advancer = advancer
        self._check_inputs = check_inputs
        self._timeout_for = timeout_for
        self._admission = admission
        self._ttl = ttl
        self._clock = clock

    def submit(self, tenant: str, request: PipelineRequest) -> tuple[Pipeline, bool]:
        """Check the whole pipeline, then write every step's job at once; nothing queues on an error."""
        if request.run_id is not None:
            existing = self._store.get_record(f"PRUN#{tenant}#{request.run_id}", "PRUN")
            if existing is not None:
                return self._existing(tenant, request, existing), False
        invocations = self._check(tenant, request)
        order = _topological(request)
        now = self._clock()
        pipeline_id = str(ULID())
        job_ids = {s.name: str(ULID()) for s in request.steps}
        after = {
            s.name: sorted(
                {ref.split("/", 1)[0] for ref in invocations[s.name].steps.values()} | set(s.after)
            )
            for s in request.steps
        }
        placements = {s.name: self._timeout_for(s.timeout_s, invocations[s.name]) for s in request.steps}
        jobs = []
        for name in order:
            step = next(s for s in request.steps if s.name == name)
            inv = invocations[name]
            upstream = dict(inv.jobs)  # job:// inputs: outputs of jobs that ended before this pipeline
            for key, ref in inv.steps.items():
                producer, _, path = ref.partition("/")
                upstream[key] = f"{job_ids[producer]}/{path}"
            jobs.append(
                Job(
                    job_id=job_ids[name],
                    tenant=tenant,
                    stage=inv.contract.stage,
                    command=inv.contract.command,
                    args=inv.args,
                    inputs=inv.inputs,
                    upstream=upstream,
                    status=JobStatus.BLOCKED if after[name] else JobStatus.QUEUED,
                    timeout_s=placements[name][0],
                    runner=placements[name][1],
                    max_attempts=step.max_attempts,
                    retry_on_exit=step.retry_on_exit,
                    request_hash=hashlib.sha256(step.model_dump_json().encode()).hexdigest(),
                    created_at=now,
                    pipeline_id=pipeline_id,
                    step=name,
                )
            )
        pipeline = Pipeline(
            pipeline_id=pipeline_id,
            tenant=tenant,
            run_id=request.run_id,
            steps=[PipelineStepRecord(name=n, job_id=job_ids[n], after=after[n]) for n in order],
            request_hash=request.fingerprint(),
            created_at=now,
        )
        expires = int((now + self._ttl).timestamp())
        records = [
            {
                **pipeline.model_dump(mode="json"),
                "pk": f"PIPE#{pipeline_id}",
                "sk": "PIPE",
                "gsi1pk": f"TENANT#{tenant}#PIPES",
                "gsi1sk": pipeline_id,
                "expires_at": expires,
            }
        ]
        if request.run_id is not None:
            records.append(
                {
                    "pk": f"PRUN#{tenant}#{request.run_id}",
                    "sk": "PRUN",
                    "pipeline_id": pipeline_id,
                    "request_hash": pipeline.request_hash,
                    "expires_at": expires,
                }
            )
        try:
            self._store.create_many(jobs, [self._store.marshal(r) for r in records])
        except Conflict:
            # A concurrent submission with the same run_id won the race: answer its pipeline.
            existing = (
                self._store.get_record(f"PRUN#{tenant}#{request.run_id}", "PRUN") if request.run_id else None
            )
            if existing is None:
                raise
            return self._existing(tenant, request, existing), False
        for job in jobs:
            if job.status == JobStatus.QUEUED:
                try:
                    self._advancer.send(job)
                except QueueError as exc:
                    # The pipeline is written: the sweeper sends the step's message within minutes.
                    logger.warning("could not queue a pipeline step", job_id=job.job_id, error=exc.detail)
        return pipeline, True

    def _existing(self, tenant: str, request: PipelineRequest, run: Mapping[str, Any]) -> Pipeline:
        if run["request_hash"] != request.fingerprint():
            raise RunIdConflict(
                f"run_id '{request.run_id}' was used for a different pipeline ({run['pipeline_id']}).",
                extra={"pipeline_id": run["pipeline_id"]},
            )
        return self.get(tenant, str(run["pipeline_id"]))

    def _check(self, tenant: str, request: PipelineRequest) -> dict[str, Invocation]:
        invocations = _check_steps(self._registry, request)
        for inv in invocations.values():
            if self._check_secrets is not None:
                self._check_secrets(inv)
            self._check_inputs(tenant, inv)
        if self._admission is not None:
            # The same limits as single jobs: args size, where URLs may point, active jobs.
            for i, step in enumerate(request.steps):
                self._admission.check_args(step.args, invocations[step.name], loc=("steps", i))
            self._admission.check_active(tenant, adding=len(request.steps))
        return invocations

    def get(self, tenant: str, pipeline_id: str) -> Pipeline:
        record = self._store.get_record(f"PIPE#{pipeline_id}", "PIPE")
        if record is None or record.get("tenant") != tenant:
            raise NotFound(f"No pipeline '{pipeline_id}'.")
        return Pipeline.model_validate(record)

    def jobs(self, pipeline: Pipeline) -> dict[str, Job]:
        return self._store.get_many([s.job_id for s in pipeline.steps])

    def list_pipelines(
        self, tenant: str, *, limit: int, cursor: str | None
    ) -> tuple[list[Pipeline], str | None]:
        items, next_cursor = self._store.query_index(f"TENANT#{tenant}#PIPES", limit=limit, cursor=cursor)
        return [Pipeline.model_validate(i) for i in items], next_cursor

    def cancel(self, tenant: str, pipeline_id: str) -> Pipeline:
        """Cancel every step that has not ended: blocked and queued ones at once, running ones flagged.

        A step that moves meanwhile (unblocked, claimed, re-queued) is cancelled in its new state;
        only a step that has ended is left as it is.
        """
        pipeline = self.get(tenant, pipeline_id)
        now = self._clock()
        for job in self.jobs(pipeline).values():
            if job.terminal:
                continue
            try:
                self._advancer.cancel_step(job, now)
            except InvalidTransition:
                logger.info(
                    "pipeline step ended before its cancel", job_id=job.job_id, pipeline_id=pipeline_id
                )
        return pipeline


def _check_steps(registry: Registry, request: PipelineRequest) -> dict[str, Invocation]:
    """Every step against its contract, then every reference between steps; 422 naming each field."""
    names = [s.name for s in request.steps]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValidationFailed(
            f"Step names must be unique: {', '.join(dupes)}.",
            [{"loc": ["body", "steps"], "msg": f"duplicate step name {d}"} for d in dupes],
        )
    invocations: dict[str, Invocation] = {}
    errors: list[dict[str, Any]] = []
    for i, step in enumerate(request.steps):
        try:
            invocations[step.name] = registry.check(step.stage, step.command, step.args, allow_steps=True)
        except ValidationFailed as exc:
            errors.extend({**e, "loc": ["body", "steps", i, *e["loc"][1:]]} for e in exc.errors)
    if errors:
        raise ValidationFailed(f"{len(errors)} invalid argument(s) in the pipeline.", errors)
    for i, step in enumerate(request.steps):
        errors.extend(_file_refs(i, step, invocations[step.name]))
    if errors:
        raise ValidationFailed(f"{len(errors)} invalid file reference(s) in the pipeline.", errors)
    for i, step in enumerate(request.steps):
        errors.extend(_check_refs(i, step, invocations))
        errors.extend(
            {"loc": ["body", "steps", i, "after"], "msg": f"no step named '{name}'"}
            for name in step.after
            if name not in invocations or name == step.name
        )
    if errors:
        raise ValidationFailed(f"{len(errors)} invalid step reference(s) in the pipeline.", errors)
    return invocations


def _file_refs(index: int, step: StepRequest, invocation: Invocation) -> list[dict[str, Any]]:
    """Files to stage without naming them in args join the step's references."""
    errors = []
    for j, ref in enumerate(step.files):
        if not ref.startswith(STEP_SCHEME) or "/" not in ref[len(STEP_SCHEME) :]:
            errors.append(
                {"loc": ["body", "steps", index, "files", j], "msg": f"must be {STEP_SCHEME}<step>/<path>"}
            )
        else:
            invocation.steps[f"files[{j}]"] = ref[len(STEP_SCHEME) :]
    return errors


def _check_refs(index: int, step: StepRequest, invocations: Mapping[str, Invocation]) -> list[dict[str, Any]]:
    errors = []
    for key, ref in invocations[step.name].steps.items():
        producer, _, path = ref.partition("/")
        field = key.split("[", 1)[0]
        loc = ["body", "steps", index, "files" if field == "files" else "args", field]
        if producer not in invocations:
            errors.append({"loc": loc, "msg": f"no step named '{producer}'"})
            continue
        if producer == step.name:
            errors.append({"loc": loc, "msg": "a step cannot read its own outputs"})
            continue
        problem = _output_problem(invocations[producer].contract, invocations[producer].args, path)
        if problem:
            errors.append({"loc": loc, "msg": f"step '{producer}' {problem}"})
    return errors


def _output_problem(contract: CommandContract, args: Mapping[str, Any], path: str) -> str | None:
    """Why `path` cannot be among what the producing step writes, or None when it can be."""
    files: list[str] = []
    folders: list[str] = []
    for spec in contract.params:
        value = args.get(spec.dest)
        if value is None:
            continue
        values = [str(v) for v in (value if isinstance(value, list) else [value])]
        if spec.role == "output":
            files.extend(v.strip("/") for v in values)
        elif spec.role == "output_dir":
            folders.extend(v.strip("/") for v in values)
    if not files and not folders:
        return f"({contract.stage} {contract.command}) names no output file or folder in its args"
    wanted = path.strip("/")
    if not wanted:
        return None
    if wanted in files or wanted in folders or any(wanted.startswith(f"{d}/") for d in folders):
        return None
    named = ", ".join([*files, *(f"{d}/" for d in folders)])
    return f"does not write '{wanted}' (it writes {named})"


def _topological(request: PipelineRequest) -> list[str]:
    """Steps in an order where each comes after what it reads; a cycle is a 422 naming it."""
    deps = {
        s.name: {
            str(v)[len(STEP_SCHEME) :].split("/", 1)[0]
            for v in _flat(s.args.values())
            if isinstance(v, str) and v.startswith(STEP_SCHEME)
        }
        | {f[len(STEP_SCHEME) :].split("/", 1)[0] for f in s.files if f.startswith(STEP_SCHEME)}
        | set(s.after)
        for s in request.steps
    }
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join([*path[path.index(name) :], name])
            raise ValidationFailed(
                f"The steps form a cycle: {cycle}.", [{"loc": ["body", "steps"], "msg": f"cycle {cycle}"}]
            )
        state[name] = 1
        for dep in sorted(deps.get(name, ())):
            if dep in deps:
                visit(dep, [*path, name])
        state[name] = 2
        order.append(name)

    for step in request.steps:
        visit(step.name, [])
    return order


def _flat(values: Any) -> list[Any]:
    out: list[Any] = []
    for v in values:
        out.extend(v if isinstance(v, list) else [v])
    return out


def steps_from_zyra(doc: Any) -> PipelineRequest:
    """Zyra's own pipeline file (`zyra run` YAML/JSON: {stages: [{stage, command, args}]}) as steps.

    A file argument that names an earlier stage's output becomes `step://<that stage>/<name>`;
    other input files must already be uploaded (`asset://<id>`).
    """
    stages = doc.get("stages") if isinstance(doc, dict) else None
    if not isinstance(stages, list) or not stages:
        raise ValidationFailed(
            "A zyra pipeline needs a non-empty 'stages' list.",
            [{"loc": ["body", "stages"], "msg": "missing"}],
        )
    steps: list[dict[str, Any]] = []
    written: dict[str, str] = {}  # output path -> step name
    for i, stage in enumerate(stages, start=1):
        if not isinstance(stage, dict) or "stage" not in stage or "command" not in stage:
            raise ValidationFailed(
                f"Stage {i} needs 'stage' and 'command'.",
                [{"loc": ["body", "stages", i - 1], "msg": "incomplete"}],
            )
        name = str(stage.get("name") or f"{i}-{stage['stage']}-{stage['command']}").replace(" ", "-")
        args = {}
        for key, value in (stage.get("args") or {}).items():
            args[key] = _zyra_value(value, written)
        for key in ("output", "o", "output_dir", "output-dir", "path"):
            value = args.get(key)
            if isinstance(value, str) and value and not value.startswith((ASSET_SCHEME, STEP_SCHEME)):
                written[value.strip("/")] = name
        steps.append({"name": name, "stage": stage["stage"], "command": stage["command"], "args": args})
    return PipelineRequest.model_validate({"steps": steps, "run_id": doc.get("run_id")})


def _zyra_value(value: Any, written: Mapping[str, str]) -> Any:
    if isinstance(value, list):
        return [_zyra_value(v, written) for v in value]
    if isinstance(value, str):
        key = value.strip("/")
        if key in written:
            return f"{STEP_SCHEME}{written[key]}/{key}"
        for folder, producer in written.items():
            if key.startswith(f"{folder}/"):
                return f"{STEP_SCHEME}{producer}/{key}"
    return value
