"""The one place that creates the Powertools logger and metrics.

No X-Ray tracer: Lambda's own tracing (Tracing: Active in template.yaml) records each invocation, and
importing the X-Ray SDK costs ~100 ms of cold start for segments nothing here adds.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics

SERVICE = "jobgate"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace="Jobgate", service=SERVICE)
