"""Settings validated once per cold start from the function's environment."""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from jobgate.services.secrets import parse_secret_map

# API Gateway answers 504 after 30 s; a sync request must hand back 202 well before that.
MAX_SYNC_WAIT_S = 25.0
# GET /v1/jobs/{id}/events waits at most this long for an event (a long poll), well within the 28 s budget.
MAX_EVENT_WAIT_S = 20.0
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})"
_HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?$")


class Settings(BaseSettings):
    """Everything a handler needs to know about where it runs.

    Resource names have no defaults: a function deployed without them must fail at cold start,
    not write to a table that happens to share a default name.
    """

    model_config = SettingsConfigDict(env_prefix="JOBGATE_", extra="ignore", frozen=True)

    table_name: str = Field(min_length=1)
    queue_url: str = Field(min_length=1)
    bucket_name: str = Field(min_length=1)

    api_key: SecretStr | None = None
    # On AWS the bootstrap key is not in the environment: this names the Secrets Manager secret that
    # holds it (its ARN), read once per cold start (wiring.ApiServices.authenticator).
    api_key_secret: str | None = None
    default_tenant: str = "default"

    worker_timeout_s: int = Field(default=900, ge=10, le=900)
    max_attempts: int = Field(default=3, ge=1, le=10)
    default_job_timeout_s: int = Field(default=600, ge=1)
    lease_s: int = Field(default=30, ge=2)
    # Where the worker makes each job's work folder; emptied at every cold start (default: under TMPDIR).
    work_root: Path | None = None
    # How often a running attempt reads its job between renewals of its lease (every third of
    # lease_s): how soon a cancel request, a take-over or a new WebSocket subscriber is learned.
    cancel_poll_s: float = Field(default=1.0, gt=0)
    job_ttl_days: int = Field(default=30, ge=1)
    sync_poll_s: float = Field(default=0.25, gt=0)  # longest interval between sync-mode reads
    warm_command_sets: bool = True
    # The sweeper (docs/architecture.md): re-send a queued job's message not recorded as sent after
    # this grace, at most max_resends times; end a job whose sent message outlived the queue's
    # retention (JobsQueue's MessageRetentionPeriod: keep the two equal).
    enqueue_grace_s: int = Field(default=120, ge=10)
    max_resends: int = Field(default=3, ge=1)
    queue_retention_s: int = Field(default=4 * 24 * 3600, ge=60, le=14 * 24 * 3600)
    # Each of a job's stdout and stderr is stored up to this size: its first and last halves, and a
    # line saying how much was cut between them. At least twice the 16 KiB tail the job record keeps.
    max_log_bytes: int = Field(default=64 * 1024**2, ge=32 * 1024)
    # The user jobs run as when the worker runs as root (never on Lambda, which runs functions as a
    # user of its own); jobs then cannot read the worker's memory or files.
    job_uid: int = Field(default=65534, ge=1)
    job_gid: int = Field(default=65534, ge=1)
    lost_after_s: int = Field(default=60, ge=5)
    websocket_url: str | None = None  # wss:// URL clients connect to (answered in job links)
    ws_management_url: str | None = None  # https:// endpoint of the @connections management API

    upload_max_bytes: int = Field(default=5 * 1024**3, ge=1)
    upload_expiry_s: int = Field(default=900, ge=60, le=7 * 24 * 3600)
    multipart_part_bytes: int = Field(default=100 * 1024**2, ge=5 * 1024**2)
    download_expiry_s: int = Field(default=900, ge=60, le=7 * 24 * 3600)

    # Tenants, limits and hostile input (docs/security.md). A limit of 0 turns that limit off.
    jwt_tenant_claim: str = Field(default="tenant", min_length=1)  # claim naming the tenant in a JWT
    rate_limit_per_s: float = Field(default=10.0, ge=0)  # requests per second per API key
    rate_limit_burst: int = Field(default=20, ge=1)  # the token bucket's size
    max_active_jobs: int = Field(default=20, ge=0)  # blocked + queued + running jobs per tenant
    upload_bytes_per_day: int = Field(default=50 * 1024**3, ge=0)  # declared upload bytes per tenant/UTC day
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)  # a request body larger is a 413
    max_args_bytes: int = Field(default=32 * 1024, ge=256)  # a job's args as JSON; larger is a 422
    # Comma-separated CIDRs or host names that commands may reach although they are not public.
    egress_allow: Annotated[tuple[str, ...], NoDecode] = ()
    s3_input_buckets: Annotated[tuple[str, ...], NoDecode] = ()  # buckets an s3:// argument may name
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()  # comma-separated; empty: no CORS headers
    cors_allow_credentials: bool = False

    # Comma-separated folders of command-set manifests the API reads after the ones it ships with (a
    # command set of the operator's own, its manifest in a layer of its own); a file named as a shipped
    # one replaces it. The worker imports the sets themselves (the `jobgate.command_sets` entry points).
    manifest_dirs: Annotated[tuple[str, ...], NoDecode] = ()

    # -- secrets for commands (docs/security.md) --------------------------------------------------
    # `NAME=arn,...`: each secret name a command set declares -> the ARN of a Secrets Manager secret
    # or an SSM parameter holding its value. A job whose command needs a name not mapped is a 422.
    command_secrets: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)

    # -- the container runner (docs/architecture.md) ----------------------------------------------
    # ContainerJobsQueue, whose dispatcher starts one ECS task per job; unset (or empty), there is no
    # container runner and a job longer than the Lambda's budget is a 422.
    container_queue_url: str | None = None
    container_max_timeout_s: int = Field(default=6 * 3600, ge=60, le=7 * 24 * 3600)
    # Where the dispatcher starts a job's task (the template's ECS resources and network parameters).
    container_cluster: str = ""
    container_task_definition: str = ""
    container_name: str = "worker"
    container_subnets: Annotated[tuple[str, ...], NoDecode] = ()
    container_security_groups: Annotated[tuple[str, ...], NoDecode] = ()
    container_capacity_provider: Literal["FARGATE", "FARGATE_SPOT"] = "FARGATE"
    # Deliveries of a job's message the dispatcher tries RunTask on before the job fails (`capacity`);
    # keep it below ContainerJobsQueue's maxReceiveCount.
    container_dispatch_tries: int = Field(default=5, ge=1, le=20)

    @field_validator(
        "egress_allow",
        "cors_origins",
        "s3_input_buckets",
        "container_subnets",
        "container_security_groups",
        "manifest_dirs",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("container_queue_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("command_secrets", mode="before")
    @classmethod
    def _secret_map(cls, value: Any) -> Any:
        return parse_secret_map(value) if isinstance(value, str) else value

    @field_validator("egress_allow")
    @classmethod
    def _networks_or_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                if not _HOST_NAME.match(entry):
                    raise ValueError(f"'{entry}' is neither a CIDR, an IP address nor a host name") from None
        return tuple(entry.lower() for entry in value)

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> Settings:
        # Browsers refuse `*` with credentials; reflecting any origin instead would let every site
        # call the API with a user's cookies.
        if self.cors_allow_credentials and "*" in self.cors_origins:
            raise ValueError("cors_origins cannot be '*' when cors_allow_credentials is true")
        return self

    @property
    def max_job_timeout_s(self) -> int:
        """Longest job a worker can see through: its own timeout less time to upload and report."""
        return (
            max(1, self.worker_timeout_s - 60) if self.worker_timeout_s > 120 else self.worker_timeout_s // 2
        )


@lru_cache(maxsize=1)
def load_settings() -> Settings:
    """Read the settings once; a missing variable raises with the variable named."""
    return Settings()
