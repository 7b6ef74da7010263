"""The queue message that hands a job to a worker."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class JobMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    job_id: str
    tenant: str | None = None
    # The container runner's dispatcher: how many tasks it started for this job (its check message,
    # sent back to itself, counts them); absent on every other message.
    task_starts: int = 0
