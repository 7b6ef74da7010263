"""The published OpenAPI document: every `$ref` resolves, the document validates, and a 405 names every
method of its path."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jobgate.api.app import create_app
from jobgate.services.registry import Registry
from jobgate.settings import Settings
from jobgate.wiring import ApiServices
from openapi_spec_validator import validate


@pytest.fixture(scope="module")
def api() -> Iterator[TestClient]:
    settings = Settings.model_construct(table_name="-", queue_url="-", bucket_name="-")
    with TestClient(create_app(ApiServices(settings, Registry([])))) as client:
        yield client


@pytest.fixture(scope="module")
def document(api: TestClient) -> dict[str, Any]:
    answer = api.get("/openapi.json")
    assert answer.status_code == 200
    doc: dict[str, Any] = answer.json()
    return doc


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref} points outside the document"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve ({part!r} is missing)"
        node = node[part]
    return node


def test_every_ref_of_the_published_document_resolves(document: dict[str, Any]) -> None:
    found = sorted(set(refs(document)))
    assert "#/components/schemas/StepRequest" in found  # the pipeline body names its steps' schema
    for ref in found:
        resolve(document, ref)
    assert not any("$defs" in str(key) for key in _keys(document))


def _keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _keys(value)
    elif isinstance(node, list):
        for value in node:
            yield from _keys(value)


def test_the_published_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("OPTIONS", "/v1/jobs", "GET, POST"),
        ("PUT", "/v1/jobs/01JD7Q9A1B2C3D4E5F6G7H8J9K", "DELETE, GET"),
        ("DELETE", "/v1/pipelines", "GET, POST"),
        ("POST", "/v1/runs/nightly", "GET"),
    ],
)
def test_a_405_names_every_method_of_its_path(api: TestClient, method: str, path: str, allowed: str) -> None:
    answer = api.request(method, path)
    assert answer.status_code == 405
    assert answer.headers["allow"] == allowed
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["detail"] == f"{method} is not allowed on {path}; it takes {allowed}."
