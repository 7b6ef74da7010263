"""A write DynamoDB applied whose answer was lost: the SDK sends it again, and the retry finds the condition
false, because of this very write. Each transition must still go on as the winner it is.

The drop is made here as the network makes it: the request (signed as the function signed it) reaches
the local AWS and is applied, then the SDK sees the connection close without an answer and retries.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ConnectionClosedError
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.dynamo import JobStore
from jobgate.adapters.events import EventStore
from jobgate.models import JobStatus

from tests.integration.conftest import API_KEY, Client
from tests.support.lambdas import call_api


@dataclass
class DropOnce:
    """Lose the answer of the first DynamoDB call whose body matches: applied, then no answer."""

    matches: Callable[[dict[str, Any]], bool]
    dropped: list[dict[str, Any]] = field(default_factory=list)

    def before_send(self, request: Any, **_: Any) -> None:
        body = json.loads(request.body or b"{}")
        if self.dropped or not self.matches(body):
            return
        sent = httpx.request(request.method, request.url, headers=dict(request.headers), content=request.body)
        assert sent.status_code == 200, sent.text  # applied
        self.dropped.append(body)
        raise ConnectionClosedError(endpoint_url=request.url)


@pytest.fixture
def drop_once() -> Iterator[Callable[..., DropOnce]]:
    hooks: list[tuple[Any, str, DropOnce]] = []

    def add(operation: str, matches: Callable[[dict[str, Any]], bool]) -> DropOnce:
        drop = DropOnce(matches)
        for budget in (aws_clients.API, aws_clients.BACKGROUND):  # whichever role's client makes it
            client = aws_clients.dynamodb(budget)
            event = f"before-send.dynamodb.{operation}"
            client.meta.events.register_first(event, drop.before_send)
            hooks.append((client, event, drop))
        return drop

    yield add
    for client, event, drop in hooks:
        client.meta.events.unregister(event, drop.before_send)


def _statuses(events: EventStore, job_id: str) -> list[str]:
    return [e.status.value for e in events.after(job_id, 0) if e.type == "status" and e.status]


def _heatmap(asset: str) -> dict[str, Any]:
    args = {"input": f"asset://{asset}", "output": "map.png", "no_coastline": True, "no_borders": True}
    return {"stage": "visualize", "command": "heatmap", "args": {**args, "no_gridlines": True}}


@pytest.fixture
def asset(make_asset: Callable[..., str], npy_file: Path) -> str:
    return make_asset(npy_file, "application/x-npy")


@pytest.fixture
def events(stack_env: Any) -> EventStore:
    from datetime import timedelta

    return EventStore(aws_clients.dynamodb(), stack_env.table_name, timedelta(days=1))


def test_a_finish_whose_answer_was_lost_is_still_announced(
    client: Client, asset: str, drop_once: Callable[..., DropOnce], events: EventStore, store: JobStore
) -> None:
    job_id = client.submit(_heatmap(asset)).json()["job_id"]
    # The end is one transaction: the job's terminal write and its last events.
    drop = drop_once(
        "TransactWriteItems",
        lambda body: ":finished_at" in body["TransactItems"][0]["Update"]["ExpressionAttributeValues"],
    )
    client.run_worker()
    assert drop.dropped, "no finish was dropped"
    done = store.get(job_id)
    assert done.status == JobStatus.SUCCEEDED and done.attempts == 1
    assert _statuses(events, job_id)[-1] == "succeeded"  # subscribers were told the end


def test_a_claim_whose_answer_was_lost_runs_the_job_at_once(
    client: Client, asset: str, drop_once: Callable[..., DropOnce], store: JobStore
) -> None:
    job_id = client.submit(_heatmap(asset)).json()["job_id"]
    drop = drop_once(
        "UpdateItem", lambda body: "attempts = attempts + :one" in body.get("UpdateExpression", "")
    )
    client.run_worker()
    assert drop.dropped, "no claim was dropped"
    done = store.get(job_id)
    # Not left `running` under a lease nobody renews, for the sweeper to find minutes later.
    assert done.status == JobStatus.SUCCEEDED and done.attempts == 1


def test_a_submission_whose_write_answer_was_lost_is_accepted_and_queued(
    client: Client, asset: str, drop_once: Callable[..., DropOnce], store: JobStore
) -> None:
    drop = drop_once("PutItem", lambda body: body.get("Item", {}).get("sk", {}).get("S") == "JOB")
    answer = client.submit(_heatmap(asset))
    assert drop.dropped, "no job write was dropped"
    assert answer.status == 202, answer.body
    job = store.get(answer.json()["job_id"])
    assert job.status == JobStatus.QUEUED and job.enqueued_at is not None
    assert client.run_worker() == 1
    assert store.get(job.job_id).status == JobStatus.SUCCEEDED


def test_a_cancel_whose_answer_was_lost_answers_the_cancelled_job(
    client: Client, asset: str, drop_once: Callable[..., DropOnce], events: EventStore
) -> None:
    job_id = client.submit(_heatmap(asset)).json()["job_id"]
    # The end is one transaction: the job's terminal write and its status event.
    drop = drop_once(
        "TransactWriteItems",
        lambda body: ":finished_at" in body["TransactItems"][0]["Update"]["ExpressionAttributeValues"],
    )
    answer = call_api(client.api, "DELETE", f"/v1/jobs/{job_id}", headers={"X-API-Key": API_KEY})
    assert drop.dropped, "no cancel was dropped"
    assert answer.status == 200, answer.body  # not 409 "has already ended": it ended by this very cancel
    assert answer.json()["status"] == "cancelled"
    assert _statuses(events, job_id)[-1] == "cancelled"  # its status event once, with its end
    assert _statuses(events, job_id).count("cancelled") == 1


def test_a_resubmission_of_a_job_whose_send_failed_sends_it(
    client: Client, asset: str, store: JobStore, stack_env: Any
) -> None:
    # The first request wrote the job and died before its SendMessage: the client sends the same
    # request again (same run_id), and the job must not wait minutes for the sweeper.
    body = {**_heatmap(asset), "run_id": "nightly-7"}
    job_id = client.submit(body).json()["job_id"]
    boto3.client("sqs").purge_queue(QueueUrl=stack_env.queue_url)
    boto3.client("dynamodb").update_item(  # as the first request left it: no send recorded
        TableName=stack_env.table_name,
        Key={"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": "JOB"}},
        UpdateExpression="REMOVE enqueued_at",
    )
    again = client.submit(body)
    assert again.json()["job_id"] == job_id
    assert client.run_worker() == 1
    done = store.get(job_id)
    assert done.status == JobStatus.SUCCEEDED and done.enqueued_at is not None
