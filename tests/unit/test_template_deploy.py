"""What AWS checks when the template is deployed, checked here first, on its SAM translation.

CloudFormation deploys what the SAM transform makes of template.yaml: event source mappings,
roles with the policy templates expanded. These tests read that translation (parameters at their
defaults) and hold it to what Lambda and IAM will enforce.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from jobgate_local.template import Resolver, Template, load_template

from tests.support import iam

ROOT = Path(__file__).resolve().parents[2]
# Parameters without a default; their values do not matter to these checks.
REQUIRED_PARAMETERS = {"ApiKey": "k" * 16}
# AWS's advice for SQS event sources: at least six times the function's timeout, so a batch that
# is retried after a throttle or a timeout is not delivered again while it is still being handled.
VISIBILITY_PER_TIMEOUT = 6


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template(ROOT / "template.yaml", REQUIRED_PARAMETERS)


def resolver_for(template: Template) -> Resolver:
    resources = template.resources
    refs, attributes = iam.symbolic_resources(resources, template.stack_name)
    declared = {lid: res["Type"] for lid, res in resources.items()}
    parameters = {**template.pseudo_parameters(), **template.parameters}
    return Resolver(parameters, refs, attributes, declared, template.conditions)


# -- SQS event sources --------------------------------------------------------------------------


def _queue_of(mapping: dict[str, Any], resources: dict[str, Any]) -> str | None:
    source = mapping["Properties"]["EventSourceArn"]
    if isinstance(source, dict) and "Fn::GetAtt" in source:
        target = source["Fn::GetAtt"]
        logical_id = target[0] if isinstance(target, list) else str(target).split(".")[0]
        if resources.get(logical_id, {}).get("Type") == "AWS::SQS::Queue":
            return str(logical_id)
    return None


def visibility_problems(template: Template) -> list[str]:
    resources = template.resources
    resolver = resolver_for(template)
    problems: list[str] = []
    for lid in template.logical_ids("AWS::Lambda::EventSourceMapping"):
        queue = _queue_of(resources[lid], resources)
        if queue is None:
            continue
        function = resources[lid]["Properties"]["FunctionName"]["Ref"]
        # Lambda's default timeout is 3 s, SQS's default visibility timeout 30 s.
        timeout = int(resolver.resolve_string(resources[function]["Properties"].get("Timeout", 3)))
        visibility = int(resolver.resolve_string(resources[queue]["Properties"].get("VisibilityTimeout", 30)))
        if visibility < VISIBILITY_PER_TIMEOUT * timeout:
            problems.append(
                f"{lid}: {queue} hides a message for {visibility} s, less than "
                f"{VISIBILITY_PER_TIMEOUT} x {function}'s timeout of {timeout} s"
            )
    return problems


def test_every_sqs_event_source_has_six_function_timeouts_of_visibility(template: Template) -> None:
    sources = [
        lid
        for lid in template.logical_ids("AWS::Lambda::EventSourceMapping")
        if _queue_of(template.resources[lid], template.resources)
    ]
    assert len(sources) >= 3  # the jobs, the upload events and the dead letters
    assert visibility_problems(template) == []


def test_a_short_visibility_timeout_is_caught(template: Template) -> None:
    broken = copy.deepcopy(template)
    broken.cfn["Resources"]["UploadEventsQueue"]["Properties"]["VisibilityTimeout"] = 60
    assert visibility_problems(broken)[-1:] == [
        "AssetsFunctionUploads: UploadEventsQueue hides a message for 60 s, less than 6 x "
        "AssetsFunction's timeout of 60 s"
    ]


# -- roles against the code ---------------------------------------------------------------------


def function_dirs(template: Template) -> dict[str, str]:
    """Each function's logical id -> the folder under functions/ its handler lives in."""
    dirs: dict[str, str] = {}
    for lid, resource in template.sam["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        properties = resource["Properties"]
        if properties.get("PackageType") == "Image":
            folder = Path(resource["Metadata"]["Dockerfile"]).parent
        else:
            folder = Path(properties["CodeUri"])
        assert folder.parent == Path("functions") and (ROOT / folder / "app.py").is_file(), lid
        dirs[lid] = folder.name
    return dirs


def function_needs(template: Template, function: str) -> set[iam.Need]:
    resources = template.resources
    resolver = resolver_for(template)
    variables = resources[function]["Properties"].get("Environment", {}).get("Variables", {})
    environment = {name: resolver.resolve_string(value) for name, value in variables.items()}
    table = template.resources["JobsTable"]["Properties"]
    indexes = [index["IndexName"] for index in table.get("GlobalSecondaryIndexes", [])]
    reach = iam.reach_of(function_dirs(template)[function])
    return iam.needs(reach.calls, environment, indexes)


def missing_grants(template: Template, function: str) -> list[str]:
    statements = iam.role_statements(template.resources, function, resolver_for(template))
    return sorted(
        f"{function}: {need.action} on {need.resource} ({need.because})"
        for need in function_needs(template, function)
        if not iam.allows(statements, need)
    )


def test_every_role_grants_every_action_its_code_calls(template: Template) -> None:
    """Each function's role allows every (action, resource) its code can call.

    The calls come from the code, not from a list (tests/support/iam.py says how): mypy types the
    project; a call on a boto3-stubs client type is an AWS call; a call graph walked from the
    function's handler module (for the API, also every route and dependency of jobgate.api) through
    the statically typed receivers of calls and method references finds the adapter calls the
    function can reach, and only those. Operations map to IAM actions through botocore's service
    model and AWS's documented exceptions; resources are the table, queue, bucket and WebSocket API
    the function's environment names. The role's statements come from the translated template (SAM's
    policy templates expanded), matched with IAM's wildcards; a statement with a condition does not
    count.
    """
    functions = function_dirs(template)
    assert set(functions) == {
        "ApiFunction",
        "WorkerFunction",
        "AssetsFunction",
        "SweeperFunction",
        "DeadLetterFunction",
        "WsFunction",
        "ContainerDispatchFunction",
    }
    missing = [line for function in functions for line in missing_grants(template, function)]
    assert missing == [], "\n".join(missing)


def _statements(template: Template) -> list[tuple[str, int, int]]:
    """(function, policy index, statement index) of every inline statement of every function role."""
    found: list[tuple[str, int, int]] = []
    for function in function_dirs(template):
        role = template.resources[function]["Properties"]["Role"]["Fn::GetAtt"][0]
        for p, policy in enumerate(template.resources[role]["Properties"].get("Policies", [])):
            if "PolicyDocument" not in policy:
                continue  # under a condition: test_secret_grants_follow_the_secrets_mapped checks it
            statements = policy["PolicyDocument"]["Statement"]
            if "iam:PassRole" in str(statements):
                continue  # what RunTask passes: test_the_dispatcher_passes_exactly_the_task_roles
            for s in range(len(statements) if isinstance(statements, list) else 1):
                found.append((function, p, s))
    return found


def test_removing_any_statement_of_a_role_is_caught(template: Template) -> None:
    """Every statement is needed by some call of its function's code: least privilege, statement-wise."""
    statements = _statements(template)
    assert len(statements) >= 15
    unneeded: list[str] = []
    for function, p, s in statements:
        broken = copy.deepcopy(template)
        role = broken.resources[function]["Properties"]["Role"]["Fn::GetAtt"][0]
        policy = broken.resources[role]["Properties"]["Policies"][p]
        document = policy["PolicyDocument"]
        removed = document["Statement"].pop(s) if isinstance(document["Statement"], list) else None
        if removed is None:
            document["Statement"] = []
        if not missing_grants(broken, function):
            unneeded.append(f"{function} {policy['PolicyName']}: {removed}")
    assert unneeded == [], "statements no call needs:\n" + "\n".join(unneeded)


def test_the_worker_is_seen_sending_to_the_queue(template: Template) -> None:
    """The analysis finds the worker's sends (a retry re-queued, a pipeline's next step) in the code."""
    reach = iam.reach_of("worker")
    assert "jobgate.services.worker.WorkerService._finish" in reach.functions
    assert "jobgate.services.pipelines.Advancer.advance" in reach.functions
    assert {(c.service, c.method) for c in reach.calls} >= {("sqs", "send_message"), ("s3", "upload_file")}
    needs = function_needs(template, "WorkerFunction")
    assert {n.action for n in needs} >= {"sqs:SendMessage", "s3:PutObject", "s3:AbortMultipartUpload"}


def test_what_a_handler_does_not_call_is_not_needed() -> None:
    """The dead-letter handler builds a whole worker service but calls only dead_letter (which
    announces the end and moves a pipeline on): no S3."""
    services = {call.service for call in iam.reach_of("deadletter").calls}
    assert services == {"dynamodb", "sqs", "apigatewaymanagementapi"}
    assert {call.service for call in iam.reach_of("assets").calls} == {"dynamodb", "s3"}


def test_every_client_call_in_the_adapters_is_seen_typed() -> None:
    """A boto3 call the typed walk cannot see (a client typed Any) would escape the IAM check."""
    program = iam.Program.load()
    adapters = [
        node
        for name, tree in program.modules.items()
        if name.startswith("jobgate.adapters")
        for node in iam.definitions(tree)
    ]
    seen = {(c.where, c.method) for c in iam.walk(adapters).calls}
    found = {(f"{module}:{line}", method) for module, line, method in iam.client_calls_in_adapters()}
    assert len(found) > 30
    assert found - seen == set()


@pytest.mark.parametrize(
    ("call", "actions"),
    [
        (iam.AwsCall("s3", "head_object", "x"), {"s3:GetObject", "s3:ListBucket"}),
        (iam.AwsCall("s3", "generate_presigned_post", "x"), {"s3:PutObject"}),
        (iam.AwsCall("s3", "generate_presigned_url", "x", ("upload_part",)), {"s3:PutObject"}),
        (
            iam.AwsCall("s3", "generate_presigned_url", "x", ("get_object",)),
            {"s3:GetObject", "s3:ListBucket"},
        ),
        (iam.AwsCall("s3", "complete_multipart_upload", "x"), {"s3:PutObject"}),
        (iam.AwsCall("s3", "head_bucket", "x"), {"s3:ListBucket"}),
        (iam.AwsCall("dynamodb", "transact_write_items", "x", ("Put",)), {"dynamodb:PutItem"}),
        (iam.AwsCall("dynamodb", "batch_write_item", "x"), {"dynamodb:BatchWriteItem"}),
        (iam.AwsCall("sqs", "send_message", "x"), {"sqs:SendMessage"}),
        (
            iam.AwsCall("apigatewaymanagementapi", "post_to_connection", "x"),
            {"execute-api:ManageConnections"},
        ),
    ],
)
def test_operations_map_to_iam_actions(call: iam.AwsCall, actions: set[str]) -> None:
    assert iam.actions_of(call) == actions


def test_policy_matching_follows_iam_wildcards() -> None:
    statement = {"Effect": "Allow", "Action": ["sqs:SendMessage*"], "Resource": "arn:aws:sqs:*:1:q"}
    assert iam.allows([statement], iam.Need("sqs:SendMessage", "arn:aws:sqs:us-east-1:1:q"))
    assert not iam.allows([statement], iam.Need("sqs:SendMessage", "arn:aws:sqs:us-east-1:1:q2"))
    assert not iam.allows([statement], iam.Need("sqs:ReceiveMessage", "arn:aws:sqs:us-east-1:1:q"))
    objects = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}
    assert iam.allows([objects], iam.Need("s3:GetObject", "arn:aws:s3:::b/results/x"))
    assert not iam.allows([objects], iam.Need("s3:GetObject", "arn:aws:s3:::b2/results/x"))
    conditioned = {**objects, "Condition": {"Bool": {"aws:SecureTransport": "true"}}}
    assert not iam.allows([conditioned], iam.Need("s3:GetObject", "arn:aws:s3:::b/x"))


