"""The OpenAPI document, with every error answer described as the problem+json it is."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from jobgate.api.problems import PROBLEM_MEDIA_TYPE

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An RFC 7807 problem; `errors` names each invalid field of a validation problem.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {"type": "string", "example": "urn:jobgate:problem:not-found"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
        "retry_after": {"type": "integer", "description": "Seconds to wait (429), as in Retry-After."},
    },
    "additionalProperties": True,
}

_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds until the request may succeed.", "schema": {"type": "integer"}}
}

# Answers any operation may give, beyond what its router lists.
_AUTHENTICATED = {
    "401": "Missing, unknown, revoked or expired credentials",
    "429": "Rate limit or quota reached; see Retry-After",
    "503": "A storage or queue dependency is unavailable",
}
_WITH_BODY = {"400": "The body is not JSON", "413": "Request body too large", "422": "Invalid request"}
_WITH_PARAMETERS = {"422": "Invalid request"}
_WITH_PATH_PARAMETERS = {"404": "Not found (another tenant's id is as unknown as one that never existed)"}


def _complete(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    extra: dict[str, str] = {}
    if operation.get("security"):
        extra.update(_AUTHENTICATED)
    if "requestBody" in operation:
        extra.update(_WITH_BODY)
    if operation.get("parameters"):
        extra.update(_WITH_PARAMETERS)
    if any(p.get("in") == "path" for p in operation.get("parameters", [])):
        extra.update(_WITH_PATH_PARAMETERS)
    for code, description in extra.items():
        responses.setdefault(code, {"description": description})
    for code, response in responses.items():
        if code[0] in "45":
            response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        if code == "429":
            response["headers"] = _RETRY_AFTER


def _lift_definitions(node: Any, schemas: dict[str, Any]) -> None:
    """Move every `$defs` found inside the document (a body schema written by hand from a pydantic model,
    its refs already aimed at #/components/schemas/) into the components, where the refs point."""
    if isinstance(node, dict):
        for name, spec in node.pop("$defs", {}).items():
            schemas.setdefault(name, spec)
        for value in list(node.values()):
            _lift_definitions(value, schemas)
    elif isinstance(node, list):
        for value in node:
            _lift_definitions(value, schemas)


def install(app: FastAPI) -> None:
    """Describe the problem answers in /openapi.json: 401/429/503 for authenticated operations,
    400/413/422 where there is a body, 422 for parameters, 404 for path parameters, and every
    4xx/5xx as application/problem+json."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    _complete(operation)
            schemas = schema["components"]["schemas"]
            _lift_definitions(schema, schemas)
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
