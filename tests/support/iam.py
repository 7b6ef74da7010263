"""Which AWS actions each function's code can call, and whether its role in the template grants them.

How the calls are found (the method the IAM test relies on):

1. mypy type-checks the jobgate package and every ``functions/<name>/app.py``, keeping the type of
   every expression. Only the adapters hold boto3 clients, and they are typed with boto3-stubs, so a
   call on an expression of type ``mypy_boto3_<service>...Client`` is an AWS call of that service.
2. Per function, a call graph is walked from its handler module: the module's top-level statements
   (what runs at cold start) and every function it defines; for ApiFunction also every function of
   ``jobgate.api`` (FastAPI calls the routes and dependencies the app registers). From a reached
   function the walk follows every function, method, property or class that its body calls *or
   refers to* (a bound method handed to a constructor, as ``wiring.py`` does with callbacks, counts
   as called), and the top level of each module it reaches. Methods resolve through the static type
   of their receiver, and also reach the overrides in subclasses. A method called on ``self.<name>``
   that mypy types as ``Any`` (a dependency kept untyped) reaches every adapter method of that
   name. Nothing is followed into code outside the project; a boto3 client that is not typed with
   boto3-stubs is an error (and a test checks every client call in the adapters is seen typed).
3. Each boto3 operation maps to the IAM actions it needs: ``<prefix>:<Operation>`` from botocore's
   service model, with the exceptions AWS documents (S3 reads, multipart and presigned requests;
   DynamoDB transactions authorised per item; the @connections API under execute-api).

So a function reaches an adapter method only when some code path from its handler names it: the
dead-letter handler, which builds a full worker service, reaches none of the worker's S3 calls.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from mypy import build
from mypy.modulefinder import BuildSource
from mypy.nodes import (
    Argument,
    Block,
    CallExpr,
    ClassDef,
    Decorator,
    DictExpr,
    Expression,
    FuncDef,
    MemberExpr,
    MypyFile,
    NameExpr,
    Node,
    OverloadedFuncDef,
    Statement,
    StrExpr,
    SuperExpr,
    TypeInfo,
)
from mypy.options import Options
from mypy.types import AnyType, CallableType, Instance, Type, TypeType, UnionType, get_proper_type

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "layers" / "jobgate"
ACCOUNT = "123456789012"
REGION = "us-east-1"

# -- boto3 operations -> IAM actions -----------------------------------------------------------------

# S3 authorises several requests under another action (docs: "Policy actions for Amazon S3"). A
# read of a missing key answers 403 instead of 404 to a caller without s3:ListBucket, and the
# adapters tell a missing object apart (NotFound, None): reads need ListBucket too.
S3_ACTIONS: dict[str, tuple[str, ...]] = {
    "HeadObject": ("s3:GetObject", "s3:ListBucket"),
    "HeadBucket": ("s3:ListBucket",),
    "ListObjects": ("s3:ListBucket",),
    "ListObjectsV2": ("s3:ListBucket",),
    "CreateMultipartUpload": ("s3:PutObject",),
    "UploadPart": ("s3:PutObject",),
    "CompleteMultipartUpload": ("s3:PutObject",),
    "ListParts": ("s3:ListMultipartUploadParts",),
    "CopyObject": ("s3:GetObject", "s3:PutObject"),
    "DeleteObjects": ("s3:DeleteObject",),
    "GetObject": ("s3:GetObject", "s3:ListBucket"),
    "PutObject": ("s3:PutObject",),
    "DeleteObject": ("s3:DeleteObject",),
    "AbortMultipartUpload": ("s3:AbortMultipartUpload",),
    "UploadPartCopy": ("s3:GetObject", "s3:PutObject"),
}
# The transfer manager's methods: the requests each one sends. An upload goes multipart past its
# threshold and aborts the upload when a part fails.
_UPLOAD = (
    "PutObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
)
S3_TRANSFER: dict[str, tuple[str, ...]] = {
    "upload_file": _UPLOAD,
    "upload_fileobj": _UPLOAD,
    "download_file": ("HeadObject", "GetObject"),
    "download_fileobj": ("HeadObject", "GetObject"),
    "copy": (
        "HeadObject",
        "CopyObject",
        "CreateMultipartUpload",
        "UploadPartCopy",
        "CompleteMultipartUpload",
    ),
    # A presigned POST is a PutObject made by whoever holds it, authorised as the signer.
    "generate_presigned_post": ("PutObject",),
}
# DynamoDB transactions are authorised per item, on the item's own action (docs: "Using IAM with
# DynamoDB transactions"); the batch calls have actions of their own.
DYNAMODB_TRANSACT_ITEMS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
}
SQS_BATCHES = {
    "SendMessageBatch": "sqs:SendMessage",
    "DeleteMessageBatch": "sqs:DeleteMessage",
    "ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
}
# Client methods that send no request.
_LOCAL_CLIENT_METHODS = {"close", "can_paginate", "get_waiter", "meta", "exceptions"}


@dataclass(frozen=True, order=True)
class AwsCall:
    """One boto3 client method called from the project's code, and where."""

    service: str  # botocore's name: dynamodb, sqs, s3, apigatewaymanagementapi
    method: str  # the client method, as called: put_item, generate_presigned_url, ...
    where: str  # module:line
    detail: tuple[str, ...] = ()  # what decides the actions: a presigned operation, transaction items