# -- secrets for commands -------------------------------------------------------------------------

SECRET_ARN = f"arn:aws:secretsmanager:{iam.REGION}:{iam.ACCOUNT}:secret:jobgate/data-token-AbCdEf"
PARAMETER_ARN = f"arn:aws:ssm:{iam.REGION}:{iam.ACCOUNT}:parameter/jobgate/shared-key"


def test_secret_grants_follow_the_secrets_mapped() -> None:
    """With secrets mapped, the worker may read exactly those (and nothing else does); without, no
    role mentions Secrets Manager or SSM at all."""
    mapped = load_template(
        ROOT / "template.yaml",
        {
            **REQUIRED_PARAMETERS,
            "CommandSecrets": f"DATA_TOKEN={SECRET_ARN},SHARED_KEY={PARAMETER_ARN}",
            "CommandSecretArns": f"{SECRET_ARN},{PARAMETER_ARN}",
        },
    )
    needs = {(n.action, n.resource) for n in function_needs(mapped, "WorkerFunction")}
    assert {("secretsmanager:GetSecretValue", SECRET_ARN), ("ssm:GetParameter", PARAMETER_ARN)} <= needs
    assert missing_grants(mapped, "WorkerFunction") == []
    api = iam.role_statements(mapped.resources, "ApiFunction", resolver_for(mapped))
    assert _secrets_granted(api) <= {_KEY_SECRET} and "ssm:" not in str(api)

    # The grant is needed: without it, the worker could not read the secrets mapped.
    broken = copy.deepcopy(mapped)
    role = broken.resources["WorkerFunction"]["Properties"]["Role"]["Fn::GetAtt"][0]
    policies = broken.resources[role]["Properties"]["Policies"]
    policies[:] = [p for p in policies if "Fn::If" not in p]
    assert [line.split(" (")[0] for line in missing_grants(broken, "WorkerFunction")] == [
        f"WorkerFunction: secretsmanager:GetSecretValue on {SECRET_ARN}",
        f"WorkerFunction: ssm:GetParameter on {PARAMETER_ARN}",
    ]


