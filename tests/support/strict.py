"""The local AWS for tests that run handlers in the test process: the strict moto server (the same one
`jobgate dev` runs), with each function's execution role from template.yaml, assumed through STS.

Test code's own calls (set-up, checks) sign as the admin identity. A handler call signs as its
function's role: `as_function("worker")` makes every boto3 client of ``jobgate.adapters.aws`` (which the
handlers' services hold for as long as they live) sign with that role's credentials until it ends,
and sets them in the environment for clients made meanwhile (``apigatewaymanagementapi``).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import httpx
from botocore.credentials import Credentials, ReadOnlyCredentials
from jobgate.adapters import aws as aws_clients
from jobgate_local.functions import ACCOUNT_ID, REGION
from jobgate_local.identities import RoleSpec, assume, create_roles, role_specs
from jobgate_local.moto_server import MotoServer
from jobgate_local.procs import reserve_port
from jobgate_local.strict import ADMIN_ACCESS_KEY, ADMIN_SECRET_KEY
from jobgate_local.template import Resolver, Template, function_configs, load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
ADMIN = {
    "AWS_ACCESS_KEY_ID": ADMIN_ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": ADMIN_SECRET_KEY,
    "AWS_SESSION_TOKEN": "testing",
}
_CREDENTIAL_VARIABLES = tuple(ADMIN)
API_KEY = "integration-test-key-0123456789"  # the bootstrap key (tests.integration.conftest.API_KEY)


class _Current:
    """Whose credentials the shared clients sign with right now (process-wide, so that the threads a
    handler starts sign as it does)."""

    lock = threading.Lock()
    credentials: dict[str, str] = dict(ADMIN)


class SwitchingCredentials(Credentials):
    """Credentials botocore reads at every signature: whoever `as_function` says is calling."""

    def __init__(self) -> None:
        super().__init__(ADMIN_ACCESS_KEY, ADMIN_SECRET_KEY)

    def get_frozen_credentials(self) -> ReadOnlyCredentials:
        current = _Current.credentials
        return ReadOnlyCredentials(
            current["AWS_ACCESS_KEY_ID"], current["AWS_SECRET_ACCESS_KEY"], current["AWS_SESSION_TOKEN"]
        )

    @property  # type: ignore[override]
    def access_key(self) -> str:
        return _Current.credentials["AWS_ACCESS_KEY_ID"]

    @access_key.setter
    def access_key(self, value: str) -> None:
        pass

    @property  # type: ignore[override]
    def secret_key(self) -> str:
        return _Current.credentials["AWS_SECRET_ACCESS_KEY"]

    @secret_key.setter
    def secret_key(self, value: str) -> None:
        pass

    @property  # type: ignore[override]
    def token(self) -> str:
        return _Current.credentials["AWS_SESSION_TOKEN"]

    @token.setter
    def token(self, value: str | None) -> None:
        pass


@functools.cache
def switching_session() -> boto3.session.Session:
    """What ``jobgate.adapters.aws`` builds its clients from in tests: signs as the current caller."""
    core = botocore.session.Session()
    core._credentials = SwitchingCredentials()
    return boto3.session.Session(botocore_session=core)


@dataclass
class StrictAws:
    """The strict moto server and the functions' identities on it."""

    endpoint_url: str
    template: Template
    api_key_secret: str = ""  # the ARN of the secret holding API_KEY
    roles: dict[str, RoleSpec] = field(default_factory=dict)  # function folder name -> its role
    credentials: dict[str, dict[str, str]] = field(default_factory=dict)  # folder name -> credentials

    def admin(self, path: str, **document: Any) -> dict[str, Any]:
        answer = httpx.post(f"{self.endpoint_url}/_jobgate/{path}", json=document, timeout=30)
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def admin_get(self, path: str) -> dict[str, Any]:
        answer = httpx.get(f"{self.endpoint_url}/_jobgate/{path}", timeout=30)
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def reset(self) -> None:
        """Empty DynamoDB, SQS and S3 (the roles and their sessions stay) and turn faults off."""
        self.admin("reset", services=["dynamodb", "sqs", "s3"])

    def faults(self, **settings: Any) -> dict[str, Any]:
        return self.admin("faults", **settings)

    def fault_state(self) -> dict[str, Any]:
        answer = httpx.get(f"{self.endpoint_url}/_jobgate/faults", timeout=30)
        result: dict[str, Any] = answer.json()
        return result


