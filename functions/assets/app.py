"""AssetsFunction: S3 ObjectCreated notifications (through SQS) settle uploaded assets."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from jobgate.observability import logger
from jobgate.services.registry import Registry
from jobgate.settings import load_settings
from jobgate.wiring import ApiServices

_assets = ApiServices(load_settings(), Registry([])).assets
# A batch whose every record failed is still answered as partial failures, not raised.
_processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def record_handler(record: SQSRecord) -> None:
    notification = json.loads(record.body)
    # S3 sends one s3:TestEvent when notifications are configured; it names no object.
    for s3_record in notification.get("Records", []):
        key = unquote_plus(s3_record["s3"]["object"]["key"])
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
