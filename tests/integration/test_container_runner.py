"""The container runner on the strict local AWS: long jobs routed to its queue, a RunTask per job,
capacity refusals retried and then failed (`capacity`)."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.dynamo import JobStore
from jobgate.adapters.tasks import TaskLauncher, TaskPlacement
from jobgate.errors import NoCapacity, ValidationFailed
from jobgate.models import JobRequest, JobStatus, utcnow
from jobgate.services.containers import ContainerDispatcher
from jobgate.services.registry import CommandContract, ParamSpec, Registry
from jobgate.settings import Settings
from jobgate.wiring import ApiServices, build_sweeper

from tests.support.aws import Resources
from tests.support.strict import StrictAws

pytestmark = pytest.mark.timeout(60)
HOURS_6 = 6 * 3600


def _contracts() -> Registry:
    params = [ParamSpec(dest="value", flags=["--value"], kind="option")]
    return Registry(
        [
            CommandContract(command_set="long", stage="long", command="any", params=params),
            CommandContract(
                command_set="long", stage="long", command="boxed", params=params, runner="container"
            ),
        ]
    )


def _services(resources: Resources, container_queue: str | None) -> ApiServices:
    settings = Settings(
        table_name=resources.table_name,
        queue_url=resources.queue_url,
        bucket_name=resources.bucket_name,
        container_queue_url=container_queue,
    )
    return ApiServices(settings, _contracts())


@pytest.fixture
def container_queue(aws: StrictAws) -> str:
    url: str = boto3.client("sqs").create_queue(QueueName="container-jobs-test")["QueueUrl"]
    return url


def _messages(url: str) -> list[str]:
    got = boto3.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    return [m["Body"] for m in got.get("Messages", [])]


def test_a_job_past_the_lambda_budget_goes_to_the_container_queue(
    resources: Resources, container_queue: str
) -> None:
    jobs = _services(resources, container_queue).jobs
    long_job, _ = jobs.submit("acme", JobRequest(stage="long", command="any", timeout_s=7200))
    short_job, _ = jobs.submit("acme", JobRequest(stage="long", command="any", timeout_s=60))
    boxed, _ = jobs.submit("acme", JobRequest(stage="long", command="boxed", timeout_s=60))

    assert (long_job.runner, short_job.runner, boxed.runner) == ("container", "lambda", "container")
    in_container_queue = _messages(container_queue)
    assert sorted(long_job.job_id in m or boxed.job_id in m for m in in_container_queue) == [True, True]
    assert [short_job.job_id in m for m in _messages(resources.queue_url)] == [True]
    assert jobs.get("acme", long_job.job_id).runner == "container"  # on the record, as answered

    with pytest.raises(ValidationFailed) as refused:
        jobs.submit("acme", JobRequest(stage="long", command="any", timeout_s=HOURS_6 + 1))
    assert "container runner" in refused.value.detail and f"({HOURS_6} s)" in refused.value.detail


def test_without_a_container_runner_a_long_job_is_refused_as_before(resources: Resources) -> None:
    jobs = _services(resources, None).jobs
    with pytest.raises(ValidationFailed, match=r"longer than a worker can run a job \(840 s\)"):
        jobs.submit("acme", JobRequest(stage="long", command="any", timeout_s=7200))
    with pytest.raises(ValidationFailed, match="container runner"):
        jobs.submit("acme", JobRequest(stage="long", command="boxed"))


def test_the_dispatcher_starts_one_task_naming_the_job(
    aws: StrictAws, resources: Resources, container_queue: str, tmp_path: Path
) -> None:
    """RunTask, emulated by the local AWS from a registered task definition: a process per task."""
    jobs = _services(resources, container_queue).jobs
    job, _ = jobs.submit("acme", JobRequest(stage="long", command="any", timeout_s=7200))
    seen = tmp_path / "seen"
    definition = "arn:aws:ecs:us-east-1:123456789012:task-definition/worker-test:1"
    script = f"import os, pathlib; pathlib.Path({str(seen)!r}).write_text(os.environ['JOBGATE_JOB_ID'])"
    aws.admin(
        "tasks",
        definitions=[
            {
                "arn": definition,
                "container": "worker",
                "command": [sys.executable, "-c", script],
                "environment": {"PATH": os.environ["PATH"]},
                "roles": [],
            }
        ],
    )
    placement = TaskPlacement("jobs", definition)
    store = JobStore(aws_clients.dynamodb(), resources.table_name, timedelta(days=1))
    dispatcher = ContainerDispatcher(store, TaskLauncher(aws_clients.ecs(), placement), tries=5)

    assert dispatcher.dispatch(job.job_id, "acme", receive_count=1) is not None
    give_up_at = time.monotonic() + 20
    while not seen.exists() and time.monotonic() < give_up_at:
        time.sleep(0.05)
    assert seen.read_text() == job.job_id
    tasks = [
        t for t in aws.admin_get("tasks")["tasks"] if t["environment"].get("JOBGATE_JOB_ID") == job.job_id
    ]
    assert len(tasks) == 1

    store.end_unfinished(store.get(job.job_id), _cancelled(), now=job.created_at)  # ended meanwhile
    dispatcher.dispatch(job.job_id, "acme", receive_count=1)
    again = [
        t for t in aws.admin_get("tasks")["tasks"] if t["environment"].get("JOBGATE_JOB_ID") == job.job_id
    ]
    assert len(again) == 1  # no task for an ended job


def _cancelled() -> Any:
    from jobgate.models import JobError, JobResult

    return JobResult(
        status=JobStatus.CANCELLED,
        exit_code=None,
        stdout_tail="",
        stderr_tail="",
        error=JobError(type="cancelled", message="test"),
    )


class NoFargateCapacity:
    """ECS's answer when Fargate has no capacity (moto always has some): the error RunTask raises."""

    def __init__(self) -> None:
        self.calls = 0

    def run_task(self, **_: Any) -> Any:
        self.calls += 1
        error = {
            "Code": "AmazonECSException",
            "Message": "Capacity is unavailable at this time. Please try again later or in a different "
            "availability zone",
        }
        raise ClientError({"Error": error}, "RunTask")


