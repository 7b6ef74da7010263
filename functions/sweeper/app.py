"""SweeperFunction: on a schedule, re-sends or fails jobs that lost their message or their worker."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from jobgate import observability as obs
from jobgate.observability import logger
from jobgate.settings import load_settings
from jobgate.wiring import build_sweeper

_sweeper = build_sweeper(load_settings())


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = _sweeper.sweep()
    obs.emit(obs.SWEEPER_REQUEUED, len(report.requeued))
    obs.emit(obs.SWEEPER_RESCUED, len(report.rescued))
    obs.emit(obs.SWEEPER_NEVER_STARTED, len(report.failed))
    return {"requeued": report.requeued, "rescued": report.rescued, "failed": report.failed}
