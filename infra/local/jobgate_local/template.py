"""template.yaml as CloudFormation sees it: parameters, the SAM transform, and what the local stack plays.

The template is the single source of truth: the functions, their environment, their SQS event sources
and the HTTP routes are all read from its SAM translation; nothing here lists the project's resources.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .functions import ACCOUNT_ID, REGION, FunctionConfig

logger = logging.getLogger(__name__)

STACK_NAME = "jobgate-local"
PARTITION = "aws"
URL_SUFFIX = "amazonaws.com"
# Where the translated template pretends code lives; the translator insists on S3 URIs.
_CODE_BUCKET = "jobgate-local-code"
_IMAGE_URI = f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/jobgate-local:latest"
_NO_VALUE = object()


class TemplateError(Exception):
    """The template cannot be run locally as written; the message says why."""


@dataclass(frozen=True)
class HttpRoute:
    """One route of an HTTP API and the function its Lambda proxy integration calls."""

    api: str
    route_key: str
    method: str
    path: str
    function: str
    payload_format_version: str = "2.0"


@dataclass(frozen=True)
class SqsEventSource:
    """One SQS event source mapping: which queue feeds which function, and how."""

    logical_id: str
    function: str
    queue_arn: str
    queue_url: str
    batch_size: int = 10
    batching_window_s: float = 0.0
    report_batch_item_failures: bool = False
    maximum_concurrency: int | None = None


@dataclass
class Template:
    """The decoded SAM template, its parameter values, and its CloudFormation translation."""

    path: Path
    stack_name: str
    sam: dict[str, Any]
    cfn: dict[str, Any]
    parameters: dict[str, str]
    code_dirs: dict[str, Path] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def resources(self) -> dict[str, Any]:
        resources: dict[str, Any] = self.cfn.get("Resources", {})
        return resources

    @property
    def conditions(self) -> dict[str, Any]:
        """The Conditions section, for a Resolver to evaluate Fn::If and Condition with."""
        return dict(self.cfn.get("Conditions", {}))

    def active(self, logical_id: str) -> bool:
        """Whether CloudFormation would create the resource: its Condition, if any, holds."""
        condition = self.resources[logical_id].get("Condition")
        if condition is None:
            return True
        declared = {lid: res["Type"] for lid, res in self.resources.items()}
        parameters = {**self.pseudo_parameters(), **self.parameters}
        return Resolver(parameters, {}, {}, declared, self.conditions).condition(condition)

    def logical_ids(self, *types: str) -> list[str]:
        return [lid for lid, res in self.resources.items() if res.get("Type") in types]

    def pseudo_parameters(self) -> dict[str, str]:
        return {
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Region": REGION,
            "AWS::Partition": PARTITION,
            "AWS::URLSuffix": URL_SUFFIX,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{self.stack_name}/local",
        }


# -- loading -------------------------------------------------------------------------------------


def load_template(
    path: Path,
    overrides: Mapping[str, str],
    *,
    stack_name: str = STACK_NAME,
    defaults: Mapping[str, str] | None = None,
) -> Template:
    """Decode the template (with its short-form tags), fill in its parameters and translate it.

    ``defaults`` fill parameters the template declares and ``overrides`` leave out (the dev API key);
    unlike overrides, they are ignored for parameters the template does not declare.
    """
    from cfnlint.decode import decode

    path = path.resolve()
    decoded, matches = decode(str(path))
    if decoded is None or matches:
        problems = "; ".join(str(match) for match in matches) or "empty template"
        raise TemplateError(f"{path}: {problems}")
    sam: dict[str, Any] = json.loads(json.dumps(decoded))
    declared = sam.get("Parameters", {})
    local_defaults = {k: v for k, v in (defaults or {}).items() if k in declared}
    parameters = resolve_parameters(declared, {**local_defaults, **overrides})
    template = Template(path=path, stack_name=stack_name, sam=sam, cfn={}, parameters=parameters)
    template.cfn = _translate(template)
    return template


def resolve_parameters(declared: Mapping[str, Any], overrides: Mapping[str, str]) -> dict[str, str]:
    """Defaults overlaid with overrides; an unknown or missing parameter is an error.

    Values outside the declared range are allowed with a warning: short timeouts are the point of a
    local stack, even where CloudFormation would refuse them.
    """
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise TemplateError(f"the template declares no parameter {', '.join(unknown)}")
    values: dict[str, str] = {}
    for name, spec in declared.items():
        if name in overrides:
            values[name] = str(overrides[name])
        elif "Default" in spec:
            default = spec["Default"]
            values[name] = ",".join(map(str, default)) if isinstance(default, list) else str(default)
        else:
            raise TemplateError(f"template parameter {name} has no default: pass --param {name}=VALUE")
        for problem in _parameter_problems(spec, values[name]):
            logger.warning(
                "parameter %s=%s %s; fine locally, CloudFormation would refuse it",
                name,
                values[name],
                problem,
            )
    return values


def _parameter_problems(spec: Mapping[str, Any], value: str) -> Iterator[str]:
    if "AllowedValues" in spec and value not in [str(v) for v in spec["AllowedValues"]]:
        yield f"is not one of {spec['AllowedValues']}"
    if spec.get("Type") == "Number":
        try:
            number = float(value)
        except ValueError:
            yield "is not a number"
            return
        if "MinValue" in spec and number < float(spec["MinValue"]):
            yield f"is below MinValue {spec['MinValue']}"
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            yield f"is above MaxValue {spec['MaxValue']}"
    if "MinLength" in spec and len(value) < int(spec["MinLength"]):
        yield f"is shorter than MinLength {spec['MinLength']}"


def _translate(template: Template) -> dict[str, Any]:
    """Run the SAM transform, with local code folders swapped for the S3 URIs it insists on."""
    import boto3
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    sam = copy.deepcopy(template.sam)
    global_code_uri = sam.get("Globals", {}).get("Function", {}).pop("CodeUri", None)
    for logical_id, resource in sam.get("Resources", {}).items():
        properties = resource.setdefault("Properties", {})
        if resource.get("Type") == "AWS::Serverless::Function":
            if properties.get("PackageType") == "Image":
                properties["ImageUri"] = _IMAGE_URI
                continue
            code_uri = properties.get("CodeUri", global_code_uri)
            if properties.get("InlineCode") is not None:
                raise TemplateError(f"{logical_id}: InlineCode is not supported by the local stack")
            if not isinstance(code_uri, str) or code_uri.startswith("s3://"):
                raise TemplateError(f"{logical_id}: CodeUri must be a local folder for the local stack")
            template.code_dirs[logical_id] = (template.root / code_uri).resolve()
            properties["CodeUri"] = f"s3://{_CODE_BUCKET}/{logical_id}"
        elif resource.get("Type") == "AWS::Serverless::LayerVersion":
            properties["ContentUri"] = f"s3://{_CODE_BUCKET}/{logical_id}"
    translator = Translator(None, Parser(), boto_session=boto3.Session(region_name=REGION))
    try:
        translated: dict[str, Any] = translator.translate(
            sam, parameter_values=dict(template.parameters), get_managed_policy_map=lambda: {}
        )
    except InvalidDocumentException as exc:
        causes = "; ".join(cause.message for cause in exc.causes)
        raise TemplateError(f"{template.path}: {causes}") from exc
    return translated


# -- intrinsic functions ---------------------------------------------------------------------------

_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class Resolver:
    """Evaluates Ref, Fn::GetAtt, Fn::Sub, Fn::Join, Fn::Select, Fn::Split and, given the template's
    conditions, Fn::If (with Fn::Equals, Fn::Not, Fn::And, Fn::Or) against known values.

    ``refs`` and ``attributes`` hold what each resource's Ref and GetAtt give (from moto's stack or
    from the parts the local stack plays itself). A resource the template declares but the local
    stack does not have gets a placeholder and a warning rather than stopping everything.
    """

    def __init__(
        self,
        parameters: Mapping[str, str],
        refs: Mapping[str, str],
        attributes: Mapping[tuple[str, str], str],
        declared: Mapping[str, str],
        conditions: Mapping[str, Any] | None = None,
    ) -> None:
        self._conditions = dict(conditions or {})
        self._parameters = parameters
        self._refs = refs
        self._attributes = attributes
        self._declared = declared
        self._warned: set[str] = set()

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [value for value in (self.resolve(item) for item in node) if value is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, argument),) = node.items()
            function = self._functions().get(key)
            if function is not None:
                return function(argument)
            if key.startswith("Fn::") or key == "Condition":
                raise TemplateError(f"{key} is not supported by the local stack")
        resolved = {key: self.resolve(value) for key, value in node.items()}
        return {key: value for key, value in resolved.items() if value is not _NO_VALUE}

    def resolve_string(self, node: Any) -> str:
        value = self.resolve(node)
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, (dict, list)):
            return json.dumps(value)
        return str(value)

    def _functions(self) -> dict[str, Callable[[Any], Any]]:
        return {
            "Ref": self.ref,
            "Fn::GetAtt": self._get_att,
            "Fn::Sub": self._sub,
            "Fn::Join": self._join,
            "Fn::Select": self._select,
            "Fn::Split": self._split,
            "Fn::If": self._if,
            "Fn::Equals": self._equals,
            "Fn::Not": lambda argument: not self._truth(argument[0]),
            "Fn::And": lambda argument: all(self._truth(item) for item in argument),
            "Fn::Or": lambda argument: any(self._truth(item) for item in argument),
            "Condition": self.condition,
        }

    def condition(self, name: Any) -> bool:
        """A condition of the template's Conditions section, evaluated with these parameters."""
        if name not in self._conditions:
            raise TemplateError(f"condition {name} is not declared (or not given to the local stack)")
        return self._truth(self._conditions[name])

    def _truth(self, node: Any) -> bool:
        value = self.resolve(node)
        if not isinstance(value, bool):
            raise TemplateError(f"a condition evaluated to {value!r}, not true or false")
        return value

    def _if(self, argument: Any) -> Any:
        name, when_true, when_false = argument
        return self.resolve(when_true if self.condition(name) else when_false)

    def _equals(self, argument: Any) -> bool:
        left, right = argument
        return self.resolve_string(left) == self.resolve_string(right)

    def ref(self, name: Any) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self._parameters:
            return self._parameters[name]
        if name in self._refs:
            return self._refs[name]
        return self._missing(str(name), None)

    def get_att(self, logical_id: str, attribute: str) -> str:
        value = self._attributes.get((logical_id, attribute))
        return value if value is not None else self._missing(logical_id, attribute)

    def _get_att(self, argument: Any) -> str:
        if isinstance(argument, str):
            logical_id, _, attribute = argument.partition(".")
        else:
            logical_id, attribute = argument[0], self.resolve_string(argument[1])
        return self.get_att(logical_id, attribute)

    def _missing(self, logical_id: str, attribute: str | None) -> str:
        if logical_id not in self._declared:
            raise TemplateError(f"reference to {logical_id}, which the template does not declare")
        what = f"{logical_id}.{attribute}" if attribute else logical_id
        if what not in self._warned:
            self._warned.add(what)
            logger.warning(
                "%s (%s) is not emulated by the local stack; using a placeholder",
                what,
                self._declared[logical_id],
            )
        return f"{logical_id.lower()}-local" + (f"-{attribute.lower()}" if attribute else "")

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else (argument[0], argument[1])
        local = {name: self.resolve_string(value) for name, value in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in local:
                return local[name]
            if name in self._parameters or name.startswith("AWS::") or "." not in name:
                return str(self.ref(name))
            logical_id, _, attribute = name.partition(".")
            return self.get_att(logical_id, attribute)

        return _SUB_VARIABLE.sub(replace, text)

    def _join(self, argument: Any) -> str:
        delimiter, values = argument
        return str(delimiter).join(self.resolve_string(value) for value in self.resolve(values))

    def _select(self, argument: Any) -> Any:
        index, values = argument
        return self.resolve(values)[int(self.resolve(index))]

    def _split(self, argument: Any) -> list[str]:
        delimiter, text = argument
        return self.resolve_string(text).split(delimiter)


def references(node: Any) -> Iterator[tuple[str, str | None]]:
    """Every (logical id, attribute or None for Ref) a fragment refers to, Fn::Sub strings included."""
    if isinstance(node, list):
        for item in node:
            yield from references(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                yield value, None
            elif key == "Fn::GetAtt":
                yield from _get_att_reference(value)
            elif key == "Fn::Sub":
                yield from _sub_references(value)
            else:
                yield from references(value)


def _get_att_reference(value: Any) -> Iterator[tuple[str, str | None]]:
    if isinstance(value, str):
        logical_id, _, attribute = value.partition(".")
        yield logical_id, attribute
    elif isinstance(value[1], str):
        yield value[0], value[1]


def _sub_references(value: Any) -> Iterator[tuple[str, str | None]]:
    text = value if isinstance(value, str) else value[0]
    for name in _SUB_VARIABLE.findall(text):
        if not name.startswith("!"):
            logical_id, _, attribute = name.partition(".")
            yield logical_id, attribute or None
    if not isinstance(value, str):
        yield from references(value[1])


# -- what the local stack plays -------------------------------------------------------------------


def function_configs(template: Template, resolver: Resolver) -> dict[str, FunctionConfig]:
    """Every Lambda function of the translation, with its code folder, handler and resolved environment."""
    configs: dict[str, FunctionConfig] = {}
    for logical_id in template.logical_ids("AWS::Lambda::Function"):
        if not template.active(logical_id):
            continue  # its Condition is false: CloudFormation would not create it
        properties = template.resources[logical_id]["Properties"]
        image_env: dict[str, str] = {}
        if properties.get("PackageType") == "Image":
            code_dir, handler, image_env = _image_entry(template, logical_id, properties)
        else:
            code_dir, handler = template.code_dirs[logical_id], str(properties["Handler"])
        variables = properties.get("Environment", {}).get("Variables", {})
        environment = {name: resolver.resolve_string(value) for name, value in variables.items()}
        configs[logical_id] = FunctionConfig(
            logical_id=logical_id,
            function_name=function_name(template, logical_id),
            code_dir=code_dir,
            handler=handler,
            timeout_s=float(resolver.resolve_string(properties.get("Timeout", 3))),
            memory_mb=int(resolver.resolve_string(properties.get("MemorySize", 128))),
            # As in Lambda, the function's configuration wins over the image's ENV.
            environment={**image_env, **environment},
        )
    return configs


def function_name(template: Template, logical_id: str) -> str:
    name = template.resources[logical_id]["Properties"].get("FunctionName")
    if isinstance(name, str):
        return name
    return f"{template.stack_name}-{logical_id}"


def _image_entry(
    template: Template, logical_id: str, properties: Mapping[str, Any]
) -> tuple[Path, str, dict[str, str]]:
    """An image function's code folder (what its Dockerfile copies to the task root), handler and ENV."""
    metadata = template.sam["Resources"][logical_id].get("Metadata", {})
    if "Dockerfile" not in metadata:
        raise TemplateError(f"{logical_id}: an Image function needs Metadata.Dockerfile to run locally")
    context = (template.root / str(metadata.get("DockerContext", "."))).resolve()
    dockerfile = (context / str(metadata["Dockerfile"])).resolve()
    if not dockerfile.is_file():
        dockerfile = (template.root / str(metadata["Dockerfile"])).resolve()
    if not dockerfile.is_file():
        raise TemplateError(f"{logical_id}: Dockerfile {metadata['Dockerfile']} not found")
    command = properties.get("ImageConfig", {}).get("Command")
    instructions = parse_dockerfile(dockerfile.read_text())
    handler = str(command[0]) if command else _dockerfile_cmd(instructions)
    if handler is None:
        raise TemplateError(
            f"{logical_id}: neither ImageConfig.Command nor the Dockerfile's CMD names a handler"
        )
    module_file = handler.rpartition(".")[0].replace(".", "/") + ".py"
    environment = _dockerfile_env(instructions)
    for folder in _task_root_sources(instructions, context):
        if (folder / module_file).is_file():
            return folder, handler, environment
    if (dockerfile.parent / module_file).is_file():
        return dockerfile.parent, handler, environment
    raise TemplateError(
        f"{logical_id}: cannot find {module_file} among what {dockerfile} copies into the task root"
    )


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = (pending + stripped).strip()
        pending = ""
        if whole:
            keyword, _, arguments = whole.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def _dockerfile_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """The image's ENV variables, except those built from other variables (the build resolves those)."""
    environment: dict[str, str] = {}
    for keyword, arguments in instructions:
        if keyword != "ENV":
            continue
        words = shlex.split(arguments)
        if words and "=" not in words[0]:
            pairs = {words[0]: " ".join(words[1:])}  # the legacy form: ENV NAME value with spaces
        else:
            pairs = dict(word.partition("=")[::2] for word in words if "=" in word)
        environment.update({name: value for name, value in pairs.items() if "$" not in value})
    return environment


def _dockerfile_cmd(instructions: list[tuple[str, str]]) -> str | None:
    commands = [arguments for keyword, arguments in instructions if keyword == "CMD"]
    if not commands:
        return None
    last = commands[-1]
    words = json.loads(last) if last.startswith("[") else shlex.split(last)
    return str(words[0]) if words else None


def _task_root_sources(instructions: list[tuple[str, str]], context: Path) -> list[Path]:
    """Folders of the build context that COPY/ADD put into the task root, the last one first."""
    task_roots = {"${LAMBDA_TASK_ROOT}", "$LAMBDA_TASK_ROOT", "/var/task"}
    workdir = "/var/task"  # the Lambda base images' WORKDIR
    folders: list[Path] = []
    for keyword, arguments in instructions:
        if keyword == "WORKDIR":
            workdir = arguments
            continue
        if keyword not in ("COPY", "ADD"):
            continue
        words = json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)
        if any(word.startswith("--from") for word in words):
            continue
        words = [word for word in words if not word.startswith("--")]
        if len(words) < 2:
            continue
        *sources, destination = words
        destination = destination.rstrip("/") or "/"
        if destination in (".", "./") and workdir.rstrip("/") in task_roots:
            destination = "/var/task"
        if destination not in task_roots:
            continue
        for source in sources:
            path = (context / source).resolve()
            folders.append(path if path.is_dir() else path.parent)
    return list(reversed(folders))


def sqs_event_sources(
    template: Template, resolver: Resolver, queue_urls: Mapping[str, str]
) -> list[SqsEventSource]:
    """The template's enabled SQS event source mappings; ``queue_urls`` maps each queue's ARN to its URL."""
    sources: list[SqsEventSource] = []
    for logical_id in template.logical_ids("AWS::Lambda::EventSourceMapping"):
        if not template.active(logical_id):
            continue
        properties = template.resources[logical_id]["Properties"]
        arn = resolver.resolve_string(properties["EventSourceArn"])
        if not arn.startswith("arn:aws:sqs:"):
            logger.warning("%s: only SQS event sources are emulated; %s is not polled", logical_id, arn)
            continue
        if str(resolver.resolve_string(properties.get("Enabled", True))).lower() == "false":
            continue
        if arn not in queue_urls:
            raise TemplateError(f"{logical_id}: queue {arn} is not one of the template's queues")
        if properties.get("FilterCriteria"):
            logger.warning(
                "%s: FilterCriteria is not emulated; every message reaches the function", logical_id
            )
        function_ref = properties["FunctionName"]
        function = function_ref["Ref"] if isinstance(function_ref, dict) else str(function_ref)
        concurrency = properties.get("ScalingConfig", {}).get("MaximumConcurrency")
        sources.append(
            SqsEventSource(
                logical_id=logical_id,
                function=function,
                queue_arn=arn,
                queue_url=queue_urls[arn],
                batch_size=int(resolver.resolve_string(properties.get("BatchSize", 10))),
                batching_window_s=float(
                    resolver.resolve_string(properties.get("MaximumBatchingWindowInSeconds", 0))
                ),
                report_batch_item_failures="ReportBatchItemFailures"
                in properties.get("FunctionResponseTypes", []),
                maximum_concurrency=int(resolver.resolve_string(concurrency))
                if concurrency is not None
                else None,
            )
        )
    return sources


_INTEGRATION_FUNCTION = re.compile(r"functions/\$\{(\w+)\.Arn\}/invocations")
_OPENAPI_METHODS = {"get", "put", "post", "delete", "options", "head", "patch"}


def http_routes(template: Template) -> dict[str, list[HttpRoute]]:
    """The routes of each HTTP API (from the OpenAPI body SAM generates) that call a Lambda function."""
    apis: dict[str, list[HttpRoute]] = {}
    for logical_id in template.logical_ids("AWS::ApiGatewayV2::Api"):
        properties = template.resources[logical_id]["Properties"]
        body = properties.get("Body")
        if not isinstance(body, dict) or properties.get("ProtocolType") == "WEBSOCKET":
            continue
        if body.get("x-amazon-apigateway-cors"):
            logger.warning("%s: CorsConfiguration is not emulated by the local gateway", logical_id)
        routes: list[HttpRoute] = []
        for path, operations in body.get("paths", {}).items():
            for key, operation in operations.items():
                method = "ANY" if key == "x-amazon-apigateway-any-method" else key.upper()
                if key not in _OPENAPI_METHODS and method != "ANY":
                    continue
                integration = operation.get("x-amazon-apigateway-integration", {})
                uri = integration.get("uri", "")
                uri_text = uri.get("Fn::Sub", "") if isinstance(uri, dict) else str(uri)
                match = _INTEGRATION_FUNCTION.search(uri_text if isinstance(uri_text, str) else uri_text[0])
                if match is None:
                    logger.warning(
                        "%s: route %s %s has no Lambda integration; not served", logical_id, method, path
                    )
                    continue
                route_key = "$default" if path == "$default" else f"{method} {path}"
                routes.append(
                    HttpRoute(
                        api=logical_id,
                        route_key=route_key,
                        method=method,
                        path=path,
                        function=match.group(1),
                        payload_format_version=str(integration.get("payloadFormatVersion", "2.0")),
                    )
                )
        apis[logical_id] = routes
    return apis


@dataclass(frozen=True)
class WebSocketApi:
    """A WebSocket API of the template: its stage, how a message picks its route, what each route calls."""

    logical_id: str
    stage: str
    route_selection_expression: str
    routes: Mapping[str, str]  # route key -> the function its Lambda proxy integration calls
    two_way: frozenset[str] = frozenset()  # routes with a route response: the function's answer is sent back
    members: Mapping[str, str] = field(default_factory=dict)  # its stages, routes, ... : logical id -> type


_WS_MEMBER_TYPES = (
    "AWS::ApiGatewayV2::Route",
    "AWS::ApiGatewayV2::Integration",
    "AWS::ApiGatewayV2::Stage",
    "AWS::ApiGatewayV2::RouteResponse",
    "AWS::ApiGatewayV2::Deployment",
)


def websocket_apis(template: Template) -> dict[str, WebSocketApi]:
    """Each WebSocket API with its routes, read from its Route, Integration and Stage resources."""
    resources = template.resources
    declared = {lid: res["Type"] for lid, res in resources.items()}
    resolver = Resolver(
        {**template.pseudo_parameters(), **template.parameters}, {}, {}, declared, template.conditions
    )
    members: dict[str, dict[str, str]] = {}
    for logical_id in template.logical_ids(*_WS_MEMBER_TYPES):
        api = _refers_to(resources[logical_id]["Properties"].get("ApiId"), declared, "AWS::ApiGatewayV2::Api")
        if api is not None:
            members.setdefault(api, {})[logical_id] = declared[logical_id]
    apis: dict[str, WebSocketApi] = {}
    for logical_id in template.logical_ids("AWS::ApiGatewayV2::Api"):
        properties = resources[logical_id]["Properties"]
        if properties.get("ProtocolType") != "WEBSOCKET":
            continue
        own = members.get(logical_id, {})
        for member in (logical_id, *own):
            if "Condition" in resources[member]:
                logger.warning("%s: its Condition is not evaluated by the local gateway; served", member)
        apis[logical_id] = WebSocketApi(
            logical_id=logical_id,
            stage=_websocket_stage(logical_id, own, resources, resolver),
            route_selection_expression=resolver.resolve_string(
                properties.get("RouteSelectionExpression", "$request.body.action")
            ),
            routes=_websocket_routes(logical_id, own, resources, resolver, declared),
            two_way=_websocket_two_way(own, resources, resolver, declared),
            members=own,
        )
    return apis


def _refers_to(node: Any, declared: Mapping[str, str], kind: str | None = None) -> str | None:
    """The first resource (of ``kind``) a fragment refers to."""
    for logical_id, _attribute in references(node):
        if logical_id in declared and (kind is None or declared[logical_id] == kind):
            return logical_id
    return None


def _websocket_stage(
    api: str, members: Mapping[str, str], resources: Mapping[str, Any], resolver: Resolver
) -> str:
    stages = [
        resolver.resolve_string(resources[lid]["Properties"]["StageName"])
        for lid, kind in members.items()
        if kind == "AWS::ApiGatewayV2::Stage"
    ]
    if not stages:
        logger.warning("%s has no stage; served at the root path", api)
        return ""
    if len(stages) > 1:
        others = ", ".join(stages[1:])
        logger.warning("%s: only its stage %s is served locally; not %s", api, stages[0], others)
    return stages[0]


def _websocket_two_way(
    members: Mapping[str, str], resources: Mapping[str, Any], resolver: Resolver, declared: Mapping[str, str]
) -> frozenset[str]:
    """The route keys that have a route response."""
    keys: set[str] = set()
    for lid, kind in members.items():
        if kind == "AWS::ApiGatewayV2::RouteResponse":
            route_id = resources[lid]["Properties"].get("RouteId")
            route = _refers_to(route_id, declared, "AWS::ApiGatewayV2::Route")
            if route is not None:
                keys.add(resolver.resolve_string(resources[route]["Properties"]["RouteKey"]))
    return frozenset(keys)


def _websocket_routes(
    api: str,
    members: Mapping[str, str],
    resources: Mapping[str, Any],
    resolver: Resolver,
    declared: Mapping[str, str],
) -> dict[str, str]:
    functions: dict[str, str] = {}
    for lid, kind in members.items():
        if kind != "AWS::ApiGatewayV2::Integration":
            continue
        properties = resources[lid]["Properties"]
        function = _refers_to(properties.get("IntegrationUri"), declared, "AWS::Lambda::Function")
        if properties.get("IntegrationType") == "AWS_PROXY" and function is not None:
            functions[lid] = function
        else:
            logger.warning("%s: only Lambda proxy integrations are emulated; %s is not", api, lid)
    routes: dict[str, str] = {}
    for lid, kind in members.items():
        if kind != "AWS::ApiGatewayV2::Route":
            continue
        properties = resources[lid]["Properties"]
        route_key = resolver.resolve_string(properties["RouteKey"])
        integration = _refers_to(properties.get("Target"), declared, "AWS::ApiGatewayV2::Integration")
        if integration in functions:
            routes[route_key] = functions[integration]
        else:
            logger.warning("%s: route %s has no Lambda proxy integration; not served", api, route_key)
    return routes