@dataclass(frozen=True, order=True)
class Need:
    """An IAM action on a resource that a function's code needs."""

    action: str
    resource: str
    because: str = field(compare=False, default="")


@cache
def _operations(service: str) -> dict[str, str]:
    """Client method name -> operation name, from botocore's service model."""
    import botocore.session
    from botocore import xform_name

    model = botocore.session.get_session().get_service_model(service)
    return {xform_name(name): name for name in model.operation_names}


@cache
def _iam_prefix(service: str) -> str:
    import botocore.session

    model = botocore.session.get_session().get_service_model(service)
    return str(model.signing_name or model.endpoint_prefix)


def actions_of(call: AwsCall) -> set[str]:
    """The IAM actions one client call needs."""
    operations = _operations(call.service)
    if call.method in ("generate_presigned_url", "get_paginator"):
        if not call.detail:
            raise AnalysisError(f"{call.where}: {call.method} with an operation that is not a literal")
        names = [operations[call.detail[0]]]
    elif call.service == "s3" and call.method in S3_TRANSFER:
        names = list(S3_TRANSFER[call.method])
    elif call.method in operations:
        names = [operations[call.method]]
    else:
        raise AnalysisError(f"{call.where}: {call.service}.{call.method} maps to no operation")
    actions: set[str] = set()
    for name in names:
        actions |= _operation_actions(call, name)
    return actions


def _operation_actions(call: AwsCall, operation: str) -> set[str]:
    prefix = _iam_prefix(call.service)
    if call.service == "s3":
        if operation not in S3_ACTIONS:
            raise AnalysisError(f"{call.where}: no IAM action known for s3 {operation}; add it to S3_ACTIONS")
        return set(S3_ACTIONS[operation])
    if call.service == "apigatewaymanagementapi":
        return {"execute-api:ManageConnections"}  # POST, GET and DELETE on @connections
    if call.service == "dynamodb" and operation == "TransactWriteItems":
        items = [DYNAMODB_TRANSACT_ITEMS[kind] for kind in call.detail if kind in DYNAMODB_TRANSACT_ITEMS]
        return set(items or DYNAMODB_TRANSACT_ITEMS.values())
    if call.service == "dynamodb" and operation == "TransactGetItems":
        return {"dynamodb:GetItem"}
    if call.service == "sqs" and operation in SQS_BATCHES:
        return {SQS_BATCHES[operation]}
    return {f"{prefix}:{operation}"}


