"""boto3 clients, created on first use so a cold start pays only for the clients it needs, and the time
every AWS call may take.

Two budgets, one per role:

- ``API`` (ApiFunction, WsFunction: answers behind API Gateway, whose integration times out after 30 s
  and whose Lambda has 29 s). One attempt is at most 1 s to connect + 2 s to read = 3 s; three
  attempts; botocore's standard mode sleeps before retry i at most min(2**(i-1), 20) s on throttling
  (50 ms otherwise), plus up to 5 s more when AWS sends ``x-amz-retry-after``. One call alone is then at
  most 3 * 3 + (1 + 5) + (2 + 5) = 22 s. A request makes several calls, so the budget of a request is a
  deadline instead (``deadline()``, set by the API from the request's arrival): an attempt starts only
  if it can end (connect + read) before the deadline, and a retry only if its longest sleep and attempt
  can too. No AWS call of a request then runs past its deadline, however many it makes.
- ``BACKGROUND`` (workers, the sweeper, the dead-letter function: minutes of budget, large uploads):
  5 s to connect, 20 s to read, four attempts; at most 4 * 25 + (1 + 5) + (2 + 5) + (4 + 5) = 122 s a call.
  A caller with a tighter bound of its own (a lease renewal) sets a ``deadline()`` around its calls.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError

from jobgate import observability as obs

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_ssm import SSMClient

# botocore's standard retry mode: the sleep before retry i (1-based) is rand(0, 1) * min(scale * 2**(i-1),
# 20) s, scale 1 s for throttling errors, and an x-amz-retry-after header may add up to 5 s.
_THROTTLE_SCALE_S = 1.0
_MAX_BACKOFF_S = 20.0
_RETRY_AFTER_EXTRA_S = 5.0


@dataclass(frozen=True)
class Budget:
    """How long one AWS call may take: each attempt (connect + read), and how many attempts."""

    connect_s: float
    read_s: float
    attempts: int

    @property
    def attempt_s(self) -> float:
        return self.connect_s + self.read_s

    @staticmethod
    def backoff_s(retry: int) -> float:
        """The longest sleep botocore may take before retry number `retry` (1-based)."""
        doubled: float = _THROTTLE_SCALE_S * 2.0 ** (retry - 1)
        return min(doubled, _MAX_BACKOFF_S) + _RETRY_AFTER_EXTRA_S

    @property
    def worst_call_s(self) -> float:
        """One call, every attempt timing out and every sleep at its longest."""
        return self.attempts * self.attempt_s + sum(self.backoff_s(r) for r in range(1, self.attempts))

    def config(self) -> Config:
        # Standard retry mode backs off on throttling; adaptive adds client-side rate limiting.
        return Config(
            retries={"total_max_attempts": self.attempts, "mode": "standard"},
            connect_timeout=self.connect_s,
            read_timeout=self.read_s,
        )


API = Budget(connect_s=1, read_s=2, attempts=3)
BACKGROUND = Budget(connect_s=5, read_s=20, attempts=4)

# Seconds (time.monotonic()) by which every AWS call of the current request must have ended, or None.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("jobgate_aws_deadline", default=None)


class DeadlineExceeded(BotoCoreError):
    """An AWS call was not attempted: it could not have ended before the request's deadline."""

    fmt = "not attempted: {left:.1f} s left before the deadline, an attempt may take {needs:.1f} s"


@contextmanager
def deadline(at: float) -> Iterator[None]:
    """Every AWS call made inside (this thread or task) ends by `at` (time.monotonic()), or is not made."""
    token = _deadline.set(at)
    try:
        yield
    finally:
        _deadline.reset(token)


def seconds_left() -> float | None:
    """Seconds left before the current deadline, or None when there is none."""
    at = _deadline.get()
    return None if at is None else at - time.monotonic()


def install_deadline(client: Any, budget: Budget) -> None:
    """Make a client respect `deadline()`: refuse an attempt, or a retry, that could not end in time."""
    attempt_s = budget.attempt_s

    def before_send(**_: Any) -> None:
        left = seconds_left()
        if left is not None and left < attempt_s:
            raise DeadlineExceeded(left=left, needs=attempt_s)

    def needs_retry(attempts: int, **_: Any) -> bool | None:
        left = seconds_left()
        if left is not None and left < Budget.backoff_s(attempts) + attempt_s:
            return False  # no retry: the error at hand is raised
        return None  # botocore's own retry handler decides

    # botocore calls the handlers of the most specific event name first: register where its own retry
    # handler is (needs-retry.<service>), ahead of it.
    service = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register_first(
        f"before-send.{service}", before_send, unique_id="jobgate-deadline-send"
    )
    client.meta.events.register_first(
        f"needs-retry.{service}", needs_retry, unique_id="jobgate-deadline-retry"
    )


def count_retries(client: Any) -> None:
    """Emit the retries each call of the client took (the AwsRetries metric: throttling and errors
    botocore retried). after-call runs for every answer, an error's too; a call whose every attempt
    failed to connect has no answer and is not counted (its error is logged by its caller)."""
    service = client.meta.service_model.service_id.hyphenize()

    def after_call(parsed: Any = None, **_: Any) -> None:
        retries = int(((parsed or {}).get("ResponseMetadata") or {}).get("RetryAttempts") or 0)
        if retries:
            obs.emit(obs.AWS_RETRIES, retries, aws_service=service)

    client.meta.events.register(f"after-call.{service}", after_call, unique_id="jobgate-retries")


@cache
def _session() -> boto3.session.Session:
    return boto3.session.Session()


@cache
def _client(service: str, budget: Budget) -> Any:
    config = budget.config()
    if service == "s3":
        config = config.merge(Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    # The endpoint comes from AWS_ENDPOINT_URL when set (the local stack), as boto3 reads it itself.
    client = _session().client(service, config=config)  # type: ignore[call-overload]
    install_deadline(client, budget)
    count_retries(client)
    return client


def dynamodb(budget: Budget = API) -> DynamoDBClient:
    """The DynamoDB client of this role; one per budget, shared by every adapter of that role."""
    return _client("dynamodb", budget)  # type: ignore[no-any-return]


def sqs(budget: Budget = API) -> SQSClient:
    return _client("sqs", budget)  # type: ignore[no-any-return]


def s3(budget: Budget = API) -> S3Client:
    return _client("s3", budget)  # type: ignore[no-any-return]


def secretsmanager(budget: Budget = BACKGROUND) -> SecretsManagerClient:
    return _client("secretsmanager", budget)  # type: ignore[no-any-return]


def ssm(budget: Budget = BACKGROUND) -> SSMClient:
    return _client("ssm", budget)  # type: ignore[no-any-return]


def ecs(budget: Budget = BACKGROUND) -> ECSClient:
    return _client("ecs", budget)  # type: ignore[no-any-return]


def cloudformation(budget: Budget = API) -> CloudFormationClient:
    return _client("cloudformation", budget)  # type: ignore[no-any-return]


def reset_clients() -> None:
    """Forget cached clients (tests that swap endpoints or credentials)."""
    _session.cache_clear()
    _client.cache_clear()
