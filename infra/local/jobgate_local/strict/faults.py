"""Fault injection: a fraction of AWS calls fails as AWS fails, for the calls the functions make.

Kinds (each picked with equal chance among those enabled):

- ``throttle``: the service's throttling error (DynamoDB ``ProvisionedThroughputExceededException`` or
  ``ThrottlingException``, SQS ``RequestThrottled``, S3 503 ``SlowDown``);
- ``error``: a 500 (DynamoDB ``InternalServerError``, SQS ``InternalError``, S3 ``InternalError``);
- ``reset``: the connection is closed before any answer (nothing applied);
- ``drop``: the request is applied, then the connection is closed without the answer (the client cannot
  tell whether it happened, and its retry applies it again);
- ``timeout``: the request is applied, then the answer is held until the client gives up (its read
  timeout) or ``stall_s`` passes;
- ``slow``: an S3 object's body (download or upload) moves at ``slow_bytes_per_s``.

Only role sessions (the functions' identities) get faults: the local stack's plumbing and test set-up
(the admin identity) never do, nor do presigned requests made by end users' clients unless
``presigned`` is on.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .actions import Call
from .errors import AwsError, Protocol

KINDS = ("throttle", "error", "reset", "drop", "timeout", "slow")


@dataclass(frozen=True)
class FaultSettings:
    rate: float = 0.0
    kinds: tuple[str, ...] = KINDS
    seed: int | None = None
    slow_bytes_per_s: int = 256 * 1024
    stall_s: float = 60.0
    presigned: bool = False
    services: tuple[str, ...] = ("dynamodb", "sqs", "s3")

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate {self.rate} is not between 0 and 1")
        unknown = sorted(set(self.kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown fault kinds {', '.join(unknown)} (known: {', '.join(KINDS)})")
        if self.slow_bytes_per_s < 1:
            raise ValueError("slow_bytes_per_s must be at least 1")

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> FaultSettings:
        values = dict(document)
        for name in ("kinds", "services"):
            if isinstance(values.get(name), str):
                values[name] = tuple(k.strip() for k in values[name].split(",") if k.strip())
            elif name in values:
                values[name] = tuple(values[name])
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown fault settings {', '.join(unknown)}")
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "kinds": list(self.kinds), "services": list(self.services)}


@dataclass
class FaultInjector:
    """Decides, call by call, whether a fault happens and which; counts what it injected."""

    settings: FaultSettings = field(default_factory=FaultSettings)
    injected: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _random: random.Random = field(default_factory=random.Random)

    def configure(self, settings: FaultSettings) -> None:
        with self._lock:
            self.settings = settings
            self._random = random.Random(settings.seed)
            self.injected = Counter()

    def pick(self, call: Call, *, function_identity: bool, presigned: bool) -> str | None:
        with self._lock:
            settings = self.settings
            if settings.rate <= 0 or not function_identity or call.service not in settings.services:
                return None
            if presigned and not settings.presigned:
                return None
            kinds = [k for k in settings.kinds if k != "slow" or call.is_s3_object]
            if not kinds or self._random.random() >= settings.rate:
                return None
            kind = self._random.choice(kinds)
            self.injected[kind] += 1
            return kind

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {**self.settings.to_json(), "injected": dict(self.injected)}

    def reset(self) -> None:
        self.configure(replace(self.settings, rate=0.0))


def throttling(call: Call) -> AwsError:
    if call.service == "dynamodb":
        if call.operation in (
            "GetItem",
            "PutItem",
            "UpdateItem",
            "DeleteItem",
            "Query",
            "Scan",
            "BatchGetItem",
            "BatchWriteItem",
        ):
            return AwsError(
                400,
                "ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded. "
                "Consider increasing your provisioning level with the UpdateTable API.",
                "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            )
        return AwsError(
            400,
            "ThrottlingException",
            "Rate of requests exceeds the allowed throughput.",
            "com.amazonaws.dynamodb.v20120810#ThrottlingException",
        )
    if call.service == "s3":
        return AwsError(503, "SlowDown", "Please reduce your request rate.", sender=False)
    if call.service == "sqs":
        json_type = "com.amazonaws.sqs#RequestThrottled" if call.protocol is Protocol.SQS_JSON else None
        return AwsError(403, "RequestThrottled", "Request is throttled.", json_type)
    return AwsError(400, "Throttling", "Rate exceeded", "ThrottlingException")


def internal_error(call: Call) -> AwsError:
    if call.service == "dynamodb":
        return AwsError(
            500,
            "InternalServerError",
            "Internal server error",
            "com.amazonaws.dynamodb.v20120810#InternalServerError",
            sender=False,
        )
    if call.service == "s3":
        return AwsError(
            500, "InternalError", "We encountered an internal error. Please try again.", sender=False
        )
    json_type = "com.amazonaws.sqs#InternalError" if call.protocol is Protocol.SQS_JSON else None
    return AwsError(
        500, "InternalError", "We encountered an internal error. Please try again.", json_type, sender=False
    )