# The bootstrap API key's secret (ApiKeySecret, as resolver_for names it): the API and WebSocket
# functions read it, and nothing else reads any secret unless the operator maps some for commands.
_KEY_SECRET = (
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:jobgate-local-ApiKeySecret-PHYSICAL-AbCdEf"
)


def _secrets_granted(statements: list[dict[str, Any]]) -> set[str]:
    granted: set[str] = set()
    for statement in statements:
        actions = statement.get("Action", [])
        if any(
            str(a).startswith(("secretsmanager:", "ssm:"))
            for a in ([actions] if isinstance(actions, str) else actions)
        ):
            resources = statement.get("Resource", [])
            granted |= {str(r) for r in ([resources] if isinstance(resources, str) else resources)}
    return granted


def test_no_role_reads_secrets_when_none_are_mapped(template: Template) -> None:
    for function in function_dirs(template):
        statements = iam.role_statements(template.resources, function, resolver_for(template))
        key_readers = {"ApiFunction", "WsFunction"}
        assert _secrets_granted(statements) == ({_KEY_SECRET} if function in key_readers else set()), function


# -- the container runner -------------------------------------------------------------------------

IMAGE = f"{iam.ACCOUNT}.dkr.ecr.{iam.REGION}.amazonaws.com/jobgate-worker:python3.12-v1"


