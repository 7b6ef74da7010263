"""SweeperFunction: on a schedule, re-sends or fails jobs that lost their message or their worker."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from jobgate.observability import logger, metrics
from jobgate.settings import load_settings
from jobgate.wiring import build_sweeper

_sweeper = build_sweeper(load_settings())


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = _sweeper.sweep()
    metrics.add_metric(name="JobsRequeued", unit="Count", value=len(report.requeued))
    metrics.add_metric(name="JobsRescued", unit="Count", value=len(report.rescued))
    metrics.add_metric(name="JobsNeverStarted", unit="Count", value=len(report.failed))
    return {"requeued": report.requeued, "rescued": report.rescued, "failed": report.failed}