class AnalysisError(Exception):
    """The code does something the analysis cannot map; extend the analysis rather than guess."""


# -- the call graph ------------------------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def handler_module(function_dir: str) -> str:
    """The module name the analysis gives functions/<dir>/app.py."""
    return f"jobgate_fn_{function_dir}"


@dataclass
class Program:
    """The project's code, type-checked: trees, expression types, classes."""

    modules: dict[str, MypyFile]
    types: dict[Expression, Type]
    ours: set[str]
    classes: list[TypeInfo] = field(default_factory=list)

    @classmethod
    @cache
    def load(cls) -> Program:
        options = Options()
        options.python_version = (3, 11)
        options.export_types = True
        options.preserve_asts = True
        options.incremental = False
        options.cache_dir = os.devnull
        options.ignore_missing_imports = True
        # Only the project's modules are analysed; stubs (typeshed, boto3-stubs) are read as always,
        # other libraries count as Any. The walk never enters them anyway.
        options.follow_imports = "skip"
        options.check_untyped_defs = True
        options.mypy_path = [str(PACKAGE), str(ROOT / "infra" / "local")]
        sources = [BuildSource(str(p), _module_name(p)) for p in sorted((PACKAGE / "jobgate").rglob("*.py"))]
        sources += [
            BuildSource(str(p), handler_module(p.parent.name))
            for p in sorted((ROOT / "functions").glob("*/app.py"))
        ]
        result = build.build(sources, options)
        ours = {source.module for source in sources}
        modules = {name: tree for name in ours if (tree := result.graph[name].tree) is not None}
        classes = [node.info for tree in modules.values() for node in _walk_classes(tree.defs)]
        return cls(modules=modules, types=result.types, ours=ours, classes=classes)

    def module_of(self, fullname: str) -> str:
        """The project module that defines ``fullname``, or "" when it is not the project's."""
        module = fullname.rpartition(".")[0]
        while module and module not in self.ours:
            module = module.rpartition(".")[0]
        return module

    def is_ours(self, fullname: str) -> bool:
        return bool(self.module_of(fullname))

    def overrides(self, info: TypeInfo, name: str) -> Iterator[Node]:
        """``name`` as ``info`` resolves it, and as each of its subclasses defines it."""
        symbol = info.get(name)
        if symbol is not None and symbol.node is not None:
            yield symbol.node
        for sub in self.classes:
            if sub is not info and info in sub.mro and name in sub.names:
                node = sub.names[name].node
                if node is not None:
                    yield node

    def adapter_methods(self, name: str) -> Iterator[Node]:
        for info in self.classes:
            if info.module_name.startswith("jobgate.adapters") and name in info.names:
                node = info.names[name].node
                if node is not None:
                    yield node


def _walk_classes(defs: Iterable[Node]) -> Iterator[ClassDef]:
    for node in defs:
        if isinstance(node, ClassDef):
            yield node
            yield from _walk_classes(node.defs.body)


@dataclass
class Reach:
    """What one function's code reaches: the functions walked and the AWS calls found."""

    functions: set[str] = field(default_factory=set)
    calls: set[AwsCall] = field(default_factory=set)


# Attributes of mypy's nodes that refer to other definitions rather than hold syntax.
_REFERENCES = {
    "node",
    "info",
    "original_def",
    "original_decorators",
    "unanalyzed_items",
    "analyzed",
    "removed_statements",
    "def_var",
    "variable",
    "expanded",
}


@cache
def _attributes(kind: type) -> tuple[str, ...]:
    """A node class's attributes: mypyc lists them in __mypyc_attrs__, pure Python in __slots__."""
    compiled = getattr(kind, "__mypyc_attrs__", None)
    if compiled is not None:
        return tuple(compiled)
    return tuple(slot for klass in kind.__mro__ for slot in getattr(klass, "__slots__", ()))


