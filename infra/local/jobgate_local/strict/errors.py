"""AWS's error answers, in each protocol's own shape, so botocore raises the error code AWS would."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from enum import Enum
from xml.sax.saxutils import escape


class Protocol(Enum):
    """How a service speaks, which decides how its errors look on the wire."""

    JSON = "json"  # DynamoDB: {"__type": ..., "message": ...}
    SQS_JSON = "sqs-json"  # SQS's JSON protocol, query-compatible: the code also in x-amzn-query-error
    QUERY = "query"  # SQS's query protocol, STS, IAM, CloudFormation: <ErrorResponse>
    S3 = "s3"  # REST-XML: <Error><Code>
    REST_JSON = "rest-json"  # API Gateway, Lambda: x-amzn-ErrorType and {"Message": ...}


_QUERY_NAMESPACES = {
    "sqs": "http://queue.amazonaws.com/doc/2012-11-05/",
    "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
    "iam": "https://iam.amazonaws.com/doc/2010-05-08/",
}


@dataclass
class AwsError(Exception):
    """An error AWS answers. ``code`` is what botocore reports as ``Error.Code``.

    ``json_type`` is the ``__type`` of JSON protocols (AWS names it with a namespace, e.g.
    ``com.amazon.coral.service#AccessDeniedException``); ``extra`` are the additional elements S3
    puts in its XML (``ProposedSize``, ``MaxSizeAllowed``...).
    """

    status: int
    code: str
    message: str
    json_type: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    sender: bool = True
    message_key: str = "message"

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True)
class WireAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def render(error: AwsError, protocol: Protocol, service: str = "") -> WireAnswer:
    """The HTTP answer carrying ``error`` as ``protocol`` would."""
    request_id = str(uuid.uuid4())
    s3_request_id = uuid.uuid4().hex[:16].upper()
    if protocol in (Protocol.JSON, Protocol.SQS_JSON):
        body = json.dumps({"__type": error.json_type or error.code, error.message_key: error.message})
        content_type = "application/x-amz-json-1.0"
        headers = [("Content-Type", content_type), ("x-amzn-RequestId", request_id)]
        if protocol is Protocol.SQS_JSON:
            kind = "Sender" if error.sender else "Receiver"
            headers.append(("x-amzn-query-error", f"{error.code};{kind}"))
        return WireAnswer(error.status, headers, body.encode())
    if protocol is Protocol.REST_JSON:
        body = json.dumps({error.message_key: error.message})
        headers = [
            ("Content-Type", "application/json"),
            ("x-amzn-ErrorType", error.code),
            ("x-amzn-RequestId", request_id),
        ]
        return WireAnswer(error.status, headers, body.encode())
    if protocol is Protocol.S3:
        extra = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in error.extra.items())
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(error.code)}</Code><Message>{escape(error.message)}</Message>{extra}"
            f"<RequestId>{s3_request_id}</RequestId><HostId>{uuid.uuid4().hex}</HostId></Error>"
        )
        headers = [("Content-Type", "application/xml"), ("x-amz-request-id", s3_request_id)]
        return WireAnswer(error.status, headers, xml.encode())
    namespace = _QUERY_NAMESPACES.get(service, "https://amazonaws.com/doc/")
    kind = "Sender" if error.sender else "Receiver"
    xml = (
        f'<?xml version="1.0"?><ErrorResponse xmlns="{namespace}"><Error><Type>{kind}</Type>'
        f"<Code>{escape(error.code)}</Code><Message>{escape(error.message)}</Message><Detail/></Error>"
        f"<RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    return WireAnswer(
        error.status, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], xml.encode()
    )


# -- the errors, per protocol ------------------------------------------------------------------------

_CORAL = "com.amazon.coral.service#"
_SIGNATURE_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)
_S3_SIGNATURE_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method."
)


def access_denied(
    protocol: Protocol, principal_arn: str, action: str, resource: str, *, explicit: bool = False
) -> AwsError:
    """An action the caller's policies do not allow, in AWS's words for that service."""
    shown_action = action.lower() if action.startswith("sqs:") else action  # SQS writes it in lowercase
    reason = (
        "with an explicit deny in an identity-based policy"
        if explicit
        else f"because no identity-based policy allows the {shown_action} action"
    )
    if protocol is Protocol.S3:
        message = (
            f'User: {principal_arn} is not authorized to perform: {action} on resource: "{resource}" {reason}'
        )
        return AwsError(403, "AccessDenied", message)
    message = (
        f"User: {principal_arn} is not authorized to perform: {shown_action} on resource: {resource} {reason}"
    )
    if protocol is Protocol.JSON:
        return AwsError(
            400, "AccessDeniedException", message, _CORAL + "AccessDeniedException", message_key="Message"
        )
    if protocol is Protocol.SQS_JSON:
        return AwsError(403, "AccessDenied", message, _CORAL + "AccessDeniedException", message_key="Message")
    if protocol is Protocol.REST_JSON:
        return AwsError(403, "AccessDeniedException", message, message_key="Message")
    return AwsError(403, "AccessDenied", message)


def unknown_key(protocol: Protocol, access_key: str) -> AwsError:
    """Credentials AWS does not know (InvalidClientTokenId, or its S3 and DynamoDB names)."""
    if protocol is Protocol.S3:
        message = "The AWS Access Key Id you provided does not exist in our records."
        return AwsError(403, "InvalidAccessKeyId", message, extra={"AWSAccessKeyId": access_key})
    message = "The security token included in the request is invalid."
    if protocol is Protocol.JSON:
        return AwsError(400, "UnrecognizedClientException", message, _CORAL + "UnrecognizedClientException")
    if protocol is Protocol.REST_JSON:
        return AwsError(403, "UnrecognizedClientException", message)
    return AwsError(403, "InvalidClientTokenId", message, _CORAL + "InvalidClientTokenIdException")


def bad_token(protocol: Protocol, access_key: str) -> AwsError:
    """A session token that does not belong to the access key."""
    if protocol is Protocol.S3:
        return AwsError(400, "InvalidToken", "The provided token is malformed or otherwise invalid.")
    return unknown_key(protocol, access_key)


def signature_mismatch(protocol: Protocol) -> AwsError:
    if protocol is Protocol.S3:
        return AwsError(403, "SignatureDoesNotMatch", _S3_SIGNATURE_MESSAGE)
    if protocol is Protocol.JSON:
        return AwsError(
            400, "InvalidSignatureException", _SIGNATURE_MESSAGE, _CORAL + "InvalidSignatureException"
        )
    if protocol is Protocol.REST_JSON:
        return AwsError(403, "InvalidSignatureException", _SIGNATURE_MESSAGE)
    return AwsError(
        403, "SignatureDoesNotMatch", _SIGNATURE_MESSAGE, _CORAL + "SignatureDoesNotMatchException"
    )


def missing_authentication(protocol: Protocol) -> AwsError:
    """An unsigned request: S3 takes it as anonymous (denied here), the others refuse it outright."""
    if protocol is Protocol.S3:
        return AwsError(403, "AccessDenied", "Access Denied")
    message = "Request is missing Authentication Token"
    if protocol is Protocol.JSON:
        return AwsError(
            400,
            "MissingAuthenticationTokenException",
            message,
            _CORAL + "MissingAuthenticationTokenException",
        )
    if protocol is Protocol.REST_JSON:
        return AwsError(403, "ForbiddenException", "Missing Authentication Token", message_key="message")
    return AwsError(
        403, "MissingAuthenticationToken", message, _CORAL + "MissingAuthenticationTokenException"
    )


def validation(protocol: Protocol, message: str) -> AwsError:
    """A request the service refuses as malformed or over a limit (DynamoDB's ValidationException)."""
    if protocol is Protocol.JSON:
        return AwsError(400, "ValidationException", message, "com.amazon.coral.validate#ValidationException")
    return AwsError(400, "ValidationException", message)


def sqs_error(protocol: Protocol, code: str, message: str) -> AwsError:
    """One of SQS's own errors (InvalidParameterValue, BatchRequestTooLong, ...), as 400 Sender."""
    json_type = f"com.amazonaws.sqs#{code.removeprefix('AWS.SimpleQueueService.')}"
    return AwsError(400, code, message, json_type if protocol is Protocol.SQS_JSON else None)
