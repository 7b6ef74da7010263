"""ApiFunction: API Gateway HTTP API events -> the FastAPI app, through Mangum."""

from __future__ import annotations

import re
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from jobgate.api.app import create_app
from jobgate.commandsets.manifest import load_manifest_registry
from jobgate.observability import logger
from jobgate.settings import load_settings
from jobgate.wiring import ApiServices
from mangum import Mangum

# Built once per cold start; the API carries the command contracts as a manifest, not the CLI.
_settings = load_settings()
_asgi = Mangum(
    create_app(ApiServices(_settings, load_manifest_registry(_settings.manifest_dirs))), lifespan="off"
)


# A job's own routes name it in their path: /v1/jobs/<ULID>[/...].
_JOB_PATH = re.compile(r"^/v1/jobs/([0-9A-HJKMNP-TV-Z]{26})(?:/|$)")


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # API Gateway's request id (the access log's requestId) ties each line to its request.
    logger.append_keys(request_id=(event.get("requestContext") or {}).get("requestId"))
    job = _JOB_PATH.match(str(event.get("rawPath") or ""))
    if job:
        logger.append_keys(job_id=job.group(1))
    answer = _asgi(event, context)
    # One line a request, with the tenant and the job the request named or made (keys appended
    # on the way): the API's part of a job's story in Logs Insights (docs/operations.md).
    http = (event.get("requestContext") or {}).get("http") or {}
    logger.info(
        "request", method=http.get("method"), path=event.get("rawPath"), status=answer.get("statusCode")
    )
    return answer
