"""The local stack plays the template's EventBridge schedules (the sweeper's rate(1 minute))."""

from __future__ import annotations

from pathlib import Path

from jobgate_local.schedules import parse_rate, scheduled_event, schedules
from jobgate_local.template import load_template

ROOT = Path(__file__).resolve().parents[2]


def test_rates_in_seconds_and_cron_left_out() -> None:
    assert parse_rate("rate(1 minute)") == 60
    assert parse_rate("rate(5 minutes)") == 300
    assert parse_rate("rate(2 hours)") == 7200
    assert parse_rate("cron(0 12 * * ? *)") is None


def test_the_sweeper_runs_every_minute() -> None:
    template = load_template(ROOT / "template.yaml", {"ApiKey": "x" * 20})
    assert [(s.function, s.every_s) for s in schedules(template)] == [("SweeperFunction", 60)]


def test_event_has_eventbridge_shape() -> None:
    event = scheduled_event("Sweep", "us-east-1")
    assert event["source"] == "aws.events" and event["detail-type"] == "Scheduled Event"
    assert event["resources"] == ["arn:aws:events:us-east-1:123456789012:rule/Sweep"]
