"""Plays EventBridge schedules: each `rate(...)` rule of the template invokes its function on time."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from .components import RunningStack
from .functions import ACCOUNT_ID
from .template import Template

logger = logging.getLogger("jobgate_local.schedules")

_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")
_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class Schedule:
    rule: str
    function: str
    every_s: float


def parse_rate(expression: str) -> float | None:
    """Seconds between runs of a `rate(...)` expression; None for what is not one (cron)."""
    match = _RATE.match(expression.strip())
    if not match:
        return None
    return int(match.group(1)) * _SECONDS[match.group(2).rstrip("s")]


def schedules(template: Template) -> list[Schedule]:
    found = []
    for logical_id in template.logical_ids("AWS::Events::Rule"):
        properties = template.resources[logical_id].get("Properties", {})
        expression = properties.get("ScheduleExpression")
        if not isinstance(expression, str):
            continue
        every = parse_rate(expression)
        if every is None:
            logger.warning("%s: %r is not emulated (only rate(...) schedules are)", logical_id, expression)
            continue
        for target in properties.get("Targets", []):
            arn = target.get("Arn")
            if isinstance(arn, dict) and "Fn::GetAtt" in arn:
                found.append(Schedule(rule=logical_id, function=arn["Fn::GetAtt"][0], every_s=every))
    return found


def scheduled_event(rule: str, region: str) -> dict[str, Any]:
    """The event EventBridge sends a scheduled rule's target."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{ACCOUNT_ID}:rule/{rule}"],
        "detail": {},
    }


class ScheduleSources:
    """Component: every `rate(...)` schedule of the template, run on its period (first run after one),
    or every `every_s` seconds when given (EventBridge's shortest rate is a minute; a test that waits
    for the sweeper wants seconds)."""

    name = "schedules"

    def __init__(self, *, region: str = "us-east-1", every_s: float | None = None) -> None:
        self._region = region
        self._every_s = every_s
        self._tasks: list[asyncio.Task[None]] = []

    def reserve(self) -> None:
        pass

    def played_resources(self, template: Template) -> Mapping[str, Mapping[str, str]]:
        del template
        return {}

    def function_environment(self) -> Mapping[str, str]:
        return {}

    def sandboxes(self, template: Template) -> Mapping[str, int]:
        return {s.function: 1 for s in schedules(template)}

    async def start(self, stack: RunningStack) -> None:
        for schedule in schedules(stack.template):
            if self._every_s is not None:
                schedule = replace(schedule, every_s=self._every_s)
            self._tasks.append(asyncio.create_task(self._run(stack, schedule)))
            logger.info("%s <- schedule %s (every %d s)", schedule.function, schedule.rule, schedule.every_s)

    async def _run(self, stack: RunningStack, schedule: Schedule) -> None:
        pool = stack.pools[schedule.function]
        while True:
            await asyncio.sleep(schedule.every_s)
            event = scheduled_event(schedule.rule, self._region)
            result = await asyncio.to_thread(pool.invoke, event)
            if not result.ok:
                logger.warning("%s: scheduled run failed: %s", schedule.function, result.error)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def urls(self) -> Mapping[str, str]:
        return {}
