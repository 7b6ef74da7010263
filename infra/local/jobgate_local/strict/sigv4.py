"""Signature Version 4 as AWS checks it: who signed a request (header, presigned URL or POST form), and
whether the signature is the one their secret key makes.

The canonical request is rebuilt from the bytes the client sent (raw path, raw query, the signed
headers) the way botocore builds it when signing, so a signature verifies exactly when botocore made
it with the same secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import quote

from botocore.utils import normalize_url_path

from .request import StrictRequest

SigningKind = Literal["header", "query", "post"]
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),"
    r"\s*Signature=(?P<signature>[0-9a-fA-F]+)\s*$"
)
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


class MalformedSignature(Exception):
    """The request carries a signature that cannot be read (AWS answers it as an auth error)."""


@dataclass(frozen=True)
class Signature:
    """What a SigV4 signature says: the key, its scope, and what it covers."""

    kind: SigningKind
    access_key: str
    date: str  # YYYYMMDD of the credential scope
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str  # the request's X-Amz-Date (YYYYMMDDTHHMMSSZ)
    token: str | None
    expires_s: int | None = None  # presigned URLs: X-Amz-Expires

    @property
    def signed_at(self) -> datetime:
        return datetime.strptime(self.amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def _scope(credential: str) -> tuple[str, str, str, str]:
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise MalformedSignature(f"malformed credential {credential!r}")
    return parts[0], parts[1], parts[2], parts[3]


def read_signature(request: StrictRequest) -> Signature | None:
    """The signature of a header-signed or presigned request; None when it carries none."""
    authorization = request.header("Authorization")
    if authorization:
        match = _AUTHORIZATION.match(authorization.strip())
        if match is None:
            raise MalformedSignature("unreadable Authorization header")
        access_key, date, region, service = _scope(match["credential"])
        return Signature(
            kind="header",
            access_key=access_key,
            date=date,
            region=region,
            service=service,
            signed_headers=tuple(match["signed"].lower().split(";")),
            signature=match["signature"].lower(),
            amz_date=request.header("X-Amz-Date") or "",
            token=request.header("X-Amz-Security-Token"),
        )
    credential = request.query_value("X-Amz-Credential")
    if credential:
        access_key, date, region, service = _scope(credential)
        try:
            expires = int(request.query_value("X-Amz-Expires") or "")
        except ValueError:
            raise MalformedSignature("X-Amz-Expires is not a number") from None
        return Signature(
            kind="query",
            access_key=access_key,
            date=date,
            region=region,
            service=service,
            signed_headers=tuple((request.query_value("X-Amz-SignedHeaders") or "host").lower().split(";")),
            signature=(request.query_value("X-Amz-Signature") or "").lower(),
            amz_date=request.query_value("X-Amz-Date") or "",
            token=request.query_value("X-Amz-Security-Token"),
            expires_s=expires,
        )
    return None


def post_signature(fields: dict[str, str]) -> Signature | None:
    """The signature of a browser-based (presigned) POST upload, from its form fields."""
    credential = fields.get("x-amz-credential")
    if not credential:
        return None
    access_key, date, region, service = _scope(credential)
    return Signature(
        kind="post",
        access_key=access_key,
        date=date,
        region=region,
        service=service,
        signed_headers=(),
        signature=fields.get("x-amz-signature", "").lower(),
        amz_date=fields.get("x-amz-date", ""),
        token=fields.get("x-amz-security-token"),
    )


# -- verification -------------------------------------------------------------------------------------


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _sign(secret: str, signature: Signature, string_to_sign: str) -> str:
    key = signing_key(secret, signature.date, signature.region, signature.service)
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def canonical_request(request: StrictRequest, signature: Signature) -> str:
    """The canonical request botocore signed (SigV4 for S3 leaves the path as sent; others normalise it)."""
    if signature.service == "s3":
        path = request.raw_path or "/"
    else:
        path = quote(normalize_url_path(request.raw_path or "/"), safe="/~")
    pairs = []
    for pair in request.raw_query.split("&") if request.raw_query else []:
        key, _, value = pair.partition("=")
        if signature.kind == "query" and key == "X-Amz-Signature":
            continue
        pairs.append((key, value))
    query = "&".join(f"{key}={value}" for key, value in sorted(pairs))
    header_lines = []
    for name in signature.signed_headers:
        values = request.headers.getlist(name)
        header_lines.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}")
    if signature.kind == "query":
        payload = UNSIGNED_PAYLOAD if signature.service == "s3" else hashlib.sha256(request.body).hexdigest()
    else:
        payload = request.header("X-Amz-Content-SHA256") or hashlib.sha256(request.body).hexdigest()
    return "\n".join(
        [
            request.method,
            path,
            query,
            "\n".join(header_lines) + "\n",
            ";".join(signature.signed_headers),
            payload,
        ]
    )


def request_signature_matches(request: StrictRequest, signature: Signature, secret: str) -> bool:
    canonical = canonical_request(request, signature)
    scope = f"{signature.date}/{signature.region}/{signature.service}/aws4_request"
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", signature.amz_date, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest()]
    )
    return hmac.compare_digest(_sign(secret, signature, string_to_sign), signature.signature)


def post_signature_matches(policy_b64: str, signature: Signature, secret: str) -> bool:
    """A POST policy is signed as is: the string to sign is the base64 policy itself."""
    return hmac.compare_digest(_sign(secret, signature, policy_b64), signature.signature)
