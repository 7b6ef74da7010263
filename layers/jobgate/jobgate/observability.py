"""The one place that creates the Powertools logger, metrics and tracer."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger, Metrics

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

SERVICE = "jobgate"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace="Jobgate", service=SERVICE)


@cache
def tracer() -> Tracer:
    """The X-Ray tracer, created on first use: importing the X-Ray SDK costs ~100 ms of cold start,
    and Lambda's own tracing (Tracing: Active in template.yaml) already records each invocation."""
    from aws_lambda_powertools import Tracer

    return Tracer(service=SERVICE)
