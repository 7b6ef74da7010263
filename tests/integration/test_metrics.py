"""The metrics a job's life emits, read back from the functions' output as CloudWatch would: the
embedded metric format (EMF) lines, each a JSON object whose `_aws.CloudWatchMetrics` names the metric,
its unit, namespace and dimensions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from jobgate.models import JobEvent

from tests.integration.conftest import Client
from tests.integration.test_job_events import parts  # noqa: F401 (a fixture)
from tests.integration.test_store import new_job

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


def named(points: list[Point], name: str) -> list[Point]:
    return [p for p in points if p.name == name]


def test_a_jobs_life_emits_its_metrics(client: Client, capfd: pytest.CaptureFixture[str]) -> None:
    # A real zyra command that fails (the folder it scans does not exist): submitted, queued, started,
    # run, failed; each step is a data point.
    submitted = client.submit({"stage": "process", "command": "scan-frames", "args": {"frames_dir": "no"}})
    assert submitted.status == 202, submitted.body
    client.call("POST", "/v1/jobs", body={"stage": "process", "command": "nope", "args": {}})
    assert client.run_worker() == 1
    done = client.call("GET", f"/v1/jobs/{submitted.json()['job_id']}").json()
    assert done["status"] == "failed"

    points = emf_points(capfd.readouterr().out)
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
