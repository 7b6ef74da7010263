"""WorkerFunction: SQS batches of job ids -> each job run in a child of the zygote, partial batch failures."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from jobgate.messages import JobMessage
from jobgate.observability import LoggedBatchProcessor, logger
from jobgate.services.registry import Registry
from jobgate.settings import load_settings
from jobgate.wiring import build_worker, build_zygote
from pydantic import ValidationError

# Once per container: the zygote, exec'd with none of this process's environment, imports and warms
# the command sets and forks each job's child; this process keeps the credentials to itself.
_settings = load_settings()
_registry = Registry.from_entry_points()
_zygote = build_zygote(_settings, _registry)
_worker = build_worker(_settings, _registry, runner=_zygote)
_worker.prepare()  # before the zygote starts: what a killed runtime left in the work folder goes
if _settings.warm_command_sets:
    _zygote.start()  # warms while the rest of the cold start runs
_processor = LoggedBatchProcessor()
if _settings.warm_command_sets:
    _zygote.wait_ready()  # the cold start pays for the warm-up, not the first job


def job_message(record: SQSRecord) -> JobMessage:
    """The record's job message. A malformed one is logged, with why, then fails: the batch
    processor reports it as a failure without saying which record or why."""
    try:
        return JobMessage.model_validate_json(record.body)
    except ValidationError as exc:
        reason = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        logger.error("malformed job message", message_id=record.message_id, reason=reason)
        raise


def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> None:
    message = job_message(record)
    logger.append_keys(job_id=message.job_id, tenant=message.tenant)
    _worker.handle(
        message.job_id,
        remaining_s=lambda: lambda_context.get_remaining_time_in_millis() / 1000,
        tenant=message.tenant,
    )


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=_processor, context=context
    )
