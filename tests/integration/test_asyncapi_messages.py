"""Every message the WebSocket side sends in a session validates against docs/asyncapi.yaml's payloads."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from jobgate.models import JobEvent, JobResult, JobStatus, utcnow
from jobgate.services.events import JobStream

from tests.integration.test_job_events import parts  # noqa: F401  (the fixture)
from tests.integration.test_store import new_job
from tests.unit.test_asyncapi import DOC_PATH, payload_validator

SCHEMAS = {
    "snapshot": "Snapshot",
    "log": "LogEvent",
    "progress": "ProgressEvent",
    "status": "StatusEvent",
    "unsubscribed": "Unsubscribed",
    "error": "Error",
}


def test_a_whole_session_speaks_as_documented(parts: Any) -> None:  # noqa: F811
    import yaml

    doc = yaml.safe_load(DOC_PATH.read_text())
    store, _events, conns, publisher, subs = parts
    job, _ = store.create(new_job(tenant="acme"))
    assert subs.connect("c1", "key-a")
    subs.subscribe("c1", job.job_id, 0)
    now = utcnow()
    running = store.claim(job, now=now, lease_until=now + timedelta(seconds=30))
    stream = JobStream(job.job_id, publisher)
    stream.status(running)
    publisher.publish([JobEvent(type="log", job_id=job.job_id, stream="stdout", text="working\n")])
    publisher.publish([JobEvent(type="progress", job_id=job.job_id, progress=0.5)])
    result = JobResult(status=JobStatus.SUCCEEDED, exit_code=0, stdout_tail="working\n", stderr_tail="")
    stream.status(store.finish(running, attempt=1, result=result, now=now))
    subs.subscribe("c1", "01JD7Q9A1B2C3D4E5F6G7H8J9K", None)  # unknown: an error
    subs.reject("c1", "Send {'action': 'subscribe', 'job_id': ...}")
    subs.unsubscribe("c1", job.job_id)
    subs.subscribe("stranger", job.job_id, None)  # a connection never made

    sent = conns.sent["c1"] + conns.sent["stranger"]
    assert {m["type"] for m in sent} == set(SCHEMAS)
    for message in sent:
        payload_validator(doc, SCHEMAS[message["type"]]).validate(message)
    codes = {m["code"] for m in sent if m["type"] == "error"}
    assert codes == {"not_found", "bad_request", "unknown_connection"}
