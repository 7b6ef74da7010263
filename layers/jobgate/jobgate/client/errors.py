"""What the client raises: one exception per problem+json status, carrying the problem's fields."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from jobgate.client.models import RunResult


class JobgateClientError(Exception):
    """Base of everything the jobgate client raises."""


class TransportError(JobgateClientError):
    """The service could not be reached (connection refused, DNS, timeout), retries included."""


class JobgateAPIError(JobgateClientError):
    """An error answer of the jobgate API, with the fields of its RFC 7807 problem."""

    def __init__(
        self,
        status: int,
        *,
        type: str = "about:blank",
        title: str = "",
        detail: str = "",
        instance: str = "",
        errors: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.type = type
        self.title = title or _phrase(status)
        self.detail = detail
        self.instance = instance
        self.errors = errors or []
        self.body = body or {}
        self.headers = headers or {}
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """One readable line: the title, the detail, and each invalid field."""
        text = f"{self.title}: {self.detail}" if self.detail and self.detail != self.title else self.title
        fields = [_field_error(e) for e in self.errors[:5]]
        if fields:
            text += " (" + "; ".join(fields) + ")"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, type={self.type!r}, detail={self.detail!r})"


class BadRequest(JobgateAPIError):
    """400."""


class Unauthorized(JobgateAPIError):
    """401: the API key is missing, unknown, revoked or expired."""


class Forbidden(JobgateAPIError):
    """403."""


class NotFound(JobgateAPIError):
    """404: no such job, asset, command or output (for this tenant)."""


class Conflict(JobgateAPIError):
    """409: the job is already finished, the run_id names another request, the asset is not ready..."""


class Gone(JobgateAPIError):
    """410: the file was removed by the retention policy."""


class PayloadTooLarge(JobgateAPIError):
    """413."""


class ValidationError(JobgateAPIError):
    """422: the request does not match the command's contract; `errors` names each field."""


class RateLimited(JobgateAPIError):
    """429: a rate limit or quota; the same request may succeed after `retry_after` seconds."""

    @property
    def retry_after(self) -> float | None:
        return retry_after_s(self.headers, self.body)


class ServerError(JobgateAPIError):
    """5xx."""


class ServiceUnavailable(ServerError):
    """503: a dependency of the service (table, queue, bucket) is unavailable."""


class StorageError(JobgateClientError):
    """S3 refused a presigned upload or download (expired URL, policy, size)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"storage answered {status}: {message}")


class UploadFailed(JobgateClientError):
    """The uploaded file did not match what was declared (size, media type); the asset is FAILED."""


class WaitTimeout(JobgateClientError):
    """`wait`/`run` gave up before the job ended; the job itself goes on."""


class JobFailed(JobgateClientError):
    """`run(check=True)` of a job that did not succeed; `result` holds its outputs and logs."""

    def __init__(self, result: RunResult) -> None:
        self.result = result
        super().__init__(result.summary)


_BY_STATUS: dict[int, type[JobgateAPIError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    413: PayloadTooLarge,
    422: ValidationError,
    429: RateLimited,
    503: ServiceUnavailable,
}


def error_class(status: int) -> type[JobgateAPIError]:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else JobgateAPIError


def error_from_response(response: httpx.Response) -> JobgateAPIError:
    """The typed exception for an error answer, problem+json or not (a gateway's own 502 or 504)."""
    status = response.status_code
    body: dict[str, Any] = {}
    try:
        parsed = json.loads(response.content) if response.content else {}
        if isinstance(parsed, dict):
            body = parsed
    except ValueError:
        pass
    detail = body.get("detail")
    if not isinstance(detail, str):
        # API Gateway answers its own errors as {"message": "..."}; anything else as text.
        detail = str(body.get("message") or response.text[:300].strip())
    cls = error_class(status)
    return cls(
        status,
        type=str(body.get("type") or "about:blank"),
        title=str(body.get("title") or _phrase(status)),
        detail=detail,
        instance=str(body.get("instance") or response.request.url.path),
        errors=body.get("errors") if isinstance(body.get("errors"), list) else None,
        body=body,
        headers=dict(response.headers),
    )


def retry_after_s(headers: dict[str, str], body: dict[str, Any] | None = None) -> float | None:
    """Seconds the server asked to wait (Retry-After, or the problem's retry_after)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for raw in (lowered.get("retry-after"), (body or {}).get("retry_after")):
        try:
            if raw is not None:
                return max(0.0, float(raw))
        except (TypeError, ValueError):
            continue
    return None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _field_error(error: dict[str, Any]) -> str:
    loc = [str(part) for part in error.get("loc", []) if part not in ("body", "query", "path")]
    name = ".".join(loc[1:] if loc[:1] == ["args"] else loc)
    msg = str(error.get("msg", ""))
    return f"{name}: {msg}" if name else msg
