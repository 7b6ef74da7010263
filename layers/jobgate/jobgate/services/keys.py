"""API keys and callers: issue, list and revoke per-tenant keys; tell who a request comes from."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel
from ulid import ULID

from jobgate.adapters.keys import ApiKeyRecord, KeyStore
from jobgate.errors import Unauthorized, ValidationFailed
from jobgate.models import utcnow

# Tenant names become parts of table keys and S3 prefixes: no separators, nothing to escape.
TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
KEY_PREFIX = "jg_"
# A header longer than this is no key of ours; it is refused before it is hashed.
MAX_KEY_CHARS = 256
BOOTSTRAP_KEY_ID = "bootstrap"


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def check_tenant(tenant: str) -> str:
    if not TENANT_RE.match(tenant):
        raise ValidationFailed(
            f"'{tenant}' is not a valid tenant name.",
            [{"loc": ["tenant"], "msg": "letters, digits, '.', '_' and '-' only; at most 64 characters"}],
        )
    return tenant


class Principal(BaseModel, frozen=True):
    """Who a request comes from: the tenant it acts for, and the credential that proved it."""

    tenant: str
    via: Literal["bootstrap", "key", "jwt"]
    credential_id: str  # the key id, or the JWT subject

    @property
    def rate_bucket(self) -> str:
        return f"{self.via}:{self.tenant}:{self.credential_id}"


class IssuedKey(BaseModel):
    """A new key: the only time its secret is seen."""

    api_key: str
    record: ApiKeyRecord


class KeyService:
    def __init__(self, store: KeyStore, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._store = store
        self._clock = clock

    def create(self, tenant: str, name: str, *, expires: datetime | None = None) -> IssuedKey:
        check_tenant(tenant)
        api_key = KEY_PREFIX + secrets.token_urlsafe(32)
        record = ApiKeyRecord(
            key_id=str(ULID()),
            tenant=tenant,
            name=name,
            key_hash=hash_key(api_key),
            created_at=self._clock(),
            expires=expires,
        )
        return IssuedKey(api_key=api_key, record=self._store.put(record))

    def list_keys(self, tenant: str) -> list[ApiKeyRecord]:
        return self._store.list_keys(check_tenant(tenant))

    def revoke(self, tenant: str, key_id: str) -> ApiKeyRecord:
        return self._store.revoke(check_tenant(tenant), key_id, now=self._clock())

    def principal(self, api_key: str) -> Principal:
        """The key's owner; Unauthorized for an unknown, revoked or expired key."""
        digest = hash_key(api_key)
        record = self._store.find(digest)
        # The table matched the hash already; comparing again in constant time costs nothing and
        # keeps the check honest should the lookup ever become a prefix or index match.
        if record is None or not hmac.compare_digest(record.key_hash, digest):
            raise Unauthorized("The API key is not valid.")
        state = record.state(self._clock())
        if state != "active":
            raise Unauthorized(f"The API key was {state}.")
        return Principal(tenant=record.tenant, via="key", credential_id=record.key_id)


class Authenticator:
    """Turns a request's credentials into a Principal, or refuses it with a 401 problem.

    Three kinds, tried in this order: claims of a JWT that API Gateway's JWT authorizer validated
    (they exist only on the JWT API's events), the bootstrap key from settings (tenant `default`;
    the local stack and first deployments use it), and per-tenant keys from the table.
    """

    def __init__(
        self,
        keys: KeyService,
        *,
        bootstrap_key: str | None,
        bootstrap_tenant: str,
        tenant_claim: str,
    ) -> None:
        self._keys = keys
        self._bootstrap = bootstrap_key.encode() if bootstrap_key else None
        self._bootstrap_tenant = bootstrap_tenant
        self._tenant_claim = tenant_claim

    def authenticate(self, api_key: str | None, jwt_claims: Mapping[str, Any] | None = None) -> Principal:
        if jwt_claims is not None:
            return self._from_claims(jwt_claims)
        if not api_key:
            raise Unauthorized("Send your API key in the X-API-Key header.")
        if len(api_key) > MAX_KEY_CHARS:
            raise Unauthorized("The API key is not valid.")
        if self._bootstrap is not None and hmac.compare_digest(api_key.encode(), self._bootstrap):
            return Principal(tenant=self._bootstrap_tenant, via="bootstrap", credential_id=BOOTSTRAP_KEY_ID)
        return self._keys.principal(api_key)

    def tenant_for_key(self, api_key: str | None) -> str | None:
        """The tenant of a key, or None for a missing, unknown, revoked or expired one."""
        try:
            return self.authenticate(api_key).tenant
        except Unauthorized:
            return None

    def _from_claims(self, claims: Mapping[str, Any]) -> Principal:
        tenant = claims.get(self._tenant_claim)
        if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
            raise Unauthorized(f"The token has no valid '{self._tenant_claim}' claim naming a tenant.")
        subject = str(claims.get("sub") or tenant)
        # The subject names the caller's rate bucket (a table key): a long one is shortened to its hash.
        credential = subject if len(subject) <= 128 else hash_key(subject)
        return Principal(tenant=tenant, via="jwt", credential_id=credential)
