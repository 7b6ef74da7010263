"""docs/asyncapi.yaml: a valid AsyncAPI 3.0 document whose messages are the code's."""

from __future__ import annotations

import typing
import warnings
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from jobgate.models import JobEvent, JobStatus, SubscribeRequest
from pydantic import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from tests.unit.test_openapi_document import refs, resolve

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
EVENTS = {"log": "LogEvent", "progress": "ProgressEvent", "status": "StatusEvent"}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOC_PATH.read_text())
    return loaded


def payload_validator(doc: dict[str, Any], schema_name: str) -> jsonschema.Draft7Validator:
    """A validator of one payload schema, its refs resolved inside the document."""
    registry: Registry[Any] = Registry().with_resource("urn:asyncapi", Resource(doc, DRAFT7))
    return jsonschema.Draft7Validator(
        {"$ref": f"urn:asyncapi#/components/schemas/{schema_name}"}, registry=registry
    )


def test_the_document_is_valid_asyncapi_3(doc: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the library's own field-name warnings
        from asyncapi3 import AsyncAPI3

    parsed = AsyncAPI3.model_validate(doc)
    assert parsed.asyncapi == "3.0.0"
    for ref in set(refs(doc)):
        resolve(doc, ref)


def test_a_broken_document_is_refused(doc: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        from asyncapi3 import AsyncAPI3
    broken = {
        **doc,
        "operations": {"subscribeToJob": {**doc["operations"]["subscribeToJob"], "action": "push"}},
    }
    with pytest.raises(ValidationError):
        AsyncAPI3.model_validate(broken)


def test_the_subscribe_request_is_the_code_model(doc: dict[str, Any]) -> None:
    schema = doc["components"]["schemas"]["SubscribeRequest"]
    assert set(schema["properties"]) == set(SubscribeRequest.model_fields)
    assert schema["required"] == [n for n, f in SubscribeRequest.model_fields.items() if f.is_required()]
    action = SubscribeRequest.model_fields["action"].annotation
    assert schema["properties"]["action"]["enum"] == list(typing.get_args(action))
    for name in ("subscribe", "unsubscribe"):
        for example in doc["components"]["messages"][name]["examples"]:
            SubscribeRequest.model_validate(example["payload"])
            payload_validator(doc, "SubscribeRequest").validate(example["payload"])


def test_the_events_are_the_code_model(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    documented = set().union(*(schemas[name]["properties"] for name in EVENTS.values()))
    assert documented == set(JobEvent.model_fields)
    kinds = typing.get_args(JobEvent.model_fields["type"].annotation)
    assert set(kinds) == set(EVENTS)
    assert schemas["JobStatus"]["enum"] == [s.value for s in JobStatus]
    for kind, schema_name in EVENTS.items():
        for example in doc["components"]["messages"][kind].get("examples", []):
            payload_validator(doc, schema_name).validate(example["payload"])
            assert JobEvent.model_validate(example["payload"]).wire() == example["payload"]


def test_each_event_the_code_makes_validates(doc: dict[str, Any]) -> None:
    made = [
        JobEvent(type="log", job_id="J", seq=1, stream="stdout", text="hello\n"),
        JobEvent(type="progress", job_id="J", seq=2, progress=0.5),
        JobEvent(type="status", job_id="J", seq=3, status=JobStatus.RUNNING),
        JobEvent(
            type="status",
            job_id="J",
            seq=4,
            status=JobStatus.FAILED,
            exit_code=2,
            error={"type": "exit", "message": "x"},
        ),
    ]
    for event in made:
        payload_validator(doc, EVENTS[event.type]).validate(event.wire())
    with pytest.raises(jsonschema.ValidationError):  # the schemas do refuse what is not an event
        payload_validator(doc, "LogEvent").validate(
            {"type": "log", "job_id": "J", "seq": 1, "stream": "stdin"}
        )
