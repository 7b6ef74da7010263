"""Regression, found by the local WebSocket gateway's e2e run: a worker publishing while a client subscribes
must not get an event to the client ahead of its snapshot (DESIGN.md §5: the snapshot comes first).

A service-level test (SubscriptionService with moto); it sits with the local gateway's tests only because
that is where it was found, and belongs with tests/integration/test_job_events.py.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.connections import ConnectionGone
from jobgate.adapters.dynamo import JobStore
from jobgate.adapters.events import EventStore
from jobgate.models import JobEvent
from jobgate.services.events import Publisher, SubscriptionService

from tests.integration.test_store import new_job
from tests.support.aws import Resources


class RecordingConnections:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, connection_id: str, message: dict[str, Any]) -> None:
        if connection_id == "gone":
            raise ConnectionGone(connection_id)
        self.sent.append(message)


@pytest.mark.parametrize("window", ["after the job is read", "after the subscription is stored"])
def test_an_event_published_while_a_client_subscribes_comes_after_its_snapshot_once(
    resources: Resources, monkeypatch: pytest.MonkeyPatch, window: str
) -> None:
    store = JobStore(aws_clients.dynamodb(), resources.table_name, timedelta(days=1))
    events = EventStore(aws_clients.dynamodb(), resources.table_name, timedelta(days=1))
    connections = RecordingConnections()
    publisher = Publisher(events, connections)  # type: ignore[arg-type]
    subscriptions = SubscriptionService(store, events, publisher, lambda key: "acme" if key == "k" else None)
    job, _ = store.create(new_job(tenant="acme"))
    publisher.publish([JobEvent(type="progress", job_id=job.job_id, progress=0.1)])

    def worker_publishes() -> None:
        publisher.publish([JobEvent(type="log", job_id=job.job_id, stream="stderr", text="INFO: f00.png\n")])

    if window == "after the job is read":
        read = store.get

        def read_then_publish(job_id: str, **kwargs: Any) -> Any:
            found = read(job_id, **kwargs)
            worker_publishes()
            return found

        monkeypatch.setattr(store, "get", read_then_publish)
    else:
        put = events.put_subscription

        def put_then_publish(*args: Any) -> None:
            put(*args)
            worker_publishes()

        monkeypatch.setattr(events, "put_subscription", put_then_publish)

    assert subscriptions.connect("c1", "k")
    subscriptions.subscribe("c1", job.job_id, None)
    snapshot, *rest = connections.sent
    assert snapshot["type"] == "snapshot" and snapshot["seq"] == 1
    assert [(m["type"], m["seq"]) for m in rest] == [("log", 2)]


def test_no_subscription_is_kept_for_a_client_gone_before_its_snapshot(resources: Resources) -> None:
    store = JobStore(aws_clients.dynamodb(), resources.table_name, timedelta(days=1))
    events = EventStore(aws_clients.dynamodb(), resources.table_name, timedelta(days=1))
    publisher = Publisher(events, RecordingConnections())  # type: ignore[arg-type]
    subscriptions = SubscriptionService(store, events, publisher, lambda key: "acme")
    job, _ = store.create(new_job(tenant="acme"))
    assert subscriptions.connect("gone", "k")
    subscriptions.subscribe("gone", job.job_id, None)
    assert events.subscriptions(job.job_id) == []
    assert events.connection_tenant("gone") is None
