"""`jobgate admin`'s service on the strict local AWS, as the operator's identity: stuck jobs, and a
dead-letter queue moved back to its queue."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import boto3
import pytest
from jobgate import admin_cli
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.dynamo import JobStore
from jobgate.adapters.queue import QueueMover
from jobgate.models import utcnow
from jobgate.services.operations import Operations

from tests.integration.test_store import new_job
from tests.support.aws import Resources


@pytest.fixture
def ops(resources: Resources) -> tuple[Operations, JobStore]:
    store = JobStore(aws_clients.dynamodb(), resources.table_name, timedelta(days=1))
    return Operations(store, QueueMover(aws_clients.sqs())), store


def test_stuck_lists_expired_leases_and_long_queued_jobs_oldest_first(
    ops: tuple[Operations, JobStore],
) -> None:
    operations, store = ops
    now = utcnow()
    lost, _ = store.create(new_job())
    store.claim(lost, now=now - timedelta(minutes=10), lease_until=now - timedelta(minutes=9))
    live, _ = store.create(new_job())
    store.claim(live, now=now, lease_until=now + timedelta(minutes=1))
    waiting, _ = store.create(new_job().model_copy(update={"created_at": now - timedelta(hours=1)}))
    fresh, _ = store.create(new_job())

    found = operations.stuck(queued_for_s=600)
    assert [(s.job.job_id, s.reason) for s in found] == [
        (waiting.job_id, "message not sent"),  # created an hour ago; nothing recorded its message
        (lost.job_id, "lease expired"),
    ]
    assert 530 < found[1].age_s(utcnow()) < 600
    assert {s.job.job_id for s in operations.stuck(queued_for_s=0)} == {
        waiting.job_id,
        lost.job_id,
        fresh.job_id,
    }


def test_redrive_moves_messages_with_their_attributes_up_to_the_limit(
    ops: tuple[Operations, JobStore], resources: Resources
) -> None:
    operations, _ = ops
    sqs = boto3.client("sqs")
    for i in range(3):
        sqs.send_message(
            QueueUrl=resources.dlq_url,
            MessageBody=f'{{"job_id": "j{i}", "tenant": "acme"}}',
            MessageAttributes={"job_id": {"DataType": "String", "StringValue": f"j{i}"}},
        )
    assert operations.waiting(resources.dlq_url) == 3
    assert operations.redrive(resources.dlq_url, resources.queue_url, limit=2) == 2
    got = sqs.receive_message(
        QueueUrl=resources.queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=1
    )["Messages"]
    assert len(got) == 2
    for message in got:
        job_id = message["MessageAttributes"]["job_id"]["StringValue"]
        assert message["Body"] == f'{{"job_id": "{job_id}", "tenant": "acme"}}'
    assert operations.redrive(resources.dlq_url, resources.queue_url, limit=10) == 1
    assert operations.redrive(resources.dlq_url, resources.queue_url, limit=10) == 0


def test_admin_finds_a_deployed_stacks_queues_from_its_outputs(resources: Resources) -> None:
    """`jobgate admin --stack NAME`: the resources come from the stack's outputs, as on AWS."""
    body = {
        "Resources": {"Probe": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {
            "JobsTableName": {"Value": resources.table_name},
            "JobsQueueUrl": {"Value": resources.queue_url},
            "JobsDeadLetterQueueUrl": {"Value": resources.dlq_url},
        },
    }
    boto3.client("cloudformation").create_stack(StackName="jobgate-ops", TemplateBody=json.dumps(body))
    boto3.client("sqs").send_message(QueueUrl=resources.dlq_url, MessageBody='{"job_id": "j", "tenant": "t"}')
    out, err = io.StringIO(), io.StringIO()
    argv = ["admin", "--stack", "jobgate-ops", "redrive", "--queue", "jobs", "--json"]
    assert admin_cli.main(argv, out=out, err=err) == 0, err.getvalue()
    assert json.loads(out.getvalue()) == {"queue": "jobs", "waiting": 1, "moved": 1}

    missing = admin_cli.main(["admin", "--stack", "no-such-stack", "stuck"], out=out, err=err)
    assert missing == 2 and "no-such-stack" in err.getvalue()
