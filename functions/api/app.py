"""ApiFunction: API Gateway HTTP API events -> the FastAPI app, through Mangum."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from jobgate.api.app import create_app
from jobgate.commandsets.manifest import load_manifest_registry
from jobgate.observability import logger
from jobgate.settings import load_settings
from jobgate.wiring import ApiServices
from mangum import Mangum

# Built once per cold start; the API carries the command contracts as a manifest, not the CLI.
_asgi = Mangum(create_app(ApiServices(load_settings(), load_manifest_registry())), lifespan="off")


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return _asgi(event, context)
