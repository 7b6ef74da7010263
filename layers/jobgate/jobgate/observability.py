"""The one place that creates the Powertools logger and emits metrics (each metric named here).

No X-Ray tracer: Lambda's own tracing (Tracing: Active in template.yaml) records each invocation, and
importing the X-Ray SDK costs ~100 ms of cold start for segments nothing here adds.

Metrics are CloudWatch embedded metric format (EMF) lines on stdout, one line per data point
(Powertools' `single_metric`), so a service emits them from wherever it is, in any function, with no
flush to forget. Their dimensions stay few and bounded: `service` always, then `command_set` (the
installed command sets) and `status` (the job statuses); never a tenant, a job id or a command, whose
values are unbounded and would each make a metric of its own. docs/operations.md lists them.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.batch.base import FailureResponse
from aws_lambda_powertools.utilities.batch.exceptions import ExceptionInfo

SERVICE = "jobgate"
NAMESPACE = "Jobgate"

logger = Logger(service=SERVICE)

# The metrics' names, as the template's alarms and dashboard read them.
JOBS_SUBMITTED = "JobsSubmitted"
JOBS_STARTED = "JobsStarted"
JOBS_FINISHED = "JobsFinished"  # by status; also by status and command set
JOBS_RETRIED = "JobsRetried"
JOBS_WORKER_LOST = "JobsWorkerLost"
JOBS_DEAD_LETTERED = "JobsDeadLettered"
QUEUE_WAIT = "QueueWait"  # created -> started (seconds)
RUN_TIME = "RunTime"  # the command alone (seconds)
WORKER_OVERHEAD = "WorkerOverhead"  # claim -> end, less the command (seconds)
AWS_RETRIES = "AwsRetries"
SWEEPER_REQUEUED = "JobsRequeued"
SWEEPER_RESCUED = "JobsRescued"
SWEEPER_NEVER_STARTED = "JobsNeverStarted"
WS_DELIVERIES = "WebSocketDeliveries"
WS_GONE = "WebSocketGone"
UPLOADS_FAILED = "UploadsFailed"


def emit(name: str, value: float = 1, *, unit: MetricUnit = MetricUnit.Count, **dimensions: str) -> None:
    """One data point of `name`, now, under `service` and the given (low-cardinality) dimensions."""
    with single_metric(
        name=name, unit=unit, value=value, namespace=NAMESPACE, default_dimensions={"service": SERVICE}
    ) as metric:
        for key, dim in dimensions.items():
            metric.add_dimension(name=key, value=dim)


def job_finished(status: str, command_set: str | None) -> None:
    """A job's end, counted twice: by status alone (what the alarms and the failure rate read:
    CloudWatch never sums a metric over one of its dimensions) and by status and command set."""
    emit(JOBS_FINISHED, status=status)
    if command_set is not None:
        emit(JOBS_FINISHED, status=status, command_set=command_set)


def seconds(name: str, value: float, *, command_set: str) -> None:
    emit(name, round(max(0.0, value), 3), unit=MetricUnit.Seconds, command_set=command_set)


class LoggedBatchProcessor(BatchProcessor):
    """Powertools' SQS batch processor, which logs each record that fails: the processor itself
    reports the failure to Lambda (the record comes back) and logs nothing above debug."""

    def __init__(self) -> None:
        # A batch whose every record failed is still answered as partial failures, not raised.
        super().__init__(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

    def failure_handler(self, record: Any, exception: ExceptionInfo) -> FailureResponse:
        kind, value = exception[0], exception[1]
        logger.error(
            "record failed; it comes back after its visibility timeout",
            message_id=getattr(record, "message_id", None),
            receive_count=_attributes(record).get("ApproximateReceiveCount"),
            error=f"{kind.__name__ if kind else 'Exception'}: {value}",
        )
        return super().failure_handler(record, exception)


def _attributes(record: Any) -> dict[str, Any]:
    """An SQS record's attributes as SQS sent them (an event may leave any of them out)."""
    raw = getattr(record, "raw_event", None)
    attributes = raw.get("attributes") if isinstance(raw, dict) else None
    return attributes if isinstance(attributes, dict) else {}
