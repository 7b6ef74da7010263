"""An end nobody's worker makes (a cancel, a dead letter, a pipeline's cancel) is in the job's event log
whatever fails after it: a client following the log never waits for an end that already happened.

The failure is made as the network makes it: once the job reads as ended in the table, every further
DynamoDB call of the functions fails before it reaches the local AWS (nothing applied), retries included.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ConnectionClosedError
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.dynamo import JobStore
from jobgate.adapters.events import EventStore
from jobgate.models import JobStatus

from tests.integration.conftest import API_KEY, Client
from tests.integration.test_cancel_races import dead_letter, two_steps
from tests.support.aws import Resources
from tests.support.lambdas import call_api


def status_events(stack_env: Resources, job_id: str) -> list[str]:
    """The job's status events, read with the test's own client (the functions' ones are failing)."""
    events = EventStore(boto3.client("dynamodb"), stack_env.table_name, timedelta(days=1)).after(job_id, 0)
    return [e.status.value for e in events if e.type == "status" and e.status is not None]


SCAN = {"stage": "process", "command": "scan-frames", "args": {"frames_dir": "nowhere"}}


@dataclass
class FailAfterEnd:
    """Fail every DynamoDB call of the functions once any of `job_ids` reads as ended."""

    table: str
    job_ids: set[str]
    refused: list[str] = field(default_factory=list)

    def ended(self) -> bool:
        reader = boto3.client("dynamodb")  # the test's own client: no hook, no fault
        for job_id in self.job_ids:
            item = reader.get_item(
                TableName=self.table, Key={"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": "JOB"}}
            ).get("Item", {})
            if item.get("status", {}).get("S") in {s.value for s in JobStatus if s.terminal}:
                return True
        return False

    def before_send(self, request: Any, **_: Any) -> None:
        if self.ended():
            self.refused.append(json.loads(request.body or b"{}").get("TableName", "?"))
            raise ConnectionClosedError(endpoint_url=request.url)


@pytest.fixture
def fail_after_end(stack_env: Resources) -> Iterator[Callable[..., FailAfterEnd]]:
    hooks: list[tuple[Any, FailAfterEnd]] = []

    def add(*job_ids: str) -> FailAfterEnd:
        fail = FailAfterEnd(stack_env.table_name, set(job_ids))
        for budget in (aws_clients.API, aws_clients.BACKGROUND):
            client = aws_clients.dynamodb(budget)
            client.meta.events.register_first("before-send.dynamodb", fail.before_send)
            hooks.append((client, fail))
        return fail

    yield add
    for client, fail in hooks:
        client.meta.events.unregister("before-send.dynamodb", fail.before_send)


def test_a_cancelled_queued_job_has_its_end_in_the_log(
    client: Client, stack_env: Resources, fail_after_end: Callable[..., FailAfterEnd]
) -> None:
    job_id = client.submit(SCAN).json()["job_id"]
    fail = fail_after_end(job_id)
    answer = call_api(client.api, "DELETE", f"/v1/jobs/{job_id}", headers={"X-API-Key": API_KEY})
    assert answer.status == 200, answer.body
    assert answer.json()["status"] == "cancelled"
    assert status_events(stack_env, job_id)[-1:] == ["cancelled"], f"refused after the end: {fail.refused}"


def test_a_dead_lettered_job_has_its_end_in_the_log(
    client: Client, stack_env: Resources, fail_after_end: Callable[..., FailAfterEnd]
) -> None:
    job_id = client.submit(SCAN).json()["job_id"]
    fail_after_end(job_id)
    dead_letter(job_id)
    assert (
        JobStore(boto3.client("dynamodb"), stack_env.table_name, timedelta(days=1)).get(job_id).status
        == JobStatus.FAILED
    )
    assert status_events(stack_env, job_id)[-1:] == ["failed"]


def test_every_step_a_pipeline_cancel_ends_has_its_end_in_the_log(
    client: Client, stack_env: Resources, fail_after_end: Callable[..., FailAfterEnd]
) -> None:
    view = client.call("POST", "/v1/pipelines", body=two_steps()).json()
    ids = [s["job"]["job_id"] for s in view["steps"]]
    fail_after_end(*ids)
    call_api(client.api, "DELETE", f"/v1/pipelines/{view['pipeline_id']}", headers={"X-API-Key": API_KEY})
    # The first step's end refuses every call after it: the cancel stops there, and what it ended
    # is in the log; a step it did not reach has not ended.
    reader = JobStore(boto3.client("dynamodb"), stack_env.table_name, timedelta(days=1))
    ended = {job_id: reader.get(job_id).status for job_id in ids}
    assert ended[ids[0]] == JobStatus.CANCELLED
    for job_id, status in ended.items():
        if status.terminal:
            assert status_events(stack_env, job_id)[-1:] == [status.value], job_id
