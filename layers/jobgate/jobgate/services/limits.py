"""Limits that keep one caller from starving the others: request rate, active jobs, upload bytes."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from jobgate.adapters.limits import BucketRefused, LimitStore, QuotaFull
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

# Writes one take may make: the bucket's two forms, and once more if it went idle in between.
MAX_BUCKET_WRITES = 3
# A bucket untouched this long is full again anyway; the table's TTL removes its item.
BUCKET_TTL_S = 24 * 3600
# Buckets a container remembers; past this it forgets them all (each then costs one lost race).
MAX_REMEMBERED_BUCKETS = 10_000
ACTIVE_STATUSES = (JobStatus.BLOCKED, JobStatus.QUEUED, JobStatus.RUNNING)
# How soon a client refused for too many active jobs should look again.
ACTIVE_JOBS_RETRY_S = 5


class RateLimiter:
    """A rate per credential with bursts (GCRA, the token bucket's equivalent), kept in DynamoDB so
    every Lambda container shares it.

    The bucket is one number, its theoretical arrival time (TAT): when the bucket would be full again.
    A request at `now` is allowed when max(TAT, now) <= now + (burst - 1) / rate, and moves the TAT
    one interval (1 / rate) on. Both moves are single conditional updates DynamoDB computes itself (an
    idle bucket is set to now + interval; a busy one gets `tat + interval`), so simultaneous requests
    in many containers never overwrite each other and none is refused for having raced another: a
    request is refused only when the bucket is empty. The last TAT this container saw is remembered:
    other writers only move it on, so a refusal computed from it costs no call.
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
        self._burst = burst
        self._clock = clock
        self._interval_us = round(1_000_000 / rate_per_s) if rate_per_s > 0 else 0
        self._seen: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def take(self, bucket_id: str) -> None:
        """Let one request through, or raise TooManyRequests with when to try again."""
        if not self.enabled:
            return
        if len(self._seen) > MAX_REMEMBERED_BUCKETS:
            self._seen.clear()
        now_us = int(self._clock() * 1_000_000)
        limit_us = now_us + (self._burst - 1) * self._interval_us
        tat = self._seen.get(bucket_id)
        if tat is not None and tat > limit_us:
            raise self._refusal(tat - limit_us)
        expires_at = now_us // 1_000_000 + BUCKET_TTL_S
        for _ in range(MAX_BUCKET_WRITES):
            try:
                if tat is None or tat < now_us:
                    tat = self._store.start_bucket(
                        bucket_id, now_us=now_us, interval_us=self._interval_us, expires_at=expires_at
                    )
                else:
                    tat = self._store.add_to_bucket(
                        bucket_id,
                        now_us=now_us,
                        interval_us=self._interval_us,
                        limit_us=limit_us,
                        expires_at=expires_at,
                    )
                self._seen[bucket_id] = tat
                return
            except BucketRefused as refused:
                tat = refused.tat_us
                if tat is not None and tat > limit_us:
                    self._seen[bucket_id] = tat
                    raise self._refusal(tat - limit_us) from None
        raise TooManyRequests("The rate limit could not be applied; try again.", retry_after_s=1)

    def _refusal(self, wait_us: int) -> TooManyRequests:
        return TooManyRequests(
            f"More than {self._rate:g} requests per second (bursts of {self._burst}) with this credential.",
            retry_after_s=max(1, math.ceil(wait_us / 1_000_000)),
        )


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