def _children(node: Node) -> Iterator[Node]:
    """A node's syntactic children (mypy's compiled visitors cannot be subclassed from Python)."""
    for name in _attributes(type(node)):
        if name in _REFERENCES or name.startswith("_"):
            continue
        yield from _nodes_in(getattr(node, name, None))


def _nodes_in(value: Any) -> Iterator[Node]:
    if isinstance(value, (Expression, Statement, Block, Argument)):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _nodes_in(item)


def _descendants(node: Node) -> Iterator[Node]:
    stack, seen = [node], set()
    while stack:
        current = stack.pop()
        if id(current) not in seen:
            seen.add(id(current))
            yield current
            stack.extend(_children(current))


class _Walker:
    def __init__(self, program: Program) -> None:
        self.program = program
        self.reach = Reach()
        self._seen: set[int] = set()
        self._pending: list[Node] = []
        self._module = ""
        self._function: FuncDef | None = None
        self._modules: set[str] = set()

    # -- the worklist --

    def run(self, roots: Iterable[Node], modules: Iterable[str]) -> Reach:
        for name in modules:
            self._top_level(name)
        self._pending.extend(roots)
        while self._pending:
            node = self._pending.pop()
            if id(node) in self._seen:
                continue
            self._seen.add(id(node))
            self._enter(node)
        return self.reach

    def _top_level(self, module: str) -> None:
        if module in self._modules or module not in self.program.modules:
            return
        self._modules.add(module)
        tree = self.program.modules[module]
        self._module, self._function = module, None
        for statement in tree.defs:
            if isinstance(statement, Decorator):
                for decorator in statement.decorators:
                    self._scan(decorator)
            elif not isinstance(statement, (FuncDef, OverloadedFuncDef, ClassDef)):
                self._scan(statement)

    def _enter(self, node: Node) -> None:
        if isinstance(node, Decorator):
            for decorator in node.decorators:
                self._scan(decorator)
            self._add(node.func)
        elif isinstance(node, OverloadedFuncDef):
            for item in node.items:
                self._add(item)
            if node.impl is not None:
                self._add(node.impl)
        elif isinstance(node, FuncDef):
            if not self.program.is_ours(node.fullname):
                return
            self.reach.functions.add(node.fullname)
            # What a module runs when it is imported runs before any of its functions.
            self._top_level(self.program.module_of(node.fullname))
            self._function = node
            self._module = self.program.module_of(node.fullname)
            for argument in node.arguments:
                if argument.initializer is not None:
                    self._scan(argument.initializer)
            self._scan(node.body)
            self._function = None
        elif isinstance(node, TypeInfo):
            self._enter_class(node)

    def _enter_class(self, info: TypeInfo) -> None:
        if not self.program.is_ours(info.fullname):
            return
        self.reach.functions.add(info.fullname)
        self._module, self._function = info.module_name, None
        # Class-level statements (dataclass defaults and factories) run when instances are made.
        for statement in info.defn.defs.body:
            if not isinstance(statement, (FuncDef, OverloadedFuncDef, Decorator, ClassDef)):
                self._scan(statement)
        for base in info.mro:
            for name, symbol in base.names.items():
                if name.startswith("__") and name.endswith("__") and symbol.node is not None:
                    self._add(symbol.node)

    def _add(self, node: Node | None) -> None:
        if node is not None and id(node) not in self._seen:
            self._pending.append(node)

    # -- what a body calls or refers to --

    def _scan(self, root: Node) -> None:
        calls: dict[int, CallExpr] = {}
        for node in _descendants(root):
            if isinstance(node, CallExpr) and isinstance(node.callee, MemberExpr):
                calls[id(node.callee)] = node
            if isinstance(node, NameExpr):
                if isinstance(node.node, (FuncDef, Decorator, OverloadedFuncDef, TypeInfo)):
                    self._add(node.node)
            elif isinstance(node, MemberExpr):
                self._member(node, calls.get(id(node)))
            elif isinstance(node, SuperExpr) and node.info is not None:
                for base in node.info.mro[1:]:
                    if node.name in base.names:
                        self._add(base.names[node.name].node)
                        break

    def _member(self, o: MemberExpr, call: CallExpr | None) -> None:
        if isinstance(o.node, (FuncDef, Decorator, OverloadedFuncDef, TypeInfo)):  # module.function
            self._add(o.node)
            return
        receiver = self.program.types.get(o.expr)
        if receiver is None:
            return
        for info in _infos(receiver):
            service = _boto3_service(info)
            if service is not None:
                self._aws_call(service, o, call)
            elif self.program.is_ours(info.fullname):
                for node in self.program.overrides(info, o.name):
                    self._add(node)
        if _is_dependency(o.expr) and isinstance(get_proper_type(receiver), AnyType):
            for node in self.program.adapter_methods(o.name):
                self._add(node)

    def _aws_call(self, service: str, o: MemberExpr, call: CallExpr | None) -> None:
        if o.name in _LOCAL_CLIENT_METHODS:
            return
        detail: tuple[str, ...] = ()
        if o.name in ("generate_presigned_url", "get_paginator") and call is not None and call.args:
            first = call.args[0]
            detail = (first.value,) if isinstance(first, StrExpr) else ()
        elif o.name == "transact_write_items" and self._function is not None:
            detail = tuple(sorted(_dict_keys(self._function) & set(DYNAMODB_TRANSACT_ITEMS)))
        elif o.name in ("query", "scan") and self._function is not None:
            detail = ("index",) if "IndexName" in _dict_keys(self._function) else ()
        self.reach.calls.add(AwsCall(service, o.name, f"{self._module}:{o.line}", detail))


