"""RFC 7807 problem+json answers for every error the API gives."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from jobgate.errors import JobgateError
from jobgate.observability import logger

PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem_type(slug: str) -> str:
    return f"urn:jobgate:problem:{slug}"


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


def problem(
    request: Request,
    status: int,
    *,
    slug: str,
    title: str | None = None,
    detail: str = "",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> ProblemResponse:
    body: dict[str, Any] = {
        "type": problem_type(slug),
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    body.update(extra)
    return ProblemResponse(body, status_code=status, headers=headers)


def _http_slug(status: int) -> str:
    return HTTPStatus(status).phrase.lower().replace(" ", "-").replace("'", "")


async def _jobgate_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, JobgateError)
    if exc.status >= 500:
        logger.warning("service dependency failed", error=exc.detail, type=exc.type_slug)
    headers = {"WWW-Authenticate": "ApiKey"} if exc.status == 401 else {}
    headers.update(exc.headers)
    return problem(
        request,
        exc.status,
        slug=exc.type_slug,
        title=exc.title,
        detail=exc.detail,
        headers=headers or None,
        **exc.extra,
    )


def _not_json(request: Request, exc: RequestValidationError) -> str | None:
    """Why the body is not JSON at all (a 400, as docs/api.md says), or None when it is JSON of the
    wrong shape (a 422 naming the fields)."""
    for error in exc.errors():
        loc = tuple(error.get("loc", ()))
        if not loc or loc[0] != "body":
            continue
        if error.get("type") == "json_invalid":
            where = f" at character {loc[1]}" if len(loc) > 1 else ""
            return f"The body is not JSON: it cannot be parsed{where}."
        if isinstance(error.get("input"), bytes):  # FastAPI reads a non-JSON media type as bytes
            sent = request.headers.get("content-type") or "none"
            return f"The body is not JSON: send it with Content-Type: application/json (it had {sent})."
    return None


async def _validation_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    not_json = _not_json(request, exc)
    if not_json is not None:
        return problem(request, 400, slug="bad-request", title="Bad Request", detail=not_json)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors)
    return problem(
        request,
        422,
        slug="validation",
        title="Validation failed",
        detail=f"Invalid: {fields}.",
        errors=errors,
    )


async def _http_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"No route for {request.method} {request.url.path}."
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405:
        allowed = allowed_methods(request)
        detail = f"{request.method} is not allowed on {request.url.path}; it takes {', '.join(allowed)}."
        headers = {**(headers or {}), "Allow": ", ".join(allowed)}
    return problem(request, exc.status_code, slug=_http_slug(exc.status_code), detail=detail, headers=headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes on this path: each method is a route of its own, and the router's
    405 names only the first that matched the path. Asked of the router itself, method by method."""
    routes = request.app.router.routes
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in routes):
            allowed.append(method)
    return sorted(allowed)


async def _unexpected(request: Request, exc: Exception) -> ProblemResponse:
    logger.exception("unhandled error", path=request.url.path, error=repr(exc))
    return problem(
        request, 500, slug="internal", title="Internal error", detail="An unexpected error occurred."
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(JobgateError, _jobgate_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
