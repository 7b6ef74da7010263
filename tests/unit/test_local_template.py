"""What the local stack reads from template.yaml: functions, environment, event sources, routes."""

from __future__ import annotations

import logging
from pathlib import Path
from textwrap import dedent

import pytest
from jobgate_local.template import (
    Resolver,
    Template,
    TemplateError,
    function_configs,
    http_routes,
    load_template,
    sqs_event_sources,
)

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "unit-test-key-0123456789"


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template(ROOT / "template.yaml", {"ApiKey": API_KEY, "WorkerTimeoutSeconds": "120"})


def fake_resolver(template: Template) -> Resolver:
    """Physical names as moto would give them, without moto."""
    declared = {lid: res["Type"] for lid, res in template.resources.items()}
    refs = {lid: f"phys-{lid}" for lid in declared}
    attributes = {
        (lid, "Arn"): f"arn:aws:sqs:us-east-1:123456789012:phys-{lid}"
        for lid, kind in declared.items()
        if kind == "AWS::SQS::Queue"
    }
    parameters = {**template.pseudo_parameters(), **template.parameters}
    return Resolver(parameters, refs, attributes, declared, template.conditions)


def test_functions_come_from_the_template_with_their_code_folder_and_handler(template: Template) -> None:
    configs = function_configs(template, fake_resolver(template))
    api = configs["ApiFunction"]
    assert api.code_dir == ROOT / "functions" / "api"
    assert api.handler == "app.handler"
    assert api.timeout_s == 29
    assert api.memory_mb == 1024
    worker = configs["WorkerFunction"]
    # An Image function: the Dockerfile's CMD names the handler, its COPY to the task root the folder.
    assert worker.code_dir == ROOT / "functions" / "worker"
    assert worker.handler == "app.handler"
    assert worker.timeout_s == 120  # the WorkerTimeoutSeconds override
    assert configs["DeadLetterFunction"].code_dir == ROOT / "functions" / "deadletter"


def test_environment_merges_globals_and_the_functions_own_with_references_resolved(
    template: Template,
) -> None:
    configs = function_configs(template, fake_resolver(template))
    api_env = configs["ApiFunction"].environment
    assert api_env["JOBGATE_TABLE_NAME"] == "phys-JobsTable"
    assert api_env["JOBGATE_QUEUE_URL"] == "phys-JobsQueue"
    assert api_env["JOBGATE_BUCKET_NAME"] == "phys-DataBucket"
    assert api_env["JOBGATE_WORKER_TIMEOUT_S"] == "120"
    # The bootstrap key is never in an environment: the API names its secret, the worker not even that.
    assert api_env["JOBGATE_API_KEY_SECRET"] == "phys-ApiKeySecret"
    assert API_KEY not in api_env.values()
    assert "JOBGATE_API_KEY_SECRET" not in configs["WorkerFunction"].environment
    assert configs["WorkerFunction"].environment["JOBGATE_TABLE_NAME"] == "phys-JobsTable"


def test_sqs_event_sources_carry_batch_size_and_partial_failure_reporting(template: Template) -> None:
    resolver = fake_resolver(template)
    queue_urls = {
        resolver.get_att(lid, "Arn"): f"url-{lid}" for lid in template.logical_ids("AWS::SQS::Queue")
    }
    sources = {s.function: s for s in sqs_event_sources(template, resolver, queue_urls)}
    worker = sources["WorkerFunction"]
    assert worker.queue_url == "url-JobsQueue"
    assert worker.queue_arn.endswith(":phys-JobsQueue")
    assert worker.batch_size == 1
    assert worker.report_batch_item_failures is True
    dead_letters = sources["DeadLetterFunction"]
    assert dead_letters.queue_url == "url-JobsDeadLetterQueue"
    assert dead_letters.batch_size == 10


def test_the_http_api_routes_every_path_to_the_api_function(template: Template) -> None:
    routes = http_routes(template)["HttpApi"]
    assert [(r.route_key, r.function, r.payload_format_version) for r in routes] == [
        ("ANY /{proxy+}", "ApiFunction", "2.0")
    ]


def test_unknown_parameter_is_refused() -> None:
    with pytest.raises(TemplateError, match="no parameter NoSuchThing"):
        load_template(ROOT / "template.yaml", {"ApiKey": API_KEY, "NoSuchThing": "1"})


def test_a_parameter_without_default_must_be_given() -> None:
    with pytest.raises(TemplateError, match="--param ApiKey="):
        load_template(ROOT / "template.yaml", {})


def test_out_of_range_values_are_allowed_locally_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="jobgate_local"):
        loaded = load_template(
            ROOT / "template.yaml", {"ApiKey": API_KEY, "QueueVisibilityTimeoutSeconds": "2"}
        )
    assert loaded.parameters["QueueVisibilityTimeoutSeconds"] == "2"
    assert "below MinValue" in caplog.text


def test_defaults_fill_only_declared_parameters_and_overrides_win() -> None:
    loaded = load_template(
        ROOT / "template.yaml", {"ApiKey": API_KEY}, defaults={"ApiKey": "ignored-default-key", "Nope": "x"}
    )
    assert loaded.parameters["ApiKey"] == API_KEY


IMAGE_TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Resources:
  Worker:
    Type: AWS::Serverless::Function
    Properties:
      PackageType: Image
      {image_config}
    Metadata:
      Dockerfile: docker/Dockerfile
      DockerContext: .