@pytest.fixture(scope="module")
def with_containers() -> Template:
    """The template as deployed with the container runner and secrets."""
    return load_template(
        ROOT / "template.yaml",
        {
            **REQUIRED_PARAMETERS,
            "ContainerImageUri": IMAGE,
            "ContainerSubnets": "subnet-0a,subnet-0b",
            "ContainerSecurityGroup": "sg-0c",
            "CommandSecrets": f"DATA_TOKEN={SECRET_ARN}",
            "CommandSecretArns": SECRET_ARN,
        },
    )


def test_with_the_container_runner_every_role_grants_what_its_code_calls(with_containers: Template) -> None:
    missing = [line for f in function_dirs(with_containers) for line in missing_grants(with_containers, f)]
    assert missing == [], "\n".join(missing)
    queue = iam.symbolic_resources(with_containers.resources, with_containers.stack_name)[1][
        ("ContainerJobsQueue", "Arn")
    ]
    for function in ("ApiFunction", "WorkerFunction", "SweeperFunction", "DeadLetterFunction"):
        assert ("sqs:SendMessage", queue) in {
            (n.action, n.resource) for n in function_needs(with_containers, function)
        }, function


def test_a_jobs_task_may_do_what_the_worker_lambda_does(with_containers: Template) -> None:
    """The task runs the same worker code: its role must allow every call the worker's code makes."""
    resources = with_containers.resources
    statements: list[dict[str, Any]] = []
    for policy in resolver_for(with_containers).resolve(
        resources["ContainerTaskRole"]["Properties"]["Policies"]
    ):
        statements += policy["PolicyDocument"]["Statement"]
    needs = function_needs(with_containers, "WorkerFunction")
    assert {n.action for n in needs} >= {
        "dynamodb:UpdateItem",
        "s3:PutObject",
        "secretsmanager:GetSecretValue",
    }
    assert [f"{n.action} on {n.resource}" for n in needs if not iam.allows(statements, n)] == []
    definition = resources["ContainerTaskDefinition"]["Properties"]
    assert definition["ContainerDefinitions"][0]["EntryPoint"] == ["python", "-m", "jobgate.task"]


