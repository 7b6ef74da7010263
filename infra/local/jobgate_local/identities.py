"""Each function's identity, as Lambda gives it: its execution role from the template, assumed through STS.

The SAM translation turns every function's ``Policies`` into an ``AWS::IAM::Role`` with inline policies
(SAM's policy templates expanded) and managed policy ARNs. The local stack creates those roles in moto's
IAM as they are, assumes each through moto's STS (session name: the function's name, as Lambda names
it), and hands the temporary credentials to the function's sandboxes as ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY`` and ``AWS_SESSION_TOKEN``. The strict layer then checks every call a function
makes against its role's policies. The stack's own plumbing keeps the admin identity.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .functions import ACCOUNT_ID
from .provision import aws_client
from .template import Resolver, Template, function_name

logger = logging.getLogger(__name__)

# Lambda refreshes a sandbox's credentials before they expire; locally they are made once, for as long
# as STS allows, and the strict layer does not expire role sessions.
SESSION_SECONDS = 12 * 3600
# AWS reads a policy without a Version as the 2008 language; moto refuses those, and SAM's policy
# templates carry none. The 2012 language is a superset, so nothing a policy says changes.
POLICY_VERSION = "2012-10-17"


@dataclass(frozen=True)
class RoleSpec:
    """A function's execution role as the template defines it, with every intrinsic resolved."""

    function: str
    role: str
    name: str
    assume_role_policy: Mapping[str, Any]
    inline_policies: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    managed_policy_arns: tuple[str, ...] = ()

    @property
    def arn(self) -> str:
        return f"arn:aws:iam::{ACCOUNT_ID}:role/{self.name}"


def role_specs(template: Template, resolver: Resolver) -> dict[str, RoleSpec]:
    """Function logical id -> its role, for every function whose role the template declares."""
    specs: dict[str, RoleSpec] = {}
    resources = template.resources
    for function in template.logical_ids("AWS::Lambda::Function"):
        if not template.active(function):
            continue
        role_ref = resources[function]["Properties"].get("Role")
        role = _role_logical_id(role_ref)
        if role is None or resources.get(role, {}).get("Type") != "AWS::IAM::Role":
            logger.warning(
                "%s: its role is not declared in the template; it runs as the admin identity", function
            )
            continue
        properties = resolver.resolve(resources[role].get("Properties", {}))
        name = str(properties.get("RoleName") or f"{template.stack_name}-{role}")[:64]
        inline = {
            str(policy["PolicyName"]): _versioned(policy["PolicyDocument"])
            for policy in properties.get("Policies", [])
        }
        specs[function] = RoleSpec(
            function=function,
            role=role,
            name=name,
            assume_role_policy=properties.get("AssumeRolePolicyDocument", {}),
            inline_policies=inline,
            managed_policy_arns=tuple(str(arn) for arn in properties.get("ManagedPolicyArns", [])),
        )
    return specs


def _role_logical_id(node: Any) -> str | None:
    if isinstance(node, dict) and "Fn::GetAtt" in node:
        target = node["Fn::GetAtt"]
        return str(target[0]) if isinstance(target, list) else str(target).partition(".")[0]
    if isinstance(node, dict) and "Ref" in node:
        return str(node["Ref"])
    return None


def _versioned(document: Mapping[str, Any]) -> dict[str, Any]:
    return {"Version": POLICY_VERSION, **document} if "Version" not in document else dict(document)


def create_roles(endpoint_url: str, specs: Mapping[str, RoleSpec]) -> None:
    """Create the roles in moto's IAM, with their inline and managed policies (as the admin identity)."""
    iam = aws_client("iam", endpoint_url)
    for spec in specs.values():
        iam.create_role(
            RoleName=spec.name,
            AssumeRolePolicyDocument=json.dumps(spec.assume_role_policy),
            MaxSessionDuration=SESSION_SECONDS,
        )
        for name, document in spec.inline_policies.items():
            iam.put_role_policy(RoleName=spec.name, PolicyName=name, PolicyDocument=json.dumps(document))
        for arn in spec.managed_policy_arns:
            iam.attach_role_policy(RoleName=spec.name, PolicyArn=arn)


def assume(endpoint_url: str, role_arn: str, session_name: str) -> dict[str, str]:
    """A role session's credentials, as the variables Lambda sets for the function."""
    credentials = aws_client("sts", endpoint_url).assume_role(
        RoleArn=role_arn, RoleSessionName=session_name[:64], DurationSeconds=SESSION_SECONDS
    )["Credentials"]
    return {
        "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
        "AWS_SESSION_TOKEN": credentials["SessionToken"],
    }


@dataclass(frozen=True)
class FunctionIdentity:
    role_name: str
    environment: Mapping[str, str]  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN


def create_identities(
    template: Template, resolver: Resolver, endpoint_url: str
) -> dict[str, FunctionIdentity]:
    """Each function's role, created and assumed (function logical id -> its identity)."""
    specs = role_specs(template, resolver)
    create_roles(endpoint_url, specs)
    identities = {
        function: FunctionIdentity(
            spec.name, assume(endpoint_url, spec.arn, function_name(template, function))
        )
        for function, spec in specs.items()
    }
    logger.info("identities: %s", ", ".join(f"{f} as role {s.name}" for f, s in sorted(specs.items())))
    return identities