def _is_dependency(expr: Expression) -> bool:
    """``self.<name>``: where the services keep what their constructors were given."""
    return isinstance(expr, MemberExpr) and isinstance(expr.expr, NameExpr) and expr.expr.name == "self"


def _infos(typ: Type) -> Iterator[TypeInfo]:
    proper = get_proper_type(typ)
    if isinstance(proper, Instance):
        yield proper.type
    elif isinstance(proper, UnionType):
        for item in proper.items:
            yield from _infos(item)
    elif isinstance(proper, TypeType):
        yield from _infos(proper.item)
    elif isinstance(proper, CallableType) and proper.is_type_obj():
        yield proper.type_object()


def _boto3_service(info: TypeInfo) -> str | None:
    """The botocore service of a boto3-stubs client class, or None."""
    match = re.fullmatch(r"mypy_boto3_(\w+)\.client\.\w+Client", info.fullname)
    if match:
        return match.group(1)
    if info.fullname == "botocore.client.BaseClient":
        raise AnalysisError("a boto3 client typed only as BaseClient: type it with boto3-stubs")
    return None


def _dict_keys(function: FuncDef) -> set[str]:
    """String keys of the dict literals and keyword arguments in a function (its request shapes)."""
    keys: set[str] = set()
    for node in _descendants(function.body):
        if isinstance(node, DictExpr):
            keys |= {key.value for key, _ in node.items if isinstance(key, StrExpr)}
        elif isinstance(node, CallExpr):
            keys |= {name for name in node.arg_names if name}
    return keys


def definitions(tree: MypyFile) -> list[Node]:
    """The functions a module defines, its classes' methods included."""
    found: list[Node] = []
    for node in tree.defs:
        if isinstance(node, (FuncDef, Decorator, OverloadedFuncDef)):
            found.append(node)
        elif isinstance(node, ClassDef):
            found += [n for n in node.defs.body if isinstance(n, (FuncDef, Decorator, OverloadedFuncDef))]
    return found


def walk(roots: Iterable[Node], modules: Iterable[str] = ()) -> Reach:
    """What runs from ``roots`` and from the top level of ``modules``."""
    return _Walker(Program.load()).run(roots, modules)