def _folder_of(template: Template, resolver: Resolver) -> dict[str, str]:
    """Function logical id -> its folder under functions/ (what load_handler names it by)."""
    return {lid: config.code_dir.name for lid, config in function_configs(template, resolver).items()}


def resolver_for(
    template: Template, endpoint: str, resources: dict[str, str], refs: dict[str, str] | None = None
) -> Resolver:
    """Intrinsics of the template resolved as the tests name its resources (JobsTable -> jobs-test);
    `refs` adds the Refs of resources made outside `resources` (a secret's ARN)."""
    refs = {**resources, "WebSocketApi": "localws", **(refs or {})}
    attributes = {}
    for lid, name in resources.items():
        kind = template.resources.get(lid, {}).get("Type")
        if kind == "AWS::SQS::Queue":
            refs[lid] = f"{endpoint}/{ACCOUNT_ID}/{name}"  # a queue's Ref is its URL
            attributes[(lid, "QueueName")] = name
            attributes[(lid, "Arn")] = f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}"
        elif kind == "AWS::S3::Bucket":
            attributes[(lid, "Arn")] = f"arn:aws:s3:::{name}"
        elif kind == "AWS::DynamoDB::Table":
            attributes[(lid, "Arn")] = f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}"
    declared = {lid: res["Type"] for lid, res in template.resources.items()}
    parameters = {**template.pseudo_parameters(), **template.parameters}
    return Resolver(parameters, refs, attributes, declared, template.conditions)


def start_strict_aws(resources: dict[str, str]) -> Iterator[StrictAws]:
    """The server, with every function's role made from the template for the given resource names.

    ``resources`` maps the template's logical ids to the names the tests give them (JobsTable -> jobs-test).
    """
    server = MotoServer(reserve_port("127.0.0.1", 0, "moto"))
    try:
        server.wait_ready(60)
        endpoint = server.endpoint_url
        template = load_template(TEMPLATE, {"ApiKey": API_KEY})
        # The bootstrap key's secret, as the stack makes it (its ARN, with the suffix AWS adds, is
        # what the API's and WebSocket's roles are granted).
        secrets = boto3.client(
            "secretsmanager",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id=ADMIN["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=ADMIN["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=ADMIN["AWS_SESSION_TOKEN"],
        )
        secret_arn = secrets.create_secret(Name="jobgate-api-key-test", SecretString=API_KEY)["ARN"]
        resolver = resolver_for(template, endpoint, resources, refs={"ApiKeySecret": secret_arn})
        specs = role_specs(template, resolver)
        create_roles(endpoint, specs)
        folders = _folder_of(template, resolver)
        strict = StrictAws(endpoint, template, api_key_secret=secret_arn)
        for function, spec in specs.items():
            folder = folders[function]
            strict.roles[folder] = spec
            strict.credentials[folder] = assume(endpoint, spec.arn, f"{template.stack_name}-{function}")
        yield strict
    finally:
        server.stop()


@contextmanager
def calling_as(credentials: dict[str, str]) -> Iterator[None]:
    """Sign every call made meanwhile with ``credentials`` (shared clients and new ones alike)."""
    with _Current.lock:
        previous = _Current.credentials
        _Current.credentials = dict(credentials)
        saved = {name: os.environ.get(name) for name in _CREDENTIAL_VARIABLES}
        os.environ.update(credentials)
    try:
        yield
    finally:
        with _Current.lock:
            _Current.credentials = previous
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


class _Registry:
    strict: StrictAws | None = None


def use(strict: StrictAws | None) -> None:
    """Make handlers loaded from now on run as their roles on ``strict`` (None: as the test runs)."""
    _Registry.strict = strict
    aws_clients.reset_clients()


@contextmanager
def as_function(folder: str) -> Iterator[None]:
    """Run as the function of ``functions/<folder>``: its role's credentials, when a strict AWS is in use."""
    strict = _Registry.strict
    if strict is None or folder not in strict.credentials:
        yield
        return
    with calling_as(strict.credentials[folder]):
        yield
