"""ECS, emulated for the container runner: RunTask starts a local process from a task definition.

moto's ECS keeps records of tasks but runs nothing (and its awsvpc RunTask fails), so the strict layer
answers the task calls itself. The stack registers each task definition of the template
(``POST /_jobgate/tasks``): the command its container runs (the image's entry point, here the local
interpreter), its environment resolved, the roles it names, and the task role's credentials (assumed
through moto's STS, as ECS hands them to a task). ``RunTask``, once IAM allowed it (``ecs:RunTask`` on
the task definition and ``iam:PassRole`` on each role it names, as ECS checks), starts one process
per task with that environment, the container's override variables, and a temporary folder of its own
(a task's /tmp is its own). ``DescribeTasks``, ``ListTasks`` and ``StopTask`` (SIGTERM to the
task's first process, then SIGKILL to all of it after ECS's 30 s) answer from what runs here.
``GET /_jobgate/tasks`` lists the tasks with their pids, so a test can kill one as Fargate would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

OPERATIONS = frozenset({"RunTask", "DescribeTasks", "ListTasks", "StopTask"})
_STOP_GRACE_S = 30.0


@dataclass(frozen=True)
class LocalTaskDefinition:
    arn: str
    container: str
    command: list[str]
    environment: dict[str, str]
    roles: list[str]  # the execution and task roles' ARNs (what RunTask passes)
    cluster: str = ""


@dataclass
class LocalTask:
    arn: str
    definition: LocalTaskDefinition
    cluster: str
    started_by: str
    overrides: dict[str, Any]
    process: subprocess.Popen[bytes]
    tmp: str
    created_at: float = field(default_factory=time.time)
    stop_reason: str | None = None

    def status(self) -> str:
        return "RUNNING" if self.process.poll() is None else "STOPPED"

    def describe(self) -> dict[str, Any]:
        code = self.process.poll()
        container: dict[str, Any] = {"name": self.definition.container, "lastStatus": self.status()}
        if code is not None:
            container["exitCode"] = code
        answer = {
            "taskArn": self.arn,
            "clusterArn": self.cluster,
            "taskDefinitionArn": self.definition.arn,
            "lastStatus": self.status(),
            "desiredStatus": "RUNNING" if code is None else "STOPPED",
            "launchType": "FARGATE",
            "startedBy": self.started_by,
            "overrides": self.overrides,
            "containers": [container],
            "createdAt": self.created_at,
        }
        if self.stop_reason is not None:
            answer["stoppedReason"] = self.stop_reason
        return answer


class LocalTasks:
    def __init__(self, account: str, region: str = "us-east-1") -> None:
        self._account = account
        self._region = region
        self._lock = threading.Lock()
        self._definitions: dict[str, LocalTaskDefinition] = {}
        self._tasks: dict[str, LocalTask] = {}

    def register(self, document: dict[str, Any]) -> dict[str, Any]:
        for entry in document.get("definitions", []):
            definition = LocalTaskDefinition(
                arn=str(entry["arn"]),
                container=str(entry["container"]),
                command=[str(part) for part in entry["command"]],
                environment={str(k): str(v) for k, v in entry["environment"].items()},
                roles=[str(role) for role in entry.get("roles", [])],
                cluster=str(entry.get("cluster", "")),
            )
            with self._lock:
                self._definitions[definition.arn] = definition
        return self.state()

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "definitions": sorted(self._definitions),
                "tasks": [
                    {
                        "arn": task.arn,
                        "pid": task.process.pid,
                        "status": task.status(),
                        "exit_code": task.process.poll(),
                        "environment": _override_environment(task.overrides),
                    }
                    for task in self._tasks.values()
                ],
            }

    def handles(self, operation: str) -> bool:
        return operation in OPERATIONS and bool(self._definitions)

    def definition_arn(self, name: str) -> str:
        """A task definition as RunTask names it (ARN, or family[:revision]) -> its ARN."""
        if name.startswith("arn:"):
            return name
        with self._lock:
            for arn in self._definitions:
                family = arn.rsplit("/", 1)[-1]
                if name in (family, family.rsplit(":", 1)[0]):
                    return arn
        return f"arn:aws:ecs:{self._region}:{self._account}:task-definition/{name}"

    def passed_roles(self, task_definition: str) -> list[str]:
        definition = self._definitions.get(self.definition_arn(task_definition))
        return list(definition.roles) if definition is not None else []

    def answer(self, operation: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON answer) of one ECS call, as ECS answers it."""
        if operation == "RunTask":
            return self._run(body)
        if operation == "DescribeTasks":
            with self._lock:
                wanted = [str(t) for t in body.get("tasks", [])]
                found = [self._tasks[arn].describe() for arn in wanted if arn in self._tasks]
                missing = [{"arn": arn, "reason": "MISSING"} for arn in wanted if arn not in self._tasks]
            return 200, {"tasks": found, "failures": missing}
        if operation == "ListTasks":
            with self._lock:
                return 200, {"taskArns": [a for a, t in self._tasks.items() if t.status() == "RUNNING"]}
        return self._stop(body)

    def _run(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        arn = self.definition_arn(str(body.get("taskDefinition", "")))
        definition = self._definitions.get(arn)
        if definition is None:
            return 400, _client_error("TaskDefinition not found.")
        cluster = str(body.get("cluster") or definition.cluster or "default")
        overrides = dict(body.get("overrides") or {})
        environment = {
            **definition.environment,
            **_override_environment(overrides, definition.container),
        }
        started = []
        for _ in range(int(body.get("count", 1))):
            task_id = uuid.uuid4().hex
            tmp = tempfile.mkdtemp(prefix=f"jobgate-task-{task_id[:8]}-")
            process = subprocess.Popen(
                definition.command,
                env={**environment, "TMPDIR": tmp, "HOME": tmp},
                cwd=tmp,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            task = LocalTask(
                arn=f"arn:aws:ecs:{self._region}:{self._account}:task/{cluster.rsplit('/', 1)[-1]}/{task_id}",
                definition=definition,
                cluster=cluster,
                started_by=str(body.get("startedBy", "")),
                overrides=overrides,
                process=process,
                tmp=tmp,
            )
            with self._lock:
                self._tasks[task.arn] = task
            threading.Thread(target=_clean_up_after, args=(task,), daemon=True).start()
            started.append(task.describe())
        return 200, {"tasks": started, "failures": []}

    def _stop(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            task = self._tasks.get(str(body.get("task", "")))
        if task is None:
            return 400, _client_error("The referenced task was not found.")
        task.stop_reason = str(body.get("reason") or "Task stopped by user")
        # As Docker stops a container: SIGTERM to its first process, everything killed after the grace.
        with contextlib.suppress(ProcessLookupError):
            os.kill(task.process.pid, signal.SIGTERM)
        threading.Thread(target=_kill_after, args=(task, _STOP_GRACE_S), daemon=True).start()
        return 200, {"task": task.describe()}


def _override_environment(overrides: dict[str, Any], container: str | None = None) -> dict[str, str]:
    variables: dict[str, str] = {}
    for entry in overrides.get("containerOverrides", []):
        if container is None or entry.get("name") == container:
            variables.update({str(v["name"]): str(v["value"]) for v in entry.get("environment", [])})
    return variables


def _client_error(message: str) -> dict[str, Any]:
    return {"__type": "ClientException", "message": message}


def _clean_up_after(task: LocalTask) -> None:
    """Reap the task's process when it ends, kill what it left in its group, remove its /tmp."""
    task.process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(task.process.pid, signal.SIGKILL)
    shutil.rmtree(task.tmp, ignore_errors=True)


def _kill_after(task: LocalTask, grace_s: float) -> None:
    try:
        task.process.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(task.process.pid, signal.SIGKILL)
