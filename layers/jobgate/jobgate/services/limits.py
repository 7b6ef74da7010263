"""Limits that keep one caller from starving the others: request rate, active jobs, upload bytes."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from jobgate.adapters.limits import BucketChanged, BucketState, LimitStore, QuotaFull
from jobgate.errors import (
    ConcurrencyLimited,
    TooManyRequests,
    UploadQuotaExceeded,
    UploadTooLarge,
    ValidationFailed,
)
from jobgate.models import JobRequest, JobStatus
from jobgate.services.egress import EgressPolicy
from jobgate.services.registry import Invocation

# Concurrent writers to one bucket each lose at most a few races; past this the request is refused.
MAX_BUCKET_RACES = 5
# A bucket untouched this long is full again anyway; the table's TTL removes its item.
BUCKET_TTL_S = 24 * 3600
# Buckets a container remembers; past this it forgets them all (each then costs one lost race).
MAX_REMEMBERED_BUCKETS = 10_000
ACTIVE_STATUSES = (JobStatus.BLOCKED, JobStatus.QUEUED, JobStatus.RUNNING)
# How soon a client refused for too many active jobs should look again.
ACTIVE_JOBS_RETRY_S = 5


class RateLimiter:
    """A token bucket per credential, kept in DynamoDB so every Lambda container shares it.

    Each request takes one token; the bucket refills at `rate_per_s` up to `burst`. A take is one
    conditional write on the bucket's version (optimistic locking): two containers can never both
    spend the same token. The last state this container saw is remembered, so a request usually
    costs one write and no read, and a refusal computed from it costs nothing: a remembered state
    can only overstate the tokens left, because other writers only take tokens away.
    """

    def __init__(
        self,
        store: LimitStore,
        *,
        rate_per_s: float,
        burst: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._rate = rate_per_s
        self._burst = float(burst)
        self._clock = clock
        self._seen: dict[str, BucketState | None] = {}

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def take(self, bucket_id: str) -> None:
        """Spend one token of the bucket, or raise TooManyRequests with when to try again."""
        if not self.enabled:
            return
        if len(self._seen) > MAX_REMEMBERED_BUCKETS:
            self._seen.clear()
        state = self._seen.get(bucket_id)
        for _ in range(MAX_BUCKET_RACES):
            now_ms = int(self._clock() * 1000)
            level = self._level(state, now_ms)
            if level < 1.0:
                raise TooManyRequests(
                    f"More than {self._rate:g} requests per second (bursts of {self._burst:g}) with this "
                    "credential.",
                    retry_after_s=math.ceil((1.0 - level) / self._rate),
                )
            updated_ms = now_ms if state is None else max(now_ms, state.updated_ms)
            try:
                self._seen[bucket_id] = self._store.write_bucket(
                    bucket_id,
                    tokens=level - 1.0,
                    now_ms=updated_ms,
                    expect=state,
                    expires_at=updated_ms // 1000 + BUCKET_TTL_S,
                )
                return
            except BucketChanged as changed:
                state = self._seen[bucket_id] = changed.current
        raise TooManyRequests(
            "Too many simultaneous requests with this credential.", retry_after_s=math.ceil(1 / self._rate)
        )

    def _level(self, state: BucketState | None, now_ms: int) -> float:
        if state is None:
            return self._burst
        # A clock behind the last writer's refills nothing rather than draining the bucket.
        elapsed_s = max(0, now_ms - state.updated_ms) / 1000
        return min(self._burst, state.tokens + elapsed_s * self._rate)


class JobAdmission:
    """What a checked job request must also pass before it is recorded: size, egress, active jobs."""

    def __init__(
        self,
        store: LimitStore,
        egress: EgressPolicy,
        *,
        max_active_jobs: int,
        max_args_bytes: int,
    ) -> None:
        self._store = store
        self._egress = egress
        self._max_active = max_active_jobs
        self._max_args = max_args_bytes

    def __call__(self, tenant: str, request: JobRequest, invocation: Invocation) -> None:
        self.check_args(request.args, invocation)
        self.check_active(tenant)

    def check_args(
        self, args: Mapping[str, Any], invocation: Invocation, *, loc: Sequence[str | int] = ()
    ) -> None:
        """422 for args too large to record, or naming an address jobs may not reach.

        `loc` prefixes the error locations (a pipeline step names its step; a job leaves it empty).
        """
        size = len(json.dumps(args, separators=(",", ":"), default=str).encode())
        if size > self._max_args:
            raise ValidationFailed(
                f"args take {size} bytes as JSON; at most {self._max_args}.",
                [
                    {
                        "loc": ["body", *loc, "args"],
                        "msg": f"at most {self._max_args} bytes",
                        "type": "too_long",
                    }
                ],
            )
        errors = self._egress.check_args(invocation.args)
        if errors:
            for error in errors:
                error["loc"] = ["body", *loc, *error["loc"][1:]]
            raise ValidationFailed(f"{len(errors)} argument(s) name an address jobs may not reach.", errors)

    def check_active(self, tenant: str, *, adding: int = 1) -> None:
        """429 when `adding` more jobs would take the tenant past its queued + running limit."""
        if self._max_active <= 0:
            return
        active = self._store.count_jobs(tenant, ACTIVE_STATUSES, up_to=self._max_active)
        if active + adding > self._max_active:
            raise ConcurrencyLimited(
                f"Tenant '{tenant}' may have {self._max_active} jobs queued or running and has {active}; "
                "submit again when one ends.",
                retry_after_s=ACTIVE_JOBS_RETRY_S,
                extra={"limit": self._max_active},
            )


class UploadQuota:
    """Upload bytes per tenant and UTC day, counted when an upload is granted (its declared size)."""

    def __init__(
        self,
        store: LimitStore,
        *,
        bytes_per_day: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._limit = bytes_per_day
        self._clock = clock

    def charge(self, tenant: str, size: int) -> None:
        if self._limit <= 0:
            return
        if size > self._limit:
            raise UploadTooLarge(
                f"This upload declares {size} bytes; tenant '{tenant}' may upload {self._limit} bytes a day, "
                "so it can never be granted.",
                extra={"limit": self._limit},
            )
        now = self._clock()
        tomorrow = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
        try:
            self._store.add_to_quota(
                f"{tenant}#UPLOADS#{now.date().isoformat()}",
                size,
                limit=self._limit,
                expires_at=int(tomorrow.timestamp()) + 2 * 24 * 3600,
            )
        except QuotaFull as full:
            raise UploadQuotaExceeded(
                f"Tenant '{tenant}' may upload {self._limit} bytes a day; {full.used} are used today "
                f"and this upload declares {size}.",
                retry_after_s=math.ceil((tomorrow - now).total_seconds()),
                extra={"limit": self._limit, "used": full.used},
            ) from full
