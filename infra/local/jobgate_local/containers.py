"""The container runner, locally: the template's ECS task definition, started as local processes.

`jobgate dev` plays the template's ECS resources (cluster, task definition, the task's roles): it
creates the task and execution roles in moto's IAM as the template writes them, assumes the task role
(as ECS hands a task its role's credentials), resolves the container's environment, and registers the
task definition with the strict layer (`jobgate_local.strict.tasks`), whose emulated RunTask then
starts `python -m jobgate.task` (the image's entry point, on this interpreter) for each job the
dispatcher hands it: same code, same settings, the task role's permissions.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import httpx

from .components import RunningStack
from .functions import ACCOUNT_ID, REGION
from .identities import RoleSpec, assume, create_roles
from .template import Template, _image_entry

TASK_DEFINITION = "ContainerTaskDefinition"
_ROLES = ("ContainerTaskRole", "ContainerExecutionRole")


def _name(template: Template, logical_id: str) -> str:
    return f"{template.stack_name}-{logical_id}"[:64]


class ContainerTasks:
    """A component of `jobgate dev`: the ECS side of the container runner."""

    name = "containers"

    def __init__(self, environment: Mapping[str, str] | None = None) -> None:
        # Set on top of the task definition's environment, as `jobgate dev --env` sets it on functions.
        self._environment = dict(environment or {})

    def reserve(self) -> None:
        pass

    def _active(self, template: Template) -> bool:
        return TASK_DEFINITION in template.resources and template.active(TASK_DEFINITION)

    def played_resources(self, template: Template) -> Mapping[str, Mapping[str, str]]:
        if not self._active(template):
            return {}
        cluster = _name(template, "ContainerCluster")
        definition = f"arn:aws:ecs:{REGION}:{ACCOUNT_ID}:task-definition/{_name(template, TASK_DEFINITION)}:1"
        played: dict[str, dict[str, str]] = {
            "ContainerCluster": {
                "Ref": cluster,
                "Arn": f"arn:aws:ecs:{REGION}:{ACCOUNT_ID}:cluster/{cluster}",
            },
            TASK_DEFINITION: {"Ref": definition},
            "ContainerLogGroup": {"Ref": _name(template, "ContainerLogGroup")},
            "ContainerCapacityProviders": {"Ref": _name(template, "ContainerCapacityProviders")},
        }
        for role in _ROLES:
            name = _name(template, role)
            played[role] = {"Ref": name, "Arn": f"arn:aws:iam::{ACCOUNT_ID}:role/{name}"}
        return played

    def function_environment(self) -> Mapping[str, str]:
        return {}

    def sandboxes(self, template: Template) -> Mapping[str, int]:
        del template  # tasks are processes of the local AWS, not function sandboxes
        return {}

    async def start(self, stack: RunningStack) -> None:
        import asyncio

        if self._active(stack.template):
            await asyncio.to_thread(self._register, stack)

    def _register(self, stack: RunningStack) -> None:
        from .stack import local_aws_environment

        template, resolver = stack.template, stack.resolver
        specs: dict[str, RoleSpec] = {}
        for role in _ROLES:
            properties = resolver.resolve(template.resources[role]["Properties"])
            specs[role] = RoleSpec(
                function=TASK_DEFINITION,
                role=role,
                name=_name(template, role),
                assume_role_policy=_without_conditions(properties["AssumeRolePolicyDocument"]),
                inline_policies={
                    str(p["PolicyName"]): {"Version": "2012-10-17", **p["PolicyDocument"]}
                    for p in properties.get("Policies", [])
                },
                managed_policy_arns=(),  # the execution role's: ECR and Logs, which nothing here calls
            )
        create_roles(stack.endpoint_url, specs)
        credentials = assume(
            stack.endpoint_url, specs["ContainerTaskRole"].arn, f"{template.stack_name}-task"
        )
        definition = resolver.resolve(template.resources[TASK_DEFINITION]["Properties"])
        container = definition["ContainerDefinitions"][0]
        worker = template.resources["WorkerFunction"]["Properties"]
        image_env = _image_entry(template, "WorkerFunction", worker)[2]
        environment = {
            **{k: v for k, v in image_env.items() if k not in ("HOME", "MPLCONFIGDIR", "XDG_CACHE_HOME")},
            **{str(e["Name"]): str(e["Value"]) for e in container.get("Environment", [])},
            **self._environment,
            **local_aws_environment(stack.endpoint_url, credentials),
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }
        entry = [str(part) for part in container["EntryPoint"]]
        command = [sys.executable if entry[0] in ("python", "python3") else entry[0], *entry[1:]]
        document: dict[str, Any] = {
            "definitions": [
                {
                    "arn": resolver.resolve_string({"Ref": TASK_DEFINITION}),
                    "container": container["Name"],
                    "command": command,
                    "environment": environment,
                    "roles": [definition["ExecutionRoleArn"], definition["TaskRoleArn"]],
                    "cluster": resolver.resolve_string({"Ref": "ContainerCluster"}),
                }
            ]
        }
        answer = httpx.post(f"{stack.endpoint_url}/_jobgate/tasks", json=document, timeout=30)
        answer.raise_for_status()

    async def stop(self) -> None:
        pass

    def urls(self) -> Mapping[str, str]:
        return {}


def _without_conditions(document: Mapping[str, Any]) -> dict[str, Any]:
    """A trust policy as moto's IAM takes it (nothing assumes these roles but the stack itself)."""
    statements = document.get("Statement", [])
    statements = [statements] if isinstance(statements, dict) else statements
    return {
        "Version": "2012-10-17",
        "Statement": [{k: v for k, v in s.items() if k != "Condition"} for s in statements],
    }
