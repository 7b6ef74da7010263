"""Browser-based (presigned) POST uploads, checked as S3 checks them.

S3 reads the form, finds the signer from ``x-amz-credential``, checks the signature (an HMAC of the
base64 policy with the signer's key), the policy's expiration and every condition (exact match,
``starts-with``, ``content-length-range`` against the file actually sent), and refuses any form field
no condition covers. Errors are S3's: 403 ``AccessDenied`` "Invalid according to Policy: ...", 400
``EntityTooLarge`` / ``EntityTooSmall`` with the sizes, 403 ``SignatureDoesNotMatch``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from werkzeug.formparser import parse_form_data

from .errors import AwsError
from .request import StrictRequest

# Fields no condition needs to cover (S3's rule), compared in lowercase.
_UNCOVERED = frozenset({"file", "policy", "x-amz-signature"})


def _denied(reason: str) -> AwsError:
    return AwsError(403, "AccessDenied", f"Invalid according to Policy: {reason}")


@dataclass(frozen=True)
class PostUpload:
    """The form of a POST upload: its fields (names in lowercase), the file's name and size."""

    fields: dict[str, str]
    filename: str
    size: int

    @property
    def key(self) -> str:
        return self.fields.get("key", "").replace("${filename}", self.filename)


def read_post_upload(request: StrictRequest) -> PostUpload | None:
    """The upload form of a ``multipart/form-data`` POST; None for any other POST."""
    content_type = (request.header("Content-Type") or "").lower()
    if not content_type.startswith("multipart/form-data"):
        return None
    environ = {
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": request.header("Content-Type"),
        "CONTENT_LENGTH": str(len(request.body)),
        "wsgi.input": io.BytesIO(request.body),
    }
    _, form, files = parse_form_data(environ)
    fields = {name.lower(): value for name, value in form.items()}
    upload = files.get("file")
    if upload is None:
        return PostUpload(fields, "", 0)
    data = upload.stream.read()
    return PostUpload(fields, upload.filename or "", len(data))


def decode_policy(policy_b64: str) -> dict[str, Any]:
    try:
        policy = json.loads(base64.b64decode(policy_b64, validate=True))
    except (binascii.Error, ValueError):
        raise AwsError(400, "InvalidPolicyDocument", "Invalid Policy: Invalid JSON.") from None
    if not isinstance(policy, dict):
        raise AwsError(400, "InvalidPolicyDocument", "Invalid Policy: Invalid JSON.")
    return policy


def check_policy(
    policy: dict[str, Any], upload: PostUpload, bucket: str, now: datetime | None = None
) -> None:
    """The policy's expiration and conditions against the form; raises S3's error for the first failure."""
    now = now or datetime.now(UTC)
    expiration = policy.get("expiration")
    if not isinstance(expiration, str):
        raise AwsError(400, "InvalidPolicyDocument", "Invalid Policy: Policy missing expiration.")
    try:
        expires = datetime.fromisoformat(expiration.replace("Z", "+00:00"))
    except ValueError:
        raise AwsError(400, "InvalidPolicyDocument", "Invalid Policy: Invalid 'expiration' value.") from None
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    if now > expires:
        raise _denied("Policy expired.")
    fields = {**upload.fields, "bucket": bucket, "key": upload.key}
    covered: set[str] = set()
    for condition in policy.get("conditions", []):
        name = _check_condition(condition, fields, upload.size)
        if name is not None:
            covered.add(name)
    extra = [
        name
        for name in upload.fields
        if name not in _UNCOVERED and not name.startswith("x-ignore-") and name not in covered
    ]
    if extra:
        raise _denied(f"Extra input fields: {', '.join(extra)}")


def _shown(condition: Any) -> str:
    return json.dumps(condition, separators=(", ", ": "))


def _check_condition(condition: Any, fields: dict[str, str], size: int) -> str | None:
    """Check one condition; the (lowercase) field it covers, if any."""
    if isinstance(condition, dict) and len(condition) == 1:
        ((name, expected),) = condition.items()
        if fields.get(str(name).lower()) != str(expected):
            # S3 reports a {"field": value} condition in its ["eq", "$field", value] form.
            raise _denied(f"Policy Condition failed: {_shown(['eq', f'${name}', expected])}")
        return str(name).lower()
    if not isinstance(condition, list) or len(condition) != 3:
        raise AwsError(
            400, "InvalidPolicyDocument", f"Invalid Policy: Invalid Condition: {_shown(condition)}"
        )
    operator = str(condition[0]).lower()
    if operator == "content-length-range":
        low, high = int(condition[1]), int(condition[2])
        if size < low:
            raise AwsError(
                400,
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed size",
                extra={"ProposedSize": str(size), "MinSizeAllowed": str(low)},
            )
        if size > high:
            raise AwsError(
                400,
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed size",
                extra={"ProposedSize": str(size), "MaxSizeAllowed": str(high)},
            )
        return None
    subject = str(condition[1])
    if not subject.startswith("$"):
        raise AwsError(
            400, "InvalidPolicyDocument", f"Invalid Policy: Invalid Condition: {_shown(condition)}"
        )
    name = subject[1:].lower()
    actual, expected = fields.get(name), str(condition[2])
    if operator == "eq":
        holds = actual == expected
    elif operator == "starts-with":
        values = actual.split(",") if name == "content-type" and actual is not None else [actual]
        holds = all(v is not None and v.strip().startswith(expected) for v in values)
    else:
        raise AwsError(
            400, "InvalidPolicyDocument", f"Invalid Policy: Invalid Condition: {_shown(condition)}"
        )
    if not holds:
        raise _denied(f"Policy Condition failed: {_shown(condition)}")
    return name
