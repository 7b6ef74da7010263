"""What the sync and async clients share: retry rules, request shapes, upload bodies, safe paths."""

from __future__ import annotations

import os
import random
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from jobgate import __version__
from jobgate.client.errors import JobgateClientError, retry_after_s

USER_AGENT = f"jobgate-client/{__version__}"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# A sync submission may hold the request up to 25 s; S3 transfers move large files.
TRANSFER_TIMEOUT = httpx.Timeout(120.0, connect=10.0)
CHUNK = 1024 * 1024
OUTPUTS_PAGE = 100  # the API's largest page of a job's outputs
EVENT_WAIT_S = 20.0  # the event long poll's longest wait (the API's own bound)

ProgressCallback = Callable[[int, int], None]  # (bytes done, bytes in all)

# Failures where the request never reached the server: retrying them is always safe.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_RETRY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry; which requests may be retried is decided per request.

    A request is retried when it is safe to send twice: GET always, POST /v1/jobs with a run_id
    (the API answers the same job), presigned S3 transfers (the same bytes to the same key). A
    request that never left (connection refused) and a 429 (the API refused it, nothing was done)
    are retried whatever the method.
    """

    retries: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    max_retry_after_s: float = 30.0  # a longer Retry-After (a daily quota) is raised, not waited

    def backoff(self, attempt: int) -> float:
        base = min(self.max_backoff_s, self.backoff_s * 2.0**attempt)
        return base * (0.5 + random.random() / 2)  # jitter: clients that failed together spread out

    def delay_after_error(self, attempt: int, error: Exception, *, idempotent: bool) -> float | None:
        if attempt >= self.retries:
            return None
        if isinstance(error, _NOT_SENT) or (idempotent and isinstance(error, httpx.TransportError)):
            return self.backoff(attempt)
        return None

    def delay_after_response(
        self, attempt: int, response: httpx.Response, *, idempotent: bool
    ) -> float | None:
        if attempt >= self.retries:
            return None
        status = response.status_code
        if status == 429:
            wait = retry_after_s(dict(response.headers))
            if wait is None:
                return self.backoff(attempt)
            # At least what the API asks, and up to a quarter more: requests refused together (a
            # client's parallel calls) do not all come back in the same instant.
            return wait * (1 + random.random() / 4) if wait <= self.max_retry_after_s else None
        if idempotent and status in _RETRY_STATUSES:
            wait = retry_after_s(dict(response.headers))
            return min(wait, self.max_retry_after_s) if wait is not None else self.backoff(attempt)
        return None


def api_headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if api_key:
        headers["X-API-Key"] = api_key
    return headers


def new_run_id() -> str:
    """A run_id for a submission the client may retry: the API answers the same job every time."""
    return f"cli-{uuid.uuid4().hex}"


def submit_body(
    stage: str,
    command: str,
    args: Mapping[str, Any],
    *,
    run_id: str | None,
    timeout_s: int | None,
    mode: str,
    wait_s: float | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"stage": stage, "command": command, "args": dict(args), "mode": mode}
    if run_id is not None:
        body["run_id"] = run_id
    if timeout_s is not None:
        body["timeout_s"] = timeout_s
    if wait_s is not None:
        body["wait_s"] = wait_s
    return body


def local_paths(args: Mapping[str, Any]) -> list[Path]:
    """The `pathlib.Path` values of a job's args: local files the client uploads first."""
    found: list[Path] = []
    for value in args.values():
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, Path) and item not in found:
                found.append(item)
    return found


def replace_paths(args: Mapping[str, Any], refs: Mapping[Path, str]) -> dict[str, Any]:
    def one(item: Any) -> Any:
        return refs[item] if isinstance(item, Path) else item

    return {k: [one(i) for i in v] if isinstance(v, list | tuple) else one(v) for k, v in args.items()}


def websocket_url(url: str, api_key: str | None) -> str:
    """The WebSocket URL with `?api_key=` (API Gateway's WebSocket API reads the key from the query)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "api_key"]
    if api_key:
        query.append(("api_key", api_key))
    return urlunsplit(parts._replace(query=urlencode(query)))


def safe_join(root: Path, name: str) -> Path:
    """`root/name` for an output's relative name; a name that would leave `root` is refused."""
    relative = PurePosixPath(name.replace("\\", "/"))
    if relative.is_absolute() or not relative.parts or any(p in ("..", "") for p in relative.parts):
        raise JobgateClientError(f"refusing to write output '{name}': not a relative path inside the folder")
    target = root.joinpath(*relative.parts)
    if not target.resolve().is_relative_to(root.resolve()):
        raise JobgateClientError(f"refusing to write output '{name}': it leaves {root}")
    return target


def progress_from(progress: ProgressCallback | None, base: int, total: int) -> Callable[[int], None]:
    """A reporter of bytes sent in one part, as progress over the whole file."""

    def report(sent: int) -> None:
        if progress is not None:
            progress(base + sent, total)

    return report


def temp_sibling(target: Path) -> Path:
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")


def content_disposition_name(header: str | None) -> str | None:
    if not header:
        return None
    for piece in header.split(";"):
        key, _, value = piece.strip().partition("=")
        if key.lower() == "filename" and value:
            return os.path.basename(value.strip().strip('"')) or None
    return None


@dataclass(frozen=True)
class FormBody:
    """A multipart/form-data body for S3's presigned POST: the policy fields, then the file, last."""

    content_type: str
    head: bytes
    tail: bytes
    size: int

    @property
    def length(self) -> int:
        return len(self.head) + self.size + len(self.tail)


def form_body(fields: Mapping[str, str], filename: str, media_type: str, size: int) -> FormBody:
    boundary = f"jobgate-{secrets.token_hex(16)}"
    safe_name = "".join(c if c.isalnum() or c in "._-" else "_" for c in filename) or "file"
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    )
    head += (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{safe_name}"\r\n'
        f"Content-Type: {media_type}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return FormBody(f"multipart/form-data; boundary={boundary}", head, tail, size)


def storage_error_message(response: httpx.Response) -> str:
    """S3's own error (XML `<Message>`), or the start of whatever it answered."""
    text = response.text
    start, end = text.find("<Message>"), text.find("</Message>")
    if start >= 0 and end > start:
        return text[start + len("<Message>") : end]
    return text[:200].strip() or response.reason_phrase


class PollSchedule:
    """Poll fast at first (short jobs end in a second), then every `interval` seconds."""

    def __init__(self, interval: float) -> None:
        self._interval = max(0.05, interval)
        self._next = min(0.25, self._interval)

    def next(self) -> float:
        wait = self._next
        self._next = min(self._interval, self._next * 2)
        return wait


class Quiet:
    """Time since a watched job last said something; events reset it, keep-alives do not."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._since = time.monotonic()

    def reset(self) -> None:
        self._since = time.monotonic()

    def remaining(self) -> float:
        return max(0.01, self._seconds - (time.monotonic() - self._since))

    @property
    def expired(self) -> bool:
        return time.monotonic() - self._since >= self._seconds


class Deadline:
    def __init__(self, seconds: float | None) -> None:
        self._end = None if seconds is None else time.monotonic() + seconds

    @property
    def passed(self) -> bool:
        return self._end is not None and time.monotonic() >= self._end
