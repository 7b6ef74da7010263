"""DeadLetterFunction: a job whose message reached the DLQ ends as failed, announced, never stuck."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from jobgate.messages import JobMessage
from jobgate.observability import LoggedBatchProcessor, logger
from jobgate.services.registry import Registry
from jobgate.settings import load_settings
from jobgate.wiring import build_worker
from pydantic import ValidationError

# The worker service without command sets: it only ends jobs, announces them and moves pipelines on.
_worker = build_worker(load_settings(), Registry([]))
_processor = LoggedBatchProcessor()


def job_message(record: SQSRecord) -> JobMessage:
    """The record's job message. A malformed one is logged, with why, then fails: the batch
    processor reports it as a failure without saying which record or why."""
    try:
        return JobMessage.model_validate_json(record.body)
    except ValidationError as exc:
        reason = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        logger.error("malformed job message", message_id=record.message_id, reason=reason)
        raise


def record_handler(record: SQSRecord) -> None:
    message = job_message(record)
    logger.append_keys(job_id=message.job_id, tenant=message.tenant)
    receives = int(record.attributes.approximate_receive_count or 0)
    job = _worker.dead_letter(message.job_id, receive_count=receives)
    logger.warning("dead-lettered job", job_id=message.job_id, status=job.status.value if job else None)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=_processor, context=context
    )