@cache
def reach_of(function_dir: str) -> Reach:
    """What the handler in functions/<function_dir>/app.py can reach."""
    program = Program.load()
    module = handler_module(function_dir)
    roots = [node for node in program.modules[module].defs if isinstance(node, (FuncDef, Decorator))]
    if function_dir == "api":
        for name, tree in program.modules.items():
            if name == "jobgate.api" or name.startswith("jobgate.api."):
                roots += [n for n in tree.defs if isinstance(n, (FuncDef, Decorator, OverloadedFuncDef))]
    return walk(roots, [module])


def client_calls_in_adapters() -> set[tuple[str, int, str]]:
    """Every ``<something>.<operation>(...)`` in the adapters whose name is a client method of a
    service they use: (module, line, method). The typed analysis must account for each one."""
    services = ("dynamodb", "sqs", "s3", "apigatewaymanagementapi", "secretsmanager", "ssm", "ecs")
    names = set().union(*(_operations(s) for s in services)) | set(S3_TRANSFER) | {"generate_presigned_url"}
    program = Program.load()
    found: set[tuple[str, int, str]] = set()

    for module, tree in program.modules.items():
        if module.startswith("jobgate.adapters"):
            for node in _descendants(tree):
                if (
                    isinstance(node, CallExpr)
                    and isinstance(node.callee, MemberExpr)
                    and node.callee.name in names
                ):
                    found.add((module, node.line, node.callee.name))
    return found


# -- what the template grants ----------------------------------------------------------------------


def symbolic_resources(
    resources: Mapping[str, Any], stack: str
) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """Ref and GetAtt values for the template's resources, as a deployed stack would name them."""
    refs: dict[str, str] = {}
    attributes: dict[tuple[str, str], str] = {}
    for lid, resource in resources.items():
        kind = resource["Type"]
        name = f"{stack}-{lid}-PHYSICAL"
        if kind == "AWS::SQS::Queue":
            arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
            refs[lid] = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}"
            attributes.update({(lid, "Arn"): arn, (lid, "QueueName"): name, (lid, "QueueUrl"): refs[lid]})
        elif kind == "AWS::DynamoDB::Table":
            refs[lid] = name
            attributes[(lid, "Arn")] = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
        elif kind == "AWS::S3::Bucket":
            refs[lid] = name.lower()
            attributes[(lid, "Arn")] = f"arn:aws:s3:::{name.lower()}"
        elif kind == "AWS::ApiGatewayV2::Api":
            refs[lid] = f"{lid.lower()}id"
        elif kind == "AWS::Lambda::Function":
            refs[lid] = name
            attributes[(lid, "Arn")] = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
        elif kind == "AWS::IAM::Role":
            refs[lid] = name
            attributes[(lid, "Arn")] = f"arn:aws:iam::{ACCOUNT}:role/{name}"
        elif kind == "AWS::SecretsManager::Secret":  # Ref is the ARN, with the suffix AWS adds
            refs[lid] = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-AbCdEf"
    return refs, attributes


def needs(calls: Iterable[AwsCall], environment: Mapping[str, str], indexes: Iterable[str]) -> set[Need]:
    """The (action, resource) pairs a function's calls need, its resources named by its settings."""
    table = environment["JOBGATE_TABLE_NAME"]
    bucket = environment["JOBGATE_BUCKET_NAME"]
    queue = environment["JOBGATE_QUEUE_URL"].rstrip("/").rsplit("/", 1)[-1]
    table_arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}"
    found: set[Need] = set()
    for call in calls:
        because = f"{call.service}.{call.method} at {call.where}"
        for action in actions_of(call):
            for resource in _resources(call, action, table_arn, bucket, queue, environment, indexes):
                found.add(Need(action, resource, because))
    return found


