"""schemathesis against the app's own OpenAPI schema, in-process (ASGI), its services on moto.

Every generated request, valid or not: no 5xx, every status and header documented for the
operation, every body what the schema says, every error an RFC 7807 problem+json.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from jobgate.api.app import create_app
from jobgate.commandsets.manifest import load_manifest_registry
from jobgate.settings import Settings
from jobgate.wiring import ApiServices
from schemathesis import Case, CheckContext, Response
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.security.conftest import Api, create_key

# Bounded so the whole run stays well under two minutes in `make test`.
EXAMPLES_PER_OPERATION = 12
PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance"}


def errors_are_problems(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every 4xx/5xx is application/problem+json with the RFC 7807 members, its status matching."""
    if response.status_code < 400:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.startswith("application/problem+json"), (response.status_code, content_type)
    body = json.loads(response.content)
    assert PROBLEM_FIELDS <= set(body), body
    assert body["status"] == response.status_code
    assert body["type"].startswith("urn:jobgate:problem:")
    return True


@pytest.fixture
def fuzz_key(api: Api) -> str:
    return create_key("acme")


def _schema_app() -> Any:
    """The app as the API function builds it; only its schema is read, so no resource is touched."""
    settings = Settings(table_name="schema-only", queue_url="schema-only", bucket_name="schema-only")
    return create_app(ApiServices(settings, load_manifest_registry()))


# Loaded at collection; each test sends its requests to an app wired to that test's moto.
schema = schemathesis.openapi.from_asgi("/openapi.json", _schema_app())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
    derandomize=True,
    database=None,
)
def test_the_api_answers_what_its_schema_says(case: Case, api: Api, fuzz_key: str) -> None:
    if isinstance(case.body, dict) and case.body.get("mode") == "sync":
        # No worker runs here: a sync job would only wait out its wait_s.
        case.body["wait_s"] = 0.01
    case.call_and_validate(
        app=api.module._asgi.app,
        headers={"X-API-Key": fuzz_key},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_headers_conformance,
            response_schema_conformance,
        ],
        additional_checks=[errors_are_problems],
    )


def test_the_schema_documents_the_security_problems(api: Api) -> None:
    document = api.call("GET", "/openapi.json", None).json()
    submit = document["paths"]["/v1/jobs"]["post"]["responses"]
    for code in ("401", "413", "422", "429", "503"):
        assert submit[code]["content"] == {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        }, code
    assert "Retry-After" in submit["429"]["headers"]
    live = document["paths"]["/health/live"]["get"]["responses"]
    assert set(live) == {"200"}  # no credentials, no body, no parameters: nothing else can happen
