"""The template's operations block against what the code emits and what AWS reads: alarms on every
dead-letter queue and on metrics the code does emit, a dashboard whose body is JSON, JSON access logs,
and the worker's concurrency bounds (docs/operations.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from jobgate import observability as obs
from jobgate_local.template import Template, load_template

ROOT = Path(__file__).resolve().parents[2]
REQUIRED_PARAMETERS = {"ApiKey": "k" * 16}
# The dimension sets the code emits each metric under (jobgate/observability.py).
EMITTED = {
    (obs.JOBS_FINISHED, frozenset({"service", "status"})),
    (obs.JOBS_DEAD_LETTERED, frozenset({"service"})),
    (obs.JOBS_WORKER_LOST, frozenset({"service"})),
    (obs.SWEEPER_NEVER_STARTED, frozenset({"service"})),
    (obs.SWEEPER_REQUEUED, frozenset({"service"})),
    (obs.SWEEPER_RESCUED, frozenset({"service"})),
    (obs.WS_DELIVERIES, frozenset({"service"})),
    (obs.WS_GONE, frozenset({"service"})),
    (obs.UPLOADS_FAILED, frozenset({"service"})),
}


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template(ROOT / "template.yaml", REQUIRED_PARAMETERS)


def of_type(template: Template, kind: str) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in template.sam["Resources"].items() if r["Type"] == kind}


def alarm_metrics(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    """Every metric an alarm reads: its own, or those of its metric-math queries."""
    properties = alarm["Properties"]
    if "MetricName" in properties:
        return [properties]
    return [q["MetricStat"]["Metric"] for q in properties["Metrics"] if "MetricStat" in q]


def test_every_alarm_notifies_the_alarm_topic(template: Template) -> None:
    alarms = of_type(template, "AWS::CloudWatch::Alarm")
    assert len(alarms) >= 12
    for lid, alarm in alarms.items():
        assert {"Ref": "AlarmTopic"} in alarm["Properties"]["AlarmActions"], lid
    subscription = template.sam["Resources"]["AlarmEmailSubscription"]
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}


def test_every_dead_letter_queue_has_an_alarm(template: Template) -> None:
    queues = template.sam["Resources"]
    dlqs = {
        q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for q in of_type(template, "AWS::SQS::Queue").values()
        if "RedrivePolicy" in q["Properties"]
    }
    assert dlqs == {"JobsDeadLetterQueue", "UploadEventsDeadLetterQueue", "ContainerJobsDeadLetterQueue"}
    watched = {
        metric["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for alarm in of_type(template, "AWS::CloudWatch::Alarm").values()
        for metric in alarm_metrics(alarm)
        if metric["Namespace"] == "AWS/SQS" and metric["MetricName"] == "ApproximateNumberOfMessagesVisible"
    }
    assert dlqs <= watched
    assert all(queues[q]["Type"] == "AWS::SQS::Queue" for q in watched)


def test_alarms_on_jobgate_metrics_read_what_the_code_emits(template: Template) -> None:
    """An alarm on a metric name or dimension set the code never emits would never fire."""
    read = {
        (m["MetricName"], frozenset(d["Name"] for d in m["Dimensions"]))
        for alarm in of_type(template, "AWS::CloudWatch::Alarm").values()
        for m in alarm_metrics(alarm)
        if m["Namespace"] == obs.NAMESPACE
    }
    assert {name for name, _ in read} >= {"JobsFinished", "JobsNeverStarted", "JobsWorkerLost"}
    assert read <= EMITTED


def test_the_dashboard_body_is_json_with_widgets_on_emitted_metrics(template: Template) -> None:
    body = template.sam["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"][0]
    # Fn::Sub's ${...} become strings at deploy; each sits inside a JSON string already.
    document = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))
    widgets = document["widgets"]
    assert len(widgets) >= 8
    text = json.dumps(document)
    names = {value for name, value in vars(obs).items() if name.isupper() and isinstance(value, str)}
    shown = set(re.findall(r'"(Jobs\w+|QueueWait|RunTime|WorkerOverhead|WebSocket\w+|UploadsFailed)"', text))
    shown |= set(re.findall(r'MetricName=\\*"(\w+)', text))
    assert shown - names == set()
    assert {"JobsFinished", "QueueWait", "RunTime", "WorkerOverhead", "AwsRetries"} <= shown


@pytest.mark.parametrize(
    ("resource", "fields"),
    [
        ("HttpApi", {"requestId", "routeKey", "status", "latencyMs", "integrationError"}),
        ("JwtStage", {"requestId", "routeKey", "status", "latencyMs", "integrationError"}),
        ("WsStage", {"requestId", "routeKey", "status", "integrationLatencyMs", "integrationError"}),
    ],
)
def test_access_logs_are_json_lines(template: Template, resource: str, fields: set[str]) -> None:
    settings = template.sam["Resources"][resource]["Properties"]["AccessLogSettings"]
    line = json.loads(settings["Format"])  # one JSON object a request
    assert fields <= set(line)
    assert all(value.startswith("$context.") for value in line.values())
    assert settings["DestinationArn"]["Fn::GetAtt"][1] == "Arn"


def test_the_worker_concurrency_is_bounded_by_parameters(template: Template) -> None:
    worker = template.sam["Resources"]["WorkerFunction"]["Properties"]
    scaling = worker["Events"]["Jobs"]["Properties"]["ScalingConfig"]
    assert scaling == {"MaximumConcurrency": {"Ref": "WorkerMaxConcurrency"}}
    reserved = worker["ReservedConcurrentExecutions"]["Fn::If"]
    assert reserved[0] == "HasWorkerReservation" and reserved[1] == {"Ref": "WorkerReservedConcurrency"}
    mapping = next(
        r for lid, r in template.resources.items() if lid.startswith("WorkerFunction") and "Jobs" in lid
    )
    assert mapping["Properties"]["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "WorkerMaxConcurrency"}
