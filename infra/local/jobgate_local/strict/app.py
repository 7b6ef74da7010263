"""The strict layer: a WSGI middleware around moto's server that refuses what AWS refuses.

Every request is read once, then: its signer is found (Authorization header, presigned query, or the
``x-amz-credential`` field of a POST upload) and the signature checked with the signer's secret; the
request is mapped to IAM actions and resources and checked against the signer's policies; AWS's size
and count limits are checked; a presigned POST's policy is checked as S3 checks it; and, when fault
injection is on and the caller is a function, the call may fail as AWS calls fail. Only then does moto
see it.

Admin endpoints (unauthenticated, local only), beside moto's own ``/moto-api``:

- ``GET|POST|DELETE /_jobgate/faults``: read, set (JSON, see :class:`FaultSettings`), turn off faults;
- ``POST /_jobgate/reset``: empty the data services (``{"services": ["dynamodb", "sqs", "s3"]}``),
  keeping IAM roles and STS sessions, and turn faults off;
- ``POST /_jobgate/authorize``: check a signed request another local gateway received (the WebSocket
  gateway's ``@connections`` endpoint), so one evaluator decides for every service.
"""

from __future__ import annotations

import base64
import json
import logging
import select
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any, NoReturn

from werkzeug.datastructures import Headers

from . import s3_cors
from .actions import Call, classify, guess_service, object_arn, protocol_of
from .errors import (
    AwsError,
    Protocol,
    WireAnswer,
    access_denied,
    bad_token,
    missing_authentication,
    render,
    signature_mismatch,
    unknown_key,
)
from .faults import FaultInjector, FaultSettings, internal_error, throttling
from .limits import check_dynamodb, check_sqs, install_backend_limits
from .post_policy import PostUpload, check_policy, decode_policy, read_post_upload
from .principals import DEFAULT_ACCOUNT, Principal, UnknownKey, authorize, find_principal
from .request import StrictRequest
from .sigv4 import (
    MalformedSignature,
    Signature,
    post_signature,
    post_signature_matches,
    read_signature,
    request_signature_matches,
)
from .tasks import LocalTasks

logger = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
MAX_PRESIGN_EXPIRES_S = 7 * 24 * 3600
_ADMIN_PREFIX = "/_jobgate/"


class Refusal(Exception):
    """An AWS error together with how to render it."""

    def __init__(self, error: AwsError, protocol: Protocol, service: str) -> None:
        super().__init__(str(error))
        self.error = error
        self.protocol = protocol
        self.service = service


@dataclass
class Checked:
    call: Call
    principal: Principal
    presigned: bool


