"""S3's answers to browsers' cross-origin requests, from the bucket's CORS rules.

moto's server answers every request with `Access-Control-Allow-Origin: *` (flask-cors, turned off in
jobgate_local.moto_server) and its own preflight ignores the method and headers asked for; a browser test
against it would pass whatever the bucket's rules say. S3 (Amazon S3 User Guide, "CORS configuration";
API reference, "OPTIONS object"): a preflight is answered by the first rule that allows its origin, its
method and every header in Access-Control-Request-Headers; no such rule, or no CORS configuration, is a
403. An actual request carries the CORS headers only when a rule allows its origin and method. An
AllowedOrigin or AllowedHeader may hold one `*` wildcard; headers compare without case.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from .errors import AwsError

REFUSED = AwsError(
    403,
    "AccessForbidden",
    "CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, "
    "request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted "
    "by the resource's CORS spec.",
)
_CORS_HEADERS = frozenset(
    {
        "access-control-allow-origin",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-expose-headers",
        "access-control-max-age",
        "access-control-allow-credentials",
    }
)


@dataclass(frozen=True)
class CorsRule:
    origins: tuple[str, ...]
    methods: tuple[str, ...]
    headers: tuple[str, ...] = ()
    expose: tuple[str, ...] = ()
    max_age_s: int | None = None

    def allows(self, origin: str, method: str) -> bool:
        return method.upper() in self.methods and any(_matches(o, origin) for o in self.origins)

    def allows_header(self, header: str) -> bool:
        return any(_matches(h.lower(), header.lower()) for h in self.headers)

    def answer(self, origin: str, method_headers: Sequence[str] = ()) -> dict[str, str]:
        """The CORS headers S3 sends for this rule (the origin itself, unless the rule allows any)."""
        headers = {
            "Access-Control-Allow-Origin": "*" if "*" in self.origins else origin,
            "Access-Control-Allow-Methods": ", ".join(self.methods),
            "Vary": "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
        }
        if "*" not in self.origins:
            headers["Access-Control-Allow-Credentials"] = "true"
        if method_headers:
            headers["Access-Control-Allow-Headers"] = ", ".join(method_headers)
        if self.expose:
            headers["Access-Control-Expose-Headers"] = ", ".join(self.expose)
        if self.max_age_s is not None:
            headers["Access-Control-Max-Age"] = str(self.max_age_s)
        return headers


@lru_cache(maxsize=256)
def _pattern(allowed: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(part) for part in allowed.split("*")) + "$")


def _matches(allowed: str, value: str) -> bool:
    return allowed == "*" or _pattern(allowed).match(value) is not None


def preflight(
    rules: Sequence[CorsRule], origin: str | None, method: str | None, request_headers: str | None
) -> dict[str, str] | None:
    """The headers of the answer to a preflight, or None when S3 refuses it (a 403)."""
    if not origin or not method:
        return None
    asked = [h.strip() for h in (request_headers or "").split(",") if h.strip()]
    for rule in rules:
        if rule.allows(origin, method) and all(rule.allows_header(h) for h in asked):
            return rule.answer(origin, asked)
    return None


def actual(rules: Sequence[CorsRule], origin: str | None, method: str) -> dict[str, str]:
    """The CORS headers of an actual (not preflight) request's answer: none unless a rule allows it."""
    if not origin:
        return {}
    for rule in rules:
        if rule.allows(origin, method):
            return rule.answer(origin)
    return {}


def without_cors(headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """An answer's headers less any CORS header the server behind set."""
    return [(k, v) for k, v in headers if k.lower() not in _CORS_HEADERS]


def _rule(moto_rule: object) -> CorsRule:
    def strings(name: str) -> tuple[str, ...]:
        value = getattr(moto_rule, name, None) or ()
        return (value,) if isinstance(value, str) else tuple(str(v) for v in value)

    max_age = getattr(moto_rule, "max_age_seconds", None)
    return CorsRule(
        origins=strings("allowed_origins"),
        methods=tuple(m.upper() for m in strings("allowed_methods")),
        headers=strings("allowed_headers"),
        expose=strings("exposed_headers"),
        max_age_s=int(max_age) if max_age is not None else None,
    )


def bucket_rules(path: str) -> list[CorsRule] | None:
    """The CORS rules of the bucket a path-style S3 path names (from moto's S3: this layer runs in its
    process), or None when no bucket has that name."""
    from moto.s3.models import s3_backends

    name = path.lstrip("/").split("/", 1)[0]
    if not name:
        return None
    for account in s3_backends.values():
        for backend in account.values():
            bucket = backend.buckets.get(name)
            if bucket is not None:
                return [_rule(rule) for rule in bucket.cors]
    return None
