"""What a job's life leaves in the functions' output, read back as CloudWatch would: the metrics'
embedded metric format (EMF) lines, each a JSON object whose `_aws.CloudWatchMetrics` names the metric,
its unit, namespace and dimensions; and the log lines, each naming the job, tenant, attempt and
request it belongs to."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import boto3
import pytest
from jobgate.models import JobEvent
from jobgate.observability import logger

from tests.integration.conftest import API_KEY, Client
from tests.integration.test_job_events import parts  # noqa: F401 (a fixture)
from tests.integration.test_store import new_job
from tests.support.aws import Resources
from tests.support.lambdas import HttpAnswer, call_api, load_handler, pump
from tests.support.strict import StrictAws

pytestmark = pytest.mark.zyra

# Dimensions a metric may carry: bounded sets, never a tenant, job id or command (docs/operations.md).
LOW_CARDINALITY = {"service", "command_set", "status", "aws_service"}


@dataclass(frozen=True)
class Point:
    name: str
    unit: str
    value: float
    dimensions: dict[str, str]


def emf_points(output: str) -> list[Point]:
    """Every EMF data point in the output, checked as CloudWatch reads the format (one metric a line)."""
    points = []
    for line in output.splitlines():
        line = line.strip()
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        doc: dict[str, Any] = json.loads(line)
        assert isinstance(doc["_aws"]["Timestamp"], int)
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "Jobgate"
        (dimension_set,) = directive["Dimensions"]
        assert set(dimension_set) <= LOW_CARDINALITY, dimension_set
        for metric in directive["Metrics"]:
            value = doc[metric["Name"]]
            points.append(
                Point(
                    name=metric["Name"],
                    unit=metric["Unit"],
                    value=value[0] if isinstance(value, list) else value,
                    dimensions={d: doc[d] for d in dimension_set},
                )
            )
    return points


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """What the Powertools logger writes, as it writes it (its handler keeps the stdout of its import,
    which pytest's capture does not read back)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)
    yield stream
    logger.removeHandler(handler)


def log_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """The Powertools logger's JSON lines (not EMF)."""
    lines = []
    for line in stream.getvalue().splitlines():
        if line.startswith("{") and '"_aws"' not in line:
            doc = json.loads(line)
            if "level" in doc and "message" in doc:
                lines.append(doc)
    return lines


def named(points: list[Point], name: str) -> list[Point]:
    return [p for p in points if p.name == name]


def test_a_jobs_life_emits_its_metrics(
    client: Client, capfd: pytest.CaptureFixture[str], logged: io.StringIO
) -> None:
    # A real zyra command that fails (the folder it scans does not exist): submitted, queued, started,
    # run, failed; each step is a data point.
    submitted = client.submit({"stage": "process", "command": "scan-frames", "args": {"frames_dir": "no"}})
    assert submitted.status == 202, submitted.body
    client.call("POST", "/v1/jobs", body={"stage": "process", "command": "nope", "args": {}})
    assert client.run_worker() == 1
    done = client.call("GET", f"/v1/jobs/{submitted.json()['job_id']}").json()
    assert done["status"] == "failed"

    output = capfd.readouterr().out
    points = emf_points(output)
    zyra = {"service": "jobgate", "command_set": "zyra"}
    assert [(p.value, p.dimensions) for p in named(points, "JobsSubmitted")] == [(1, zyra)]  # not the 422
    assert [(p.value, p.dimensions) for p in named(points, "JobsStarted")] == [(1, zyra)]
    finished = [(p.value, p.dimensions) for p in named(points, "JobsFinished")]
    assert finished == [
        (1, {"service": "jobgate", "status": "failed"}),
        (1, {**zyra, "status": "failed"}),
    ]
    (wait,) = named(points, "QueueWait")
    (run,) = named(points, "RunTime")
    (overhead,) = named(points, "WorkerOverhead")
    for timing in (wait, run, overhead):
        assert timing.unit == "Seconds" and timing.dimensions == zyra
    assert 0 <= wait.value < 60
    assert 0 < run.value < 60
    assert 0 <= overhead.value < 60
    assert not named(points, "AwsRetries")  # nothing was throttled

    # Every line the worker logs for the job names it, its tenant, its attempt and the invocation.
    job_id = submitted.json()["job_id"]
    worker_lines = [line for line in log_lines(logged) if line.get("function_name") == "worker"]
    assert {"job started", "job exited", "job finished"} <= {line["message"] for line in worker_lines}
    for line in worker_lines:
        assert line["job_id"] == job_id and line["tenant"] == "default" and line["attempt"] == 1, line
        assert line["function_request_id"]


def test_a_failed_record_logs_why(
    stack_env: Resources, monkeypatch: pytest.MonkeyPatch, logged: io.StringIO
) -> None:
    # A message that is no job message (a bad body): the record fails, comes back, and says so.
    monkeypatch.setenv("JOBGATE_WARM_COMMAND_SETS", "false")  # no job runs: no zygote to warm
    worker = load_handler("worker")
    boto3.client("sqs").send_message(QueueUrl=stack_env.queue_url, MessageBody='{"job": 1}')
    assert pump(worker, stack_env.queue_url) == 1
    failed = [line for line in log_lines(logged) if line["level"] == "ERROR"]
    assert failed[-1]["message"] == "record failed; it comes back after its visibility timeout"
    assert failed[-1]["message_id"] and "ValidationError" in failed[-1]["error"]
    assert failed[-1]["receive_count"] == "1"


def api_call(api: ModuleType, method: str, path: str, **kwargs: Any) -> HttpAnswer:
    """The API alone (no worker, no zygote to start): what a client sees."""
    return call_api(api, method, path, headers={"X-API-Key": API_KEY}, **kwargs)


SCAN = {"stage": "process", "command": "scan-frames", "args": {"frames_dir": "no"}}


def test_api_lines_name_the_request_tenant_and_job(api_fn: ModuleType, logged: io.StringIO) -> None:
    job_id = api_call(api_fn, "POST", "/v1/jobs", body=SCAN).json()["job_id"]
    submit = [line for line in log_lines(logged) if line.get("function_name") == "api"][-1]
    assert (submit["method"], submit["status"], submit["job_id"]) == ("POST", 202, job_id)  # it made the job
    logged.seek(0)
    logged.truncate()
    api_call(api_fn, "DELETE", f"/v1/jobs/{job_id}")
    lines = [line for line in log_lines(logged) if line.get("function_name") == "api"]
    assert [(line["message"], line["method"], line["status"]) for line in lines][-1:] == [
        ("request", "DELETE", 200)
    ]
    for line in lines:
        assert line["job_id"] == job_id and line["tenant"] == "default" and line["request_id"], line


def test_websocket_deliveries_and_gone_connections_are_counted(
    parts: Any,  # noqa: F811 (the fixture imported above)
    capfd: pytest.CaptureFixture[str],
) -> None:
    store, _events, conns, publisher, subs = parts
    job, _ = store.create(new_job())
    subs.connect("c1", "key-a")
    subs.subscribe("c1", job.job_id, None)
    capfd.readouterr()
    publisher.publish(
        [JobEvent(type="log", job_id=job.job_id, stream="stderr", text=f"{i}\n") for i in range(3)]
    )
    conns.gone.add("c1")
    publisher.publish([JobEvent(type="progress", job_id=job.job_id, progress=0.5)])

    points = emf_points(capfd.readouterr().out)
    assert [p.value for p in named(points, "WebSocketDeliveries")] == [3]  # one point for the batch
    assert [p.value for p in named(points, "WebSocketGone")] == [1]


def test_aws_retries_are_counted_by_service(
    api_fn: ModuleType, aws_faults: StrictAws, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    aws_faults.faults(rate=1.0, kinds=["throttle"], services=["sqs"])  # every SendMessage throttled
    try:
        api_call(api_fn, "POST", "/v1/jobs", body=SCAN)
    finally:
        aws_faults.faults(rate=0.0)
    retries = named(emf_points(capfd.readouterr().out), "AwsRetries")
    assert retries, "no retry was counted"
    assert {tuple(sorted(p.dimensions.items())) for p in retries} == {
        (("aws_service", "sqs"), ("service", "jobgate"))
    }
    assert sum(p.value for p in retries) >= 2  # the API's budget: three attempts a call