class StrictLayer:
    def __init__(
        self, app: WsgiApp, *, faults: FaultSettings | None = None, account_id: str = DEFAULT_ACCOUNT
    ) -> None:
        self._app = app
        self._account = account_id
        self.faults = FaultInjector()
        self.tasks = LocalTasks(account_id)
        if faults is not None:
            self.faults.configure(faults)
        install_backend_limits()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        if path.startswith(_ADMIN_PREFIX):
            return self._admin(environ, start_response)
        if environ.get("REQUEST_METHOD") == "OPTIONS":
            return self._options(environ, start_response)
        if path.startswith("/moto-api") or path == "/favicon.ico":
            return self._app(environ, start_response)
        request = StrictRequest.read(environ)
        try:
            checked = self.check(request)
        except Refusal as refusal:
            logger.warning("%s %s refused: %s", request.method, request.path, refusal.error)
            if refusal.service == "s3":  # S3's errors carry CORS headers too: a page can read them
                start_response = _with_s3_cors(environ, start_response)
            return _answer(
                start_response, render(refusal.error, refusal.protocol, refusal.service), request.method
            )
        call = checked.call
        fault = self.faults.pick(
            call, function_identity=checked.principal.kind == "role", presigned=checked.presigned
        )
        if fault is None:
            if call.service == "ecs" and self.tasks.handles(call.operation):
                return self._answer_tasks(call, request, start_response)
            if call.service == "s3":
                return self._app(environ, _with_s3_cors(environ, start_response))
            return self._app(environ, start_response)
        logger.info("fault %s on %s %s for %s", fault, call.service, call.operation, checked.principal.arn)
        return self._inject(fault, call, request, start_response)

    def _options(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """CORS preflights carry no credentials, on AWS too: S3 answers them from the bucket's CORS
        rules (s3_cors); an OPTIONS for anything but a bucket goes to moto."""
        rules = s3_cors.bucket_rules(str(environ.get("PATH_INFO", "")))
        if rules is None:
            return self._app(environ, start_response)
        allowed = s3_cors.preflight(
            rules,
            environ.get("HTTP_ORIGIN"),
            environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD"),
            environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS"),
        )
        if allowed is None:
            return _answer(start_response, render(s3_cors.REFUSED, Protocol.S3, "s3"), "OPTIONS")
        start_response("200 OK", [*allowed.items(), ("Content-Length", "0")])
        return [b""]

    # -- the checks ------------------------------------------------------------------------------

    def check(self, request: StrictRequest) -> Checked:
        """Authenticate, authorize and check limits; raises :class:`Refusal` with AWS's error."""
        upload: PostUpload | None = None
        try:
            signature = read_signature(request)
            if signature is None and request.method == "POST":
                upload = read_post_upload(request)
                signature = post_signature(upload.fields) if upload is not None else None
        except MalformedSignature:
            service = guess_service(request)
            protocol = protocol_of(request, service)
            raise Refusal(signature_mismatch(protocol), protocol, service) from None
        if signature is None:
            service = guess_service(request)
            protocol = protocol_of(request, service)
            raise Refusal(missing_authentication(protocol), protocol, service)
        call = classify(request, signature.service, signature.region, self._account)
        if call.service == "ecs" and call.operation == "RunTask":
            # What ECS checks: the task definition, and passing each role it names to the task.
            definition = self.tasks.definition_arn(str(request.json.get("taskDefinition", "")))
            call.permissions = [("ecs:RunTask", definition)]
            call.permissions += [("iam:PassRole", role) for role in self.tasks.passed_roles(definition)]
            call.condition_keys = {"iam:PassRole": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}
        try:
            principal = self._authenticate(request, signature, upload, call.protocol)
            if upload is not None:
                self._check_upload(call, upload)
            denial = authorize(principal, call.permissions, call.condition_keys)
            if denial is not None:
                raise access_denied(
                    call.protocol, principal.arn, denial.action, denial.resource, explicit=denial.explicit
                )
            if call.service == "dynamodb":
                check_dynamodb(call, request)
            elif call.service == "sqs":
                check_sqs(call, request, _queue_max_message_bytes)
        except AwsError as error:
            raise Refusal(error, call.protocol, call.service) from None
        return Checked(call, principal, presigned=signature.kind != "header")

    def _authenticate(
        self, request: StrictRequest, signature: Signature, upload: PostUpload | None, protocol: Protocol
    ) -> Principal:
        try:
            principal = find_principal(signature.access_key, signature.token, self._account)
        except UnknownKey as unknown:
            if unknown.reason == "token":
                raise bad_token(protocol, signature.access_key) from None
            raise unknown_key(protocol, signature.access_key) from None
        if upload is not None:
            matches = post_signature_matches(upload.fields.get("policy", ""), signature, principal.secret_key)
        else:
            matches = request_signature_matches(request, signature, principal.secret_key)
        if not matches:
            raise signature_mismatch(protocol)
        if signature.kind == "query":
            _check_expiry(signature)
        return principal

    def _check_upload(self, call: Call, upload: PostUpload) -> None:
        if "policy" not in upload.fields:
            raise AwsError(403, "AccessDenied", "Access Denied")
        if not upload.key:
            raise AwsError(
                400,
                "InvalidArgument",
                "Bucket POST must contain a field named 'key'.  "
                "If it is specified, please check the order of the fields.",
                extra={"ArgumentName": "key", "ArgumentValue": ""},
            )
        check_policy(decode_policy(upload.fields["policy"]), upload, call.bucket or "")
        call.key = upload.key
        call.operation = "PostObject"
        call.permissions = [("s3:PutObject", object_arn(call.bucket or "", upload.key))]

    def _answer_tasks(
        self, call: Call, request: StrictRequest, start_response: StartResponse
    ) -> Iterable[bytes]:
        status, document = self.tasks.answer(call.operation, dict(request.json))
        headers = [("Content-Type", "application/x-amz-json-1.1")]
        return _answer(start_response, WireAnswer(status, headers, json.dumps(document).encode()), "POST")

    # -- faults ----------------------------------------------------------------------------------

    def _inject(
        self, fault: str, call: Call, request: StrictRequest, start_response: StartResponse
    ) -> Iterable[bytes]:
        environ = request.environ
        if fault == "throttle":
            return _answer(
                start_response, render(throttling(call), call.protocol, call.service), request.method
            )
        if fault == "error":
            return _answer(
                start_response, render(internal_error(call), call.protocol, call.service), request.method
            )
        if fault == "reset":
            _drop_connection(environ)
        if fault == "slow":
            rate = self.faults.settings.slow_bytes_per_s
            if request.body:
                time.sleep(len(request.body) / rate)
            return _throttled(self._app(environ, start_response), rate)
        # drop and timeout: the request is applied, the answer never arrives.
        result = self._app(environ, lambda *_args, **_kwargs: lambda _data: None)
        for _chunk in result:
            pass
        if hasattr(result, "close"):
            result.close()
        if fault == "timeout":
            _wait_for_client_to_leave(environ, self.faults.settings.stall_s)
        _drop_connection(environ)

    # -- admin endpoints -------------------------------------------------------------------------

    def _admin(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        request = StrictRequest.read(environ)
        name = request.path[len(_ADMIN_PREFIX) :].strip("/")
        try:
            status, document = self._admin_answer(name, request)
        except (ValueError, TypeError, KeyError) as exc:
            status, document = 400, {"message": str(exc)}
        body = json.dumps(document).encode()
        return _answer(
            start_response, WireAnswer(status, [("Content-Type", "application/json")], body), "GET"
        )

    def _admin_answer(self, name: str, request: StrictRequest) -> tuple[int, dict[str, Any]]:
        if name == "faults":
            if request.method == "POST":
                self.faults.configure(FaultSettings.from_json(dict(request.json)))
            elif request.method == "DELETE":
                self.faults.reset()
            return 200, self.faults.state()
        if name == "reset" and request.method == "POST":
            services = list(request.json.get("services", ["dynamodb", "sqs", "s3"]))
            _reset_services(services)
            self.faults.reset()
            return 200, {"reset": services}
        if name == "tasks":
            return 200, self.tasks.register(
                dict(request.json)
            ) if request.method == "POST" else self.tasks.state()
        if name == "authorize" and request.method == "POST":
            return 200, self._authorize_forwarded(dict(request.json))
        return 404, {"message": f"no admin endpoint {name}"}

    def _authorize_forwarded(self, document: dict[str, Any]) -> dict[str, Any]:
        """Check a request another local gateway received: its signature, then one action on one resource."""
        headers = Headers([(str(k), str(v)) for k, v in document.get("headers", [])])
        forwarded = StrictRequest(
            method=str(document["method"]).upper(),
            raw_path=str(document["path"]),
            raw_query=str(document.get("query", "")),
            headers=headers,
            body=base64.b64decode(document.get("body", "")),
            environ={},
        )
        protocol = Protocol.REST_JSON
        try:
            signature = read_signature(forwarded)
            if signature is None:
                raise missing_authentication(protocol)
            principal = self._authenticate(forwarded, signature, None, protocol)
            action, resource = str(document["action"]), str(document["resource"])
            denial = authorize(principal, [(action, resource)])
            if denial is not None:
                raise access_denied(
                    protocol, principal.arn, action, _masked(resource), explicit=denial.explicit
                )
        except MalformedSignature:
            error = signature_mismatch(protocol)
        except AwsError as refused:
            error = refused
        else:
            return {"allowed": True, "principal": principal.arn}
        logger.warning("%s %s refused: %s", forwarded.method, forwarded.raw_path, error)
        return {
            "allowed": False,
            "status": error.status,
            "code": error.code,
            "body": {error.message_key: error.message},
        }


def _masked(arn: str) -> str:
    """API Gateway shows only the account's last four digits in the resource of its errors."""
    parts = arn.split(":")
    if len(parts) > 4 and parts[4].isdigit():
        parts[4] = "*" * (len(parts[4]) - 4) + parts[4][-4:]
    return ":".join(parts)


def _check_expiry(signature: Signature) -> None:
    expires_s = signature.expires_s or 0
    if expires_s > MAX_PRESIGN_EXPIRES_S:
        raise AwsError(
            400,
            "AuthorizationQueryParametersError",
            "X-Amz-Expires must be less than a week (in seconds) that is 604800",
        )
    try:
        expires = signature.signed_at + timedelta(seconds=expires_s)
    except ValueError:
        raise AwsError(403, "AccessDenied", "X-Amz-Date must be in the ISO8601 Long Format") from None
    now = datetime.now(UTC)
    if now > expires:
        raise AwsError(
            403,
            "AccessDenied",
            "Request has expired",
            extra={
                "X-Amz-Expires": str(expires_s),
                "Expires": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "ServerTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        )


def _queue_max_message_bytes(queue_url: str) -> int | None:
    """The queue's MaximumMessageSize, from moto's SQS (this layer runs in moto's process)."""
    from moto.sqs.models import sqs_backends

    parts = [p for p in queue_url.split("?")[0].split("/") if p]
    if len(parts) < 2:
        return None
    account, name = parts[-2], parts[-1]
    for backend in sqs_backends.get(account, {}).values():
        queue = backend.queues.get(name)
        if queue is not None:
            return int(queue.attributes["MaximumMessageSize"])
    return None


def _reset_services(services: list[str]) -> None:
    from moto.backends import get_backend

    for service in services:
        for account_backend in get_backend(service).values():  # type: ignore[call-overload]
            account_backend.reset()


def _with_s3_cors(environ: dict[str, Any], start_response: StartResponse) -> StartResponse:
    """start_response for an S3 answer: its CORS headers from the bucket's rules, as S3 sets them."""
    rules = s3_cors.bucket_rules(str(environ.get("PATH_INFO", ""))) or []
    cors = s3_cors.actual(rules, environ.get("HTTP_ORIGIN"), str(environ.get("REQUEST_METHOD", "GET")))

    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return start_response(status, [*s3_cors.without_cors(headers), *cors.items()], exc_info)

    return start


def _answer(start_response: StartResponse, answer: WireAnswer, method: str) -> list[bytes]:
    body = b"" if method == "HEAD" else answer.body
    reason = HTTPStatus(answer.status).phrase if answer.status in HTTPStatus._value2member_map_ else ""
    headers = [*answer.headers, ("Content-Length", str(len(answer.body)))]
    start_response(f"{answer.status} {reason}", headers)
    return [body]


def _throttled(result: Iterable[bytes], bytes_per_s: int) -> Iterator[bytes]:
    """The answer's body at ``bytes_per_s``, in pieces of a tenth of a second's worth."""
    piece = max(1, bytes_per_s // 10)
    try:
        for chunk in result:
            for start in range(0, len(chunk), piece):
                part = chunk[start : start + piece]
                time.sleep(len(part) / bytes_per_s)
                yield part
    finally:
        if hasattr(result, "close"):
            result.close()


def _wait_for_client_to_leave(environ: dict[str, Any], limit_s: float) -> None:
    """Hold the answer until the client closes the connection (its read timeout) or ``limit_s`` passes."""
    sock = environ.get("werkzeug.socket")
    deadline = time.monotonic() + limit_s
    while sock is not None and (left := deadline - time.monotonic()) > 0:
        try:
            readable, _, _ = select.select([sock], [], [], min(left, 1.0))
            if readable and not sock.recv(1, socket.MSG_PEEK):
                return  # the client hung up
        except (OSError, ValueError):
            return
    if sock is None:
        time.sleep(limit_s)


def _drop_connection(environ: dict[str, Any]) -> NoReturn:
    """Close the connection with no answer; the reset is what the client sees. Never returns."""
    sock = environ.get("werkzeug.socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    # werkzeug takes a ConnectionError as the client having gone, quietly.
    raise ConnectionResetError("connection dropped by fault injection")