def test_capacity_refusals_are_retried_then_the_job_fails_with_capacity(
    resources: Resources, container_queue: str
) -> None:
    services = _services(resources, container_queue)
    job, _ = services.jobs.submit("acme", JobRequest(stage="long", command="any", timeout_s=7200))
    ecs = NoFargateCapacity()
    launcher = TaskLauncher(ecs, TaskPlacement("jobs", "worker:1"))  # type: ignore[arg-type]
    dispatcher = ContainerDispatcher(services.store, launcher, tries=3, publisher=services.publisher)

    for receive in (1, 2):
        with pytest.raises(NoCapacity):
            dispatcher.dispatch(job.job_id, "acme", receive_count=receive)
        assert services.store.get(job.job_id).status == JobStatus.QUEUED
    done = dispatcher.dispatch(job.job_id, "acme", receive_count=3)

    assert done is not None and done.status == JobStatus.FAILED
    assert done.error is not None and done.error.type == "capacity"
    assert "Capacity is unavailable" in done.error.message
    assert ecs.calls == 3
    page = services.jobs.events("acme", job.job_id, after_seq=0, until=time.monotonic())
    assert page.done and page.events[-1].type == "status" and page.events[-1].status == JobStatus.FAILED


def test_a_job_whose_task_died_goes_back_to_the_container_runner(
    resources: Resources, container_queue: str
) -> None:
    """The sweeper hands a container job whose task stopped renewing its lease to the container
    runner's queue (not the worker Lambda's), where the dispatcher starts a new task that takes it over."""
    settings = Settings(
        table_name=resources.table_name,
        queue_url=resources.queue_url,
        bucket_name=resources.bucket_name,
        container_queue_url=container_queue,
    )
    services = ApiServices(settings, _contracts())
    job, _ = services.jobs.submit("acme", JobRequest(stage="long", command="any", timeout_s=7200))
    assert len(_messages(container_queue)) == 1  # the first task's message (taken: it started)
    # Its task claimed it and died: the lease it took ran out minutes ago.
    then = utcnow() - timedelta(minutes=5)
    services.store.claim(services.store.get(job.job_id), now=then, lease_until=then + timedelta(seconds=30))

    report = build_sweeper(settings).sweep()

    assert report.rescued == [job.job_id]
    assert _messages(resources.queue_url) == []
    rescued = _messages(container_queue)
    assert len(rescued) == 1 and job.job_id in rescued[0]


def test_a_task_that_never_takes_its_job_is_replaced_then_the_job_fails(
    aws: StrictAws, resources: Resources, container_queue: str
) -> None:
    """RunTask succeeded but the task never claimed the job (it could not pull its image, say): the
    dispatcher's delayed check starts another, up to three, then the job fails `never_started`."""
    services = _services(resources, container_queue)
    job, _ = services.jobs.submit("acme", JobRequest(stage="long", command="any", timeout_s=7200))
    assert len(_messages(container_queue)) == 1  # the submit's message, being handled below
    definition = "arn:aws:ecs:us-east-1:123456789012:task-definition/dies-at-once:1"
    aws.admin(
        "tasks",
        definitions=[
            {
                "arn": definition,
                "container": "worker",
                "command": [sys.executable, "-c", "pass"],
                "environment": {},
            }
        ],
    )
    launcher = TaskLauncher(aws_clients.ecs(), TaskPlacement("jobs", definition))
    dispatcher = ContainerDispatcher(
        services.store, launcher, tries=5, queue=services.queue, start_grace_s=0, publisher=services.publisher
    )

    starts = 0
    for _ in range(3):
        dispatcher.dispatch(job.job_id, "acme", receive_count=1, task_starts=starts)
        checks = [json.loads(body) for body in _messages(container_queue)]
        assert [(c["job_id"], c["task_starts"]) for c in checks] == [(job.job_id, starts + 1)]
        starts = checks[0]["task_starts"]
    done = dispatcher.dispatch(job.job_id, "acme", receive_count=1, task_starts=starts)

    assert done is not None and done.status == JobStatus.FAILED
    assert done.error is not None and done.error.type == "never_started"
    assert "3 tasks were started" in done.error.message
    ours = [
        t for t in aws.admin_get("tasks")["tasks"] if t["environment"].get("JOBGATE_JOB_ID") == job.job_id
    ]
    assert len(ours) == 3 and _messages(container_queue) == []
