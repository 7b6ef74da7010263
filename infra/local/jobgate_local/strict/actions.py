"""What a request asks AWS to do, in IAM's terms: the service, its protocol, the operation, and every
(action, resource ARN) pair IAM checks for it.

DynamoDB's batch and transaction operations are checked per table, transactions with the per-item
actions (``dynamodb:PutItem`` for a ``Put``...), as AWS does; SQS's batch operations are checked as
their single forms (``SendMessageBatch`` needs ``sqs:SendMessage``); S3's operation is read from the
method, the path (path-style addressing, as boto3 uses against a local endpoint) and the sub-resource
in the query string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit
from xml.etree import ElementTree

from .errors import Protocol
from .request import StrictRequest

_DYNAMODB_TARGET = "DynamoDB_20120810."
_SQS_TARGET = "AmazonSQS."
_TRANSACT_ACTIONS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
    "Get": "dynamodb:GetItem",
}
_SQS_BATCH_ACTIONS = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}


@dataclass
class Call:
    """One request, classified."""

    service: str
    protocol: Protocol
    operation: str
    region: str
    account: str
    permissions: list[tuple[str, str]] = field(default_factory=list)
    # Condition keys AWS sets for an action of this call (action -> {key: value}).
    condition_keys: dict[str, dict[str, str]] = field(default_factory=dict)
    queue_url: str | None = None  # SQS
    bucket: str | None = None  # S3
    key: str | None = None  # S3

    @property
    def is_s3_object(self) -> bool:
        return self.service == "s3" and self.key is not None


def protocol_of(request: StrictRequest, service: str) -> Protocol:
    target = request.header("X-Amz-Target") or ""
    if service == "s3":
        return Protocol.S3
    if service == "sqs":
        return Protocol.SQS_JSON if target.startswith(_SQS_TARGET) else Protocol.QUERY
    if target:
        return Protocol.JSON
    if service in ("execute-api", "lambda", "apigateway", "logs"):
        return Protocol.REST_JSON
    return Protocol.QUERY


def guess_service(request: StrictRequest) -> str:
    """The service of an unsigned request (only its error's shape depends on it)."""
    target = request.header("X-Amz-Target") or ""
    if target.startswith(_DYNAMODB_TARGET):
        return "dynamodb"
    if target.startswith(_SQS_TARGET) or request.form_value("Action") and "QueueUrl" in request.form:
        return "sqs"
    return "s3"


def classify(request: StrictRequest, service: str, region: str, account: str) -> Call:
    protocol = protocol_of(request, service)
    call = Call(service, protocol, "", region, account)
    if service == "dynamodb":
        _dynamodb(request, call)
    elif service == "sqs":
        _sqs(request, call)
    elif service == "s3":
        _s3(request, call)
    elif service in ("secretsmanager", "ssm") and request.header("X-Amz-Target"):
        _secret(request, call)
    else:
        _generic(request, call)
    return call


# -- DynamoDB -----------------------------------------------------------------------------------------


def table_arn(call: Call, table: str, index: str | None = None) -> str:
    arn = f"arn:aws:dynamodb:{call.region}:{call.account}:table/{table}"
    return f"{arn}/index/{index}" if index else arn


def _dynamodb(request: StrictRequest, call: Call) -> None:
    target = request.header("X-Amz-Target") or ""
    call.operation = target.removeprefix(_DYNAMODB_TARGET)
    body = request.json
    op = call.operation
    if op == "BatchGetItem" or op == "BatchWriteItem":
        for table in body.get("RequestItems", {}):
            call.permissions.append((f"dynamodb:{op}", table_arn(call, table)))
    elif op in ("TransactWriteItems", "TransactGetItems"):
        for item in body.get("TransactItems", []):
            for kind, action in item.items():
                if kind in _TRANSACT_ACTIONS and isinstance(action, Mapping):
                    table = str(action.get("TableName", ""))
                    call.permissions.append((_TRANSACT_ACTIONS[kind], table_arn(call, table)))
    elif "TableName" in body:
        index = body.get("IndexName") if op in ("Query", "Scan") else None
        call.permissions.append((f"dynamodb:{op}", table_arn(call, str(body["TableName"]), index)))
    elif "ResourceArn" in body:
        call.permissions.append((f"dynamodb:{op}", str(body["ResourceArn"])))
    else:
        call.permissions.append((f"dynamodb:{op}", "*"))


# -- SQS ----------------------------------------------------------------------------------------------


def queue_arn_from_url(url: str, region: str) -> str | None:
    parts = [p for p in urlsplit(url).path.split("/") if p]
    if len(parts) < 2:
        return None
    return f"arn:aws:sqs:{region}:{parts[-2]}:{parts[-1]}"


def _sqs(request: StrictRequest, call: Call) -> None:
    params: dict[str, Any]
    if call.protocol is Protocol.SQS_JSON:
        call.operation = (request.header("X-Amz-Target") or "").removeprefix(_SQS_TARGET)
        params = dict(request.json)
    else:
        call.operation = request.form_value("Action") or ""
        params = {name: values[0] for name, values in request.form.items() if values}
        if "QueueUrl" not in params and re.match(r"^/\d+/[^/]+/?$", request.path):
            params["QueueUrl"] = request.path  # the query protocol may post to the queue's own URL
    action = "sqs:" + _SQS_BATCH_ACTIONS.get(call.operation, call.operation)
    resource = "*"
    if "QueueUrl" in params:
        call.queue_url = str(params["QueueUrl"])
        resource = queue_arn_from_url(call.queue_url, call.region) or "*"
    elif "QueueName" in params:
        owner = str(params.get("QueueOwnerAWSAccountId") or call.account)
        resource = f"arn:aws:sqs:{call.region}:{owner}:{params['QueueName']}"
    call.permissions.append((action, resource))


# -- S3 -----------------------------------------------------------------------------------------------

# Bucket sub-resources: (GET, PUT, DELETE) actions.
_BUCKET_SUBRESOURCES: dict[str, tuple[str, str, str]] = {
    "policy": ("GetBucketPolicy", "PutBucketPolicy", "DeleteBucketPolicy"),
    "acl": ("GetBucketAcl", "PutBucketAcl", "PutBucketAcl"),
    "cors": ("GetBucketCORS", "PutBucketCORS", "PutBucketCORS"),
    "lifecycle": ("GetLifecycleConfiguration", "PutLifecycleConfiguration", "PutLifecycleConfiguration"),
    "notification": ("GetBucketNotification", "PutBucketNotification", "PutBucketNotification"),
    "versioning": ("GetBucketVersioning", "PutBucketVersioning", "PutBucketVersioning"),
    "tagging": ("GetBucketTagging", "PutBucketTagging", "PutBucketTagging"),
    "encryption": ("GetEncryptionConfiguration", "PutEncryptionConfiguration", "PutEncryptionConfiguration"),
    "publicAccessBlock": (
        "GetBucketPublicAccessBlock",
        "PutBucketPublicAccessBlock",
        "PutBucketPublicAccessBlock",
    ),
    "ownershipControls": (
        "GetBucketOwnershipControls",
        "PutBucketOwnershipControls",
        "PutBucketOwnershipControls",
    ),
    "website": ("GetBucketWebsite", "PutBucketWebsite", "DeleteBucketWebsite"),
    "logging": ("GetBucketLogging", "PutBucketLogging", "PutBucketLogging"),
    "location": ("GetBucketLocation", "GetBucketLocation", "GetBucketLocation"),
    "versions": ("ListBucketVersions", "ListBucketVersions", "ListBucketVersions"),
    "uploads": ("ListBucketMultipartUploads", "ListBucketMultipartUploads", "ListBucketMultipartUploads"),
    "object-lock": (
        "GetBucketObjectLockConfiguration",
        "PutBucketObjectLockConfiguration",
        "PutBucketObjectLockConfiguration",
    ),
    "policyStatus": ("GetBucketPolicyStatus", "GetBucketPolicyStatus", "GetBucketPolicyStatus"),
    "replication": (
        "GetReplicationConfiguration",
        "PutReplicationConfiguration",
        "PutReplicationConfiguration",
    ),
    "accelerate": ("GetAccelerateConfiguration", "PutAccelerateConfiguration", "PutAccelerateConfiguration"),
    "requestPayment": ("GetBucketRequestPayment", "PutBucketRequestPayment", "PutBucketRequestPayment"),
}
_OBJECT_SUBRESOURCES: dict[str, tuple[str, str, str]] = {
    "acl": ("GetObjectAcl", "PutObjectAcl", "PutObjectAcl"),
    "tagging": ("GetObjectTagging", "PutObjectTagging", "DeleteObjectTagging"),
    "retention": ("GetObjectRetention", "PutObjectRetention", "PutObjectRetention"),
    "legal-hold": ("GetObjectLegalHold", "PutObjectLegalHold", "PutObjectLegalHold"),
    "attributes": ("GetObject", "GetObject", "GetObject"),
}
_METHOD_INDEX = {"GET": 0, "HEAD": 0, "PUT": 1, "DELETE": 2}


def object_arn(bucket: str, key: str) -> str:
    return f"arn:aws:s3:::{bucket}/{key}"


def _s3(request: StrictRequest, call: Call) -> None:
    segments = request.raw_path.lstrip("/").split("/", 1)
    bucket = unquote(segments[0]) if segments[0] else None
    key = unquote(segments[1]) if len(segments) > 1 and segments[1] else None
    call.bucket, call.key = bucket, key
    if bucket is None:
        call.operation = "ListBuckets"
        call.permissions.append(("s3:ListAllMyBuckets", "*"))
    elif key is None:
        _s3_bucket(request, call, bucket)
    else:
        _s3_object(request, call, bucket, key)


def _s3_bucket(request: StrictRequest, call: Call, bucket: str) -> None:
    bucket_arn = f"arn:aws:s3:::{bucket}"
    method = request.method
    sub = next((name for name in _BUCKET_SUBRESOURCES if name in request.query), None)
    if method == "POST" and "delete" in request.query:
        call.operation = "DeleteObjects"
        for key in _keys_to_delete(request.body):
            call.permissions.append(("s3:DeleteObject", object_arn(bucket, key)))
        return
    if method == "POST":
        call.operation = "PostObject"  # a browser-based upload: the key is a form field (see post_policy)
        return
    if sub is not None and method in _METHOD_INDEX:
        action = _BUCKET_SUBRESOURCES[sub][_METHOD_INDEX[method]]
    elif method in ("GET", "HEAD"):
        action = "ListBucket"
    elif method == "PUT":
        action = "CreateBucket"
    elif method == "DELETE":
        action = "DeleteBucket"
    else:
        action = "ListBucket"
    call.operation = action
    call.permissions.append((f"s3:{action}", bucket_arn))


def _s3_object(request: StrictRequest, call: Call, bucket: str, key: str) -> None:
    arn = object_arn(bucket, key)
    method, query = request.method, request.query
    sub = next((name for name in _OBJECT_SUBRESOURCES if name in query), None)
    versioned = "versionId" in query
    if method in ("GET", "HEAD") and "uploadId" in query:
        action = "ListMultipartUploadParts"
    elif sub is not None and method in _METHOD_INDEX:
        action = _OBJECT_SUBRESOURCES[sub][_METHOD_INDEX[method]]
    elif method in ("GET", "HEAD"):
        action = "GetObjectVersion" if versioned else "GetObject"
    elif method == "PUT":
        action = "PutObject"  # PutObject, CopyObject and UploadPart
        call.permissions.extend(_put_extras(request, arn))
    elif method == "POST" and "restore" in query:
        action = "RestoreObject"
    elif method == "POST" and "select" in query:
        action = "GetObject"
    elif method == "POST":
        action = "PutObject"  # CreateMultipartUpload (?uploads) and CompleteMultipartUpload (?uploadId)
    elif method == "DELETE" and "uploadId" in query:
        action = "AbortMultipartUpload"
    elif method == "DELETE":
        action = "DeleteObjectVersion" if versioned else "DeleteObject"
    else:
        action = "GetObject"
    call.operation = action
    call.permissions.insert(0, (f"s3:{action}", arn))


def _put_extras(request: StrictRequest, arn: str) -> list[tuple[str, str]]:
    """What a PUT needs besides s3:PutObject: reading a copy's source, tagging, an ACL."""
    extras = []
    source = request.header("X-Amz-Copy-Source")
    if source:
        source_bucket, _, source_key = unquote(source.split("?")[0]).lstrip("/").partition("/")
        extras.append(("s3:GetObject", object_arn(source_bucket, source_key)))
    if request.header("X-Amz-Tagging"):
        extras.append(("s3:PutObjectTagging", arn))
    if request.header("X-Amz-Acl"):
        extras.append(("s3:PutObjectAcl", arn))
    return extras


def _keys_to_delete(body: bytes) -> list[str]:
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return []
    return [element.text or "" for element in root.iter() if element.tag.rsplit("}", 1)[-1] == "Key"]


# -- Secrets Manager and SSM parameters: the secret or parameter the request names ------------------


def _secret(request: StrictRequest, call: Call) -> None:
    target = request.header("X-Amz-Target") or ""
    call.operation = target.rpartition(".")[2]
    body = request.json
    name = str(body.get("SecretId") or body.get("Name") or "")
    if not name:
        call.permissions.append((f"{call.service}:{call.operation}", "*"))
        return
    if name.startswith("arn:"):
        resource = name
    elif call.service == "ssm":
        resource = f"arn:aws:ssm:{call.region}:{call.account}:parameter/{name.lstrip('/')}"
    else:
        # AWS checks the secret's full ARN, whose last six characters a name does not say.
        resource = f"arn:aws:secretsmanager:{call.region}:{call.account}:secret:{name}"
    call.permissions.append((f"{call.service}:{call.operation}", resource))


# -- the rest: the action from the operation, on "*" ---------------------------------------------------


def _generic(request: StrictRequest, call: Call) -> None:
    target = request.header("X-Amz-Target") or ""
    operation = target.rpartition(".")[2] if target else (request.form_value("Action") or request.method)
    call.operation = operation
    call.permissions.append((f"{call.service}:{operation}", "*"))