"""


@pytest.mark.parametrize(
    ("dockerfile", "image_config", "folder", "handler"),
    [
        ('FROM x\nCOPY src/worker/ ${{LAMBDA_TASK_ROOT}}/\nCMD ["main.run"]\n', "", "src/worker", "main.run"),
        (
            'FROM x\nCOPY src/worker/main.py \\\n    ${{LAMBDA_TASK_ROOT}}\nCMD ["main.run"]\n',
            "",
            "src/worker",
            "main.run",
        ),
        (
            "FROM x\nWORKDIR /var/task\nCOPY src/worker/main.py ./\nCMD main.run\n",
            "",
            "src/worker",
            "main.run",
        ),
        (
            'FROM x\nCOPY src/worker/ /var/task/\nCMD ["main.run"]\n',
            "ImageConfig: {{ Command: [other.go] }}",
            "src/worker",
            "other.go",
        ),
    ],
)
def test_image_functions_run_what_their_dockerfile_copies_into_the_task_root(
    tmp_path: Path, dockerfile: str, image_config: str, folder: str, handler: str
) -> None:
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "Dockerfile").write_text(dockerfile.format())
    (tmp_path / "src" / "worker").mkdir(parents=True)
    (tmp_path / "src" / "worker" / "main.py").write_text("def run(event, context): ...\n")
    (tmp_path / "src" / "worker" / "other.py").write_text("def go(event, context): ...\n")
    (tmp_path / "template.yaml").write_text(IMAGE_TEMPLATE.format(image_config=image_config.format()))
    loaded = load_template(tmp_path / "template.yaml", {})
    config = function_configs(loaded, Resolver({}, {}, {}, {}))["Worker"]
    assert config.code_dir == tmp_path / folder
    assert config.handler == handler


def resolver() -> Resolver:
    return Resolver(
        {"AWS::Region": "us-east-1", "Stage": "dev"},
        {"Queue": "https://queue", "Api": "abc123"},
        {("Queue", "Arn"): "arn:aws:sqs:us-east-1:1:q"},
        {"Queue": "AWS::SQS::Queue", "Api": "AWS::ApiGatewayV2::Api", "Role": "AWS::IAM::Role"},
    )


def test_intrinsic_functions_resolve_against_known_values() -> None:
    r = resolver()
    assert r.resolve({"Fn::Sub": "wss://${Api}.execute-api.${AWS::Region}.amazonaws.com/${Stage}"}) == (
        "wss://abc123.execute-api.us-east-1.amazonaws.com/dev"
    )
    assert r.resolve({"Fn::Sub": "${Queue.Arn}/x ${!Literal}"}) == "arn:aws:sqs:us-east-1:1:q/x ${Literal}"
    assert r.resolve({"Fn::Sub": ["${A}-${Stage}", {"A": {"Ref": "Queue"}}]}) == "https://queue-dev"
    assert r.resolve({"Fn::Join": [":", ["a", {"Ref": "Stage"}]]}) == "a:dev"
    assert r.resolve({"Fn::Select": [1, {"Fn::Split": [",", "x,y,z"]}]}) == "y"
    assert r.resolve({"A": {"Ref": "AWS::NoValue"}, "B": 1}) == {"B": 1}


def test_a_declared_resource_the_stack_does_not_play_gets_a_placeholder(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="jobgate_local"):
        assert resolver().resolve({"Fn::GetAtt": ["Role", "Arn"]}) == "role-local-arn"
    assert "Role.Arn" in caplog.text


def test_a_reference_to_nothing_declared_is_an_error() -> None:
    with pytest.raises(TemplateError, match="Missing"):
        resolver().resolve({"Ref": "Missing"})
    with pytest.raises(TemplateError, match="condition C is not declared"):
        resolver().resolve({"Fn::If": ["C", 1, 2]})


def test_conditions_are_evaluated_with_the_parameters() -> None:
    conditions = {
        "Set": {"Fn::Not": [{"Fn::Equals": [{"Ref": "P"}, ""]}]},
        "Both": {"Fn::And": [{"Condition": "Set"}, True]},
    }
    for value, expected in (("x", ["kept", 2]), ("", [2])):
        chosen = Resolver({"P": value}, {}, {}, {}, conditions).resolve(
            [{"Fn::If": ["Both", "kept", {"Ref": "AWS::NoValue"}]}, {"Fn::If": ["Set", 2, 2]}]
        )
        assert chosen == expected


def test_an_image_functions_environment_starts_from_its_dockerfile_env(tmp_path: Path) -> None:
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "Dockerfile").write_text(
        dedent(
            """\
            FROM public.ecr.aws/lambda/python:3.12
            ENV MPLBACKEND=Agg HOME=/tmp \\
                BUILT=${LAMBDA_TASK_ROOT}/x
            ENV LEGACY value with spaces
            COPY app.py ${LAMBDA_TASK_ROOT}/
            CMD ["app.handler"]
            """
        )
    )
    (tmp_path / "app.py").write_text("def handler(event, context): ...\n")
    config_line = "Environment: { Variables: { HOME: /from-template } }"
    (tmp_path / "template.yaml").write_text(IMAGE_TEMPLATE.format(image_config=config_line))
    loaded = load_template(tmp_path / "template.yaml", {})
    config = function_configs(loaded, Resolver({}, {}, {}, {}))["Worker"]
    assert config.code_dir == tmp_path
    assert config.environment == {
        "MPLBACKEND": "Agg",
        "HOME": "/from-template",
        "LEGACY": "value with spaces",
    }