def _resources(
    call: AwsCall,
    action: str,
    table_arn: str,
    bucket: str,
    queue: str,
    environment: Mapping[str, str],
    indexes: Iterable[str],
) -> list[str]:
    if call.service == "dynamodb":
        if "index" in call.detail:
            return [f"{table_arn}/index/{index}" for index in indexes]
        return [table_arn]
    if call.service == "sqs":
        # Jobs are sent to the worker Lambda's queue, or to the container runner's when one is deployed.
        container = environment.get("JOBGATE_CONTAINER_QUEUE_URL", "").rstrip("/").rsplit("/", 1)[-1]
        queues = [queue, container if call.method == "send_message" else ""]
        return [f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}" for name in queues if name]
    if call.service == "ecs":
        return [environment["JOBGATE_CONTAINER_TASK_DEFINITION"]]
    if call.service == "s3":
        if action in ("s3:ListBucket", "s3:ListBucketMultipartUploads"):
            return [f"arn:aws:s3:::{bucket}"]
        return [f"arn:aws:s3:::{bucket}/results/some-object"]
    if call.service == "apigatewaymanagementapi":
        url = environment["JOBGATE_WS_MANAGEMENT_URL"]
        match = re.fullmatch(r"https://([^.]+)\.execute-api\.[^/]+/([^/]+)", url)
        if match is None:
            raise AnalysisError(f"JOBGATE_WS_MANAGEMENT_URL {url!r} names no API and stage")
        api, stage = match.groups()
        return [f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{api}/{stage}/POST/@connections/some-connection"]
    if call.service in ("secretsmanager", "ssm"):
        # The secrets a function reads are the ones its settings name by ARN: the bootstrap key's
        # secret (JOBGATE_API_KEY_SECRET), and the ones the operator maps for commands
        # (JOBGATE_COMMAND_SECRETS: NAME=arn,...).
        mapped = environment.get("JOBGATE_COMMAND_SECRETS", "")
        arns = [entry.partition("=")[2] for entry in re.split(r"[,\s]+", mapped) if "=" in entry]
        key = environment.get("JOBGATE_API_KEY_SECRET", "")
        if call.where.startswith("jobgate.adapters.key_secret"):
            if not key.startswith("arn:"):
                raise AnalysisError(f"{call.where}: reads the key's secret, and its environment names none")
            return [key]
        return sorted({arn for arn in arns if arn.split(":")[2] == call.service})
    raise AnalysisError(f"{call.where}: no resource known for {call.service}")


def _wildcard(pattern: str) -> re.Pattern[str]:
    # IAM wildcards: * any run of characters (slashes too), ? one character; nothing else is special.
    return re.compile(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."))


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def allows(statements: Iterable[Mapping[str, Any]], need: Need) -> bool:
    """Whether some Allow statement (without conditions) grants the action on the resource."""
    for statement in statements:
        if statement.get("Effect") != "Allow" or "Condition" in statement:
            continue
        if "NotAction" in statement or "NotResource" in statement:
            raise AnalysisError(f"NotAction/NotResource are not evaluated: {statement}")
        actions = [str(a).lower() for a in _listed(statement.get("Action", []))]
        if not any(fnmatch.fnmatchcase(need.action.lower(), a) for a in actions):
            continue
        if any(_wildcard(str(r)).fullmatch(need.resource) for r in _listed(statement.get("Resource", []))):
            return True
    return False


def role_statements(resources: Mapping[str, Any], function: str, resolver: Any) -> list[dict[str, Any]]:
    """The inline policy statements of a function's role, with their intrinsics resolved."""
    role_ref = resources[function]["Properties"]["Role"]
    role = role_ref["Fn::GetAtt"][0] if isinstance(role_ref, dict) else None
    if role is None or role not in resources:
        raise AnalysisError(f"{function}: its role is not a resource of the template")
    statements: list[dict[str, Any]] = []
    # Resolved whole: a policy under Fn::If is there or not, as its condition says.
    for policy in resolver.resolve(resources[role]["Properties"].get("Policies", [])):
        document = policy["PolicyDocument"]
        statements += _listed(document.get("Statement", []))
    return statements
