"""Domain errors: every failure a caller can act on, each with its HTTP meaning."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobgate.models import Job


class JobgateError(Exception):
    """Base of the errors the API maps to problem+json."""

    status: int = 500
    title: str = "Internal error"
    type_slug: str = "internal"

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the answer carries besides the problem body (Retry-After, ...)."""
        return {}


class NotFound(JobgateError):
    status, title, type_slug = 404, "Not found", "not-found"


class Conflict(JobgateError):
    status, title, type_slug = 409, "Conflict", "conflict"


class RunIdConflict(Conflict):
    title, type_slug = "run_id already used for another request", "run-id-conflict"


class InvalidTransition(Conflict):
    """A conditional write of a job missed. `current` is the job as the write found it, when the store
    said (DynamoDB answers it with the refusal, so no read is needed to decide what to do next)."""

    title, type_slug = "Job is not in a state that allows this", "invalid-transition"

    def __init__(
        self, detail: str, *, current: Job | None = None, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(detail, extra=extra)
        self.current = current


class ValidationFailed(JobgateError):
    """Input that the contract refuses; `errors` names each field."""

    status, title, type_slug = 422, "Validation failed", "validation"

    def __init__(self, detail: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(detail, extra={"errors": errors})
        self.errors = errors


class UnsupportedMediaType(ValidationFailed):
    title, type_slug = "Media type not accepted", "media-type"


class AssetNotReady(Conflict):
    title, type_slug = "Asset is not available yet", "asset-not-ready"


class JobNotEnded(Conflict):
    """What a job has to show (its outputs) exists only once it has ended."""

    title, type_slug = "Job has not ended", "job-not-ended"


class JobNotSucceeded(Conflict):
    """A `job://` input names a job that did not succeed: its outputs are not an input to trust."""

    title, type_slug = "Job has not succeeded", "job-not-succeeded"


class AssetFailed(Conflict):
    """An input names an asset whose upload failed its check; `reason` says why (it never will be used)."""

    title, type_slug = "Asset failed its upload check", "asset-failed"


class Unauthorized(JobgateError):
    status, title, type_slug = 401, "Unauthorized", "unauthorized"


class Gone(JobgateError):
    status, title, type_slug = 410, "Gone", "gone"


class ServiceUnavailable(JobgateError):
    status, title, type_slug = 503, "Service unavailable", "unavailable"


class StoreError(JobgateError):
    """A data-store call failed for a reason the caller cannot fix."""

    status, title, type_slug = 503, "Storage unavailable", "storage"


class QueueError(JobgateError):
    status, title, type_slug = 503, "Queue unavailable", "queue"


class BlobError(JobgateError):
    status, title, type_slug = 503, "Object storage unavailable", "blob"


class CommandSetUnavailable(JobgateError):
    """The command set is not installed where this code runs (the API carries only manifests)."""

    status, title, type_slug = 503, "Command set unavailable", "command-set-unavailable"


class SecretUnavailable(JobgateError):
    """A secret a command needs could not be read: not configured, missing, or not granted to this role."""

    status, title, type_slug = 503, "Secret unavailable", "secret-unavailable"


class NoCapacity(JobgateError):
    """The container runner has no capacity for a task now (RunTask refused it); later may do."""

    status, title, type_slug = 503, "No capacity", "no-capacity"


class RunnerUnavailable(JobgateError):
    """The process that forks the worker's commands (the zygote) failed to start or stopped."""

    status, title, type_slug = 503, "Command runner unavailable", "runner-unavailable"


class PayloadTooLarge(JobgateError):
    status, title, type_slug = 413, "Request body too large", "payload-too-large"


class UploadTooLarge(PayloadTooLarge):
    """A declared upload larger than could ever be granted (not a 429: waiting would not help)."""

    title, type_slug = "Upload too large", "upload-too-large"


class TooManyRequests(JobgateError):
    """A limit was reached; the same request may succeed after `retry_after_s` seconds."""

    status, title, type_slug = 429, "Too many requests", "rate-limited"

    def __init__(self, detail: str, *, retry_after_s: int, extra: dict[str, Any] | None = None) -> None:
        self.retry_after_s = max(1, retry_after_s)
        super().__init__(detail, extra={"retry_after": self.retry_after_s, **(extra or {})})

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class ConcurrencyLimited(TooManyRequests):
    title, type_slug = "Too many active jobs", "concurrency-limit"


class UploadQuotaExceeded(TooManyRequests):
    title, type_slug = "Daily upload quota reached", "upload-quota"
