"""Who signed a request, and what their IAM policies allow, decided by moto's own policy evaluator.

Three kinds of caller reach the local AWS:

- the **admin** identity (the fixed key ``testing``): the local stack's plumbing (provisioning, the SQS
  poller playing Lambda's event source) and test set-up; allowed everything, as an account's root is;
- **role sessions** from moto's STS (``AssumeRole``): each function's execution role, with exactly the
  policies the template gives it; every call is checked against them;
- **IAM users** with access keys made in moto's IAM: checked against their own and their groups'
  policies.

Anything else is an unknown key, which AWS refuses before looking at any policy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from moto.iam.access_control import (
    CreateAccessKeyFailure,
    IAMPolicy,
    IAMPolicyStatement,
    PermissionResult,
    create_access_key,
)

ADMIN_ACCESS_KEY = "testing"
ADMIN_SECRET_KEY = "testing"
DEFAULT_ACCOUNT = "123456789012"
PrincipalKind = Literal["admin", "role", "user"]


class UnknownKey(Exception):
    """No identity has this access key (or its session token is not the key's)."""

    def __init__(self, reason: Literal["key", "token"]) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Principal:
    kind: PrincipalKind
    arn: str
    secret_key: str
    _access_key: Any = None  # moto's IAMUserAccessKey or AssumedRoleAccessKey

    @property
    def role_name(self) -> str | None:
        if self.kind != "role":
            return None
        return self.arn.split("/")[1]

    def policies(self) -> list[Any]:
        """The identity-based policies in force now (read anew: tests change them between calls)."""
        if self._access_key is None:
            return []
        policies: list[Any] = self._access_key.collect_policies()
        return policies


ADMIN = Principal("admin", f"arn:aws:iam::{DEFAULT_ACCOUNT}:root", ADMIN_SECRET_KEY)


def find_principal(access_key: str, token: str | None, account_id: str = DEFAULT_ACCOUNT) -> Principal:
    """The identity an access key belongs to; raises :class:`UnknownKey` as AWS would refuse it."""
    if access_key == ADMIN_ACCESS_KEY:
        return ADMIN
    # moto picks a role session when a token comes with the key, an IAM user otherwise.
    headers = {"X-Amz-Security-Token": token} if token else {}
    try:
        found = create_access_key(
            account_id=account_id, partition="aws", access_key_id=access_key, headers=headers
        )
    except CreateAccessKeyFailure as exc:
        raise UnknownKey("token" if exc.reason == "InvalidToken" else "key") from None
    credentials = found.create_credentials()
    kind: PrincipalKind = "role" if ":assumed-role/" in found.arn else "user"
    return Principal(kind, found.arn, credentials.secret_key, found)


@dataclass(frozen=True)
class Denial:
    action: str
    resource: str
    explicit: bool


def authorize(
    principal: Principal,
    permissions: Sequence[tuple[str, str]],
    condition_keys: Mapping[str, Mapping[str, str]] | None = None,
) -> Denial | None:
    """The first (action, resource) the principal's policies do not allow, or None when all are allowed.

    AWS's rule for identity-based policies: an explicit Deny wins; otherwise some Allow must match.
    ``condition_keys`` gives, per action, the condition keys AWS sets for it (``iam:PassedToService``).
    """
    if principal.kind == "admin" or not permissions:
        return None
    statements = [_Statement(s) for policy in principal.policies() for s in _statements(policy)]
    for action, resource in permissions:
        if action == "sts:GetCallerIdentity":  # AWS answers it whatever the policies say
            continue
        keys = dict((condition_keys or {}).get(action, {}))
        results = [statement.decide(action, resource, keys) for statement in statements]
        if PermissionResult.DENIED in results:
            return Denial(action, resource, explicit=True)
        if PermissionResult.PERMITTED not in results:
            return Denial(action, resource, explicit=False)
    return None


def _statements(policy: Any) -> list[dict[str, Any]]:
    # moto's IAMPolicy reads any of its policy forms (managed Policy, inline document, attached dict).
    document = IAMPolicy(policy)._policy_json
    statements = document.get("Statement", [])
    return [statements] if isinstance(statements, dict) else list(statements)


def wildcard_match(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """IAM's wildcards: ``*`` any run of characters, ``?`` any one; everything else literal."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL) is not None


class _Statement(IAMPolicyStatement):
    """moto's statement evaluator, with IAM's matching: actions ignore case, ``?`` is one character,
    and a statement whose condition does not hold says nothing (moto would call it a Deny). The local
    AWS fills in no condition keys, so a conditioned statement holds only when its condition needs none.
    """

    def _check_element_matches(self, statement_element: str, value: str) -> bool:
        patterns = self._statement[statement_element]
        patterns = [patterns] if isinstance(patterns, str) else patterns
        ignore_case = statement_element in ("Action", "NotAction")
        return any(wildcard_match(str(p), value, ignore_case=ignore_case) for p in patterns)

    def decide(self, action: str, resource: str, keys: dict[str, str] | None = None) -> PermissionResult:
        if self._statement.get("Condition") and not self._check_conditions(keys or {}):
            return PermissionResult.NEUTRAL
        result: PermissionResult = self.is_action_permitted(action, resource)
        return result
