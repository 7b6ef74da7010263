"""ContainerDispatchFunction: each job message of the container runner's queue -> one ECS task."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from jobgate.messages import JobMessage
from jobgate.observability import logger
from jobgate.settings import load_settings
from jobgate.wiring import build_dispatcher

_dispatcher = build_dispatcher(load_settings())
# A batch whose every record failed is still answered as partial failures, not raised.
_processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def record_handler(record: SQSRecord) -> None:
    message = JobMessage.model_validate_json(record.body)
    logger.append_keys(job_id=message.job_id)
    receives = int(record.attributes.approximate_receive_count or 1)
    _dispatcher.dispatch(
        message.job_id, message.tenant, receive_count=receives, task_starts=message.task_starts
    )


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=_processor, context=context
    )
