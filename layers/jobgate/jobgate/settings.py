"""Settings validated once per cold start from the function's environment."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# API Gateway answers 504 after 30 s; a sync request must hand back 202 well before that.
MAX_SYNC_WAIT_S = 25.0


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
    default_tenant: str = "default"

    worker_timeout_s: int = Field(default=900, ge=10, le=900)
    max_attempts: int = Field(default=3, ge=1, le=10)
    default_job_timeout_s: int = Field(default=600, ge=1)
    lease_s: int = Field(default=30, ge=2)
    cancel_poll_s: float = Field(default=1.0, gt=0)
    job_ttl_days: int = Field(default=30, ge=1)
    sync_poll_s: float = Field(default=0.05, gt=0)
    warm_command_sets: bool = True
    websocket_url: str | None = None

    upload_max_bytes: int = Field(default=5 * 1024**3, ge=1)
    upload_expiry_s: int = Field(default=900, ge=60, le=7 * 24 * 3600)
    multipart_part_bytes: int = Field(default=100 * 1024**2, ge=5 * 1024**2)
    download_expiry_s: int = Field(default=900, ge=60, le=7 * 24 * 3600)

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
