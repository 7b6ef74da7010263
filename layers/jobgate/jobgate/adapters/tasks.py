"""ECS adapter: start the task that runs one job on the container runner (Fargate)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from botocore.exceptions import BotoCoreError, ClientError

from jobgate.errors import NoCapacity, ServiceUnavailable

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient

# RunTask answers a lack of Fargate capacity either as an error or as a failure in its answer
# ("Capacity is unavailable at this time. Please try again later or in a different availability
# zone"; "RESOURCE:..." on other launch types), and throttles bursts: all pass if retried later.
_CAPACITY_WORDS = ("capacity", "resource:")
_RETRY_CODES = {"ThrottlingException", "ServerException", "LimitExceededException"}


@dataclass(frozen=True)
class TaskPlacement:
    """Where and how a job's task runs (the template's cluster, task definition and network)."""

    cluster: str
    task_definition: str
    container: str = "worker"
    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    capacity_provider: Literal["FARGATE", "FARGATE_SPOT"] = "FARGATE"


class TaskLauncher:
    def __init__(self, client: ECSClient, placement: TaskPlacement) -> None:
        self._ecs = client
        self._placement = placement

    def start(self, job_id: str, tenant: str) -> str:
        """Start one task for the job; answer its ARN. NoCapacity when ECS has none for it now."""
        p = self._placement
        try:
            got = self._ecs.run_task(
                cluster=p.cluster,
                taskDefinition=p.task_definition,
                count=1,
                capacityProviderStrategy=[{"capacityProvider": p.capacity_provider, "weight": 1}],
                networkConfiguration={
                    "awsvpcConfiguration": {
                        "subnets": list(p.subnets),
                        "securityGroups": list(p.security_groups),
                        # A public subnet without a NAT: the task reaches AWS's endpoints (and the
                        # image registry) through its public address; no ingress is allowed.
                        "assignPublicIp": "ENABLED",
                    }
                },
                overrides={
                    "containerOverrides": [
                        {
                            "name": p.container,
                            "environment": [
                                {"name": "JOBGATE_JOB_ID", "value": job_id},
                                {"name": "JOBGATE_JOB_TENANT", "value": tenant},
                            ],
                        }
                    ]
                },
                startedBy=f"jobgate-{job_id}"[:36],
            )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", ""), error.get("Message", "")
            if code in _RETRY_CODES or any(word in message.lower() for word in _CAPACITY_WORDS):
                raise NoCapacity(f"RunTask: {code}: {message}") from None
            raise ServiceUnavailable(f"RunTask failed: {code}: {message}") from None
        except BotoCoreError as exc:
            raise ServiceUnavailable(f"RunTask did not answer ({type(exc).__name__}).") from None
        failures = got.get("failures", [])
        if failures or not got.get("tasks"):
            reasons = "; ".join(f"{f.get('reason', '')} {f.get('detail', '')}".strip() for f in failures)
            if not failures or any(w in reasons.lower() for w in _CAPACITY_WORDS):
                raise NoCapacity(f"RunTask: {reasons or 'no task started'}")
            raise ServiceUnavailable(f"RunTask refused: {reasons}")
        return got["tasks"][0].get("taskArn", "")
