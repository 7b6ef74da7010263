"""AssetsFunction: S3 ObjectCreated notifications (through SQS) settle uploaded assets."""

from __future__ import annotations

import json
from typing import Any, NoReturn
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from jobgate.observability import LoggedBatchProcessor, logger
from jobgate.services.registry import Registry
from jobgate.settings import load_settings
from jobgate.wiring import ApiServices

_assets = ApiServices(load_settings(), Registry([])).assets
_processor = LoggedBatchProcessor()


class UnknownRecord(ValueError):
    """A record that is not an S3 event notification this function can read."""


def _refuse(record: SQSRecord, reason: str) -> NoReturn:
    # Logged here: the batch processor reports the failure without saying which record or why.
    logger.error("unknown upload event", message_id=record.message_id, reason=reason)
    raise UnknownRecord(reason)


def object_keys(record: SQSRecord) -> list[str]:
    """The keys of the objects an S3 event notification names; none for S3's test event."""
    try:
        notification = json.loads(record.body)
    except json.JSONDecodeError as exc:
        _refuse(record, f"the body is not JSON ({exc})")
    if not isinstance(notification, dict):
        _refuse(record, "the body is not a JSON object")
    # S3 sends one s3:TestEvent when notifications are configured; it names no object.
    if notification.get("Event") == "s3:TestEvent":
        return []
    s3_records = notification.get("Records")
    if not isinstance(s3_records, list) or not s3_records:
        _refuse(record, "neither an S3 event notification nor S3's test event")
    keys: list[str] = []
    for s3_record in s3_records:
        try:
            keys.append(unquote_plus(s3_record["s3"]["object"]["key"]))
        except (KeyError, TypeError):
            _refuse(record, "an S3 event record without s3.object.key")
    return keys


def record_handler(record: SQSRecord) -> None:
    for key in object_keys(record):
        asset = _assets.settle_key(key)
        if asset is not None:
            logger.info(
                "asset settled", asset_id=asset.asset_id, status=asset.status.value, reason=asset.reason
            )


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=_processor, context=context
    )
