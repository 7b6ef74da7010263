"""WsFunction: the WebSocket API's routes ($connect, $disconnect, subscribe, unsubscribe, $default)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.data_classes import APIGatewayWebSocketEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext
from jobgate.models import SubscribeRequest
from jobgate.observability import logger
from jobgate.services.registry import Registry
from jobgate.settings import load_settings
from jobgate.wiring import ApiServices
from pydantic import ValidationError

_subscriptions = ApiServices(load_settings(), Registry([])).subscriptions


@logger.inject_lambda_context(clear_state=True)
@event_source(data_class=APIGatewayWebSocketEvent)
def handler(event: APIGatewayWebSocketEvent, context: LambdaContext) -> dict[str, Any]:
    ctx = event.request_context
    connection_id = ctx.connection_id
    route = ctx.route_key
    logger.append_keys(connection_id=connection_id, route=route, request_id=ctx.request_id)
    if route == "$connect":
        api_key = (event.query_string_parameters or {}).get("api_key")
        if not _subscriptions.connect(connection_id, api_key):
            logger.info("connection refused: bad api key")
            return {"statusCode": 401, "body": "Unauthorized"}
        return {"statusCode": 200}
    if route == "$disconnect":
        _subscriptions.disconnect(connection_id)
        return {"statusCode": 200}
    try:
        message = SubscribeRequest.model_validate_json(event.body or "")
    except ValidationError as exc:
        _subscriptions.reject(
            connection_id, f"Send {{'action': 'subscribe', 'job_id': ...}}: {exc.errors()[0]['msg']}"
        )
        return {"statusCode": 200}
    if message.map_id is not None:
        if message.action == "subscribe":
            _subscriptions.subscribe_map(connection_id, message.map_id)
        return {"statusCode": 200}
    if message.pipeline_id is not None:
        if message.action == "subscribe":
            _subscriptions.subscribe_pipeline(connection_id, message.pipeline_id)
        return {"statusCode": 200}
    assert message.job_id is not None
    logger.append_keys(job_id=message.job_id)
    if message.action == "subscribe":
        _subscriptions.subscribe(connection_id, message.job_id, message.after_seq)
    else:
        _subscriptions.unsubscribe(connection_id, message.job_id)
    return {"statusCode": 200}