KEY_ARN = f"arn:aws:kms:{iam.REGION}:{iam.ACCOUNT}:key/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"


def _decrypts(statements: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    return [
        (s["Resource"], s.get("Condition")) for s in statements if "kms:Decrypt" in iam._listed(s["Action"])
    ]


def test_secrets_under_a_key_of_the_operators_own_may_be_decrypted_by_their_readers_only() -> None:
    """Secrets Manager and SSM decrypt with a customer managed key as the caller: its role needs
    kms:Decrypt on the key (not with the AWS managed keys). The worker and the task get it, through
    those two services only; no role gets it when no key is named."""
    keyed = load_template(
        ROOT / "template.yaml",
        {
            **REQUIRED_PARAMETERS,
            "ContainerImageUri": IMAGE,
            "ContainerSubnets": "subnet-0a",
            "ContainerSecurityGroup": "sg-0c",
            "CommandSecrets": f"DATA_TOKEN={SECRET_ARN}",
            "CommandSecretArns": SECRET_ARN,
            "CommandSecretKeyArns": KEY_ARN,
        },
    )
    resolver = resolver_for(keyed)
    via = {
        "StringEquals": {
            "kms:ViaService": ["secretsmanager.us-east-1.amazonaws.com", "ssm.us-east-1.amazonaws.com"]
        }
    }
    worker = iam.role_statements(keyed.resources, "WorkerFunction", resolver)
    task = [
        statement
        for policy in resolver.resolve(keyed.resources["ContainerTaskRole"]["Properties"]["Policies"])
        for statement in policy["PolicyDocument"]["Statement"]
    ]
    assert _decrypts(worker) == _decrypts(task) == [([KEY_ARN], via)]
    for function in function_dirs(keyed):
        if function != "WorkerFunction":
            assert _decrypts(iam.role_statements(keyed.resources, function, resolver)) == [], function
    plain = load_template(ROOT / "template.yaml", REQUIRED_PARAMETERS)
    for function in function_dirs(plain):
        assert _decrypts(iam.role_statements(plain.resources, function, resolver_for(plain))) == [], function


def test_the_dispatcher_passes_exactly_the_task_roles(with_containers: Template) -> None:
    resolver = resolver_for(with_containers)
    statements = iam.role_statements(with_containers.resources, "ContainerDispatchFunction", resolver)
    passing = [s for s in statements if "iam:PassRole" in iam._listed(s["Action"])]
    definition = resolver.resolve(with_containers.resources["ContainerTaskDefinition"]["Properties"])
    assert len(passing) == 1
    assert sorted(passing[0]["Resource"]) == sorted(
        [definition["ExecutionRoleArn"], definition["TaskRoleArn"]]
    )
    assert passing[0]["Condition"] == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}
