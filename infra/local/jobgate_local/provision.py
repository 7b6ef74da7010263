"""Creates the template's data resources in moto: through moto's CloudFormation, then what it skips.

moto's CloudFormation builds DynamoDB tables (keys, GSIs, billing, SSE), SQS queues (every attribute,
redrive policy included) and S3 buckets (encryption, tags) from the translated template. It ignores a
few properties and cannot create bucket or queue policies; those are applied through the service APIs
with the values the template gives, so the template stays the one place they are written down.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from .functions import REGION
from .template import Resolver, Template, TemplateError, references

logger = logging.getLogger(__name__)

PROVISIONED_TYPES = ("AWS::DynamoDB::Table", "AWS::SQS::Queue", "AWS::S3::Bucket")

# What moto's CloudFormation reads for each type (moto 5.x); None means every property.
_MOTO_CFN_PROPERTIES: dict[str, frozenset[str] | None] = {
    "AWS::DynamoDB::Table": frozenset(
        {
            "TableName",
            "KeySchema",
            "AttributeDefinitions",
            "GlobalSecondaryIndexes",
            "LocalSecondaryIndexes",
            "ProvisionedThroughput",
            "StreamSpecification",
            "Tags",
            "DeletionProtectionEnabled",
            "SSESpecification",
            "BillingMode",
            "WarmThroughput",
        }
    ),
    "AWS::SQS::Queue": None,
    "AWS::S3::Bucket": frozenset({"BucketName", "BucketEncryption", "Tags"}),
}
# What the local stack applies itself through the service APIs after moto created the resource.
_API_APPLIED: dict[str, frozenset[str]] = {
    "AWS::DynamoDB::Table": frozenset({"TimeToLiveSpecification", "PointInTimeRecoverySpecification"}),
    "AWS::SQS::Queue": frozenset(),
    "AWS::S3::Bucket": frozenset(
        {
            "LifecycleConfiguration",
            "CorsConfiguration",
            "PublicAccessBlockConfiguration",
            "OwnershipControls",
            "VersioningConfiguration",
            "NotificationConfiguration",
        }
    ),
}
_POLICY_TYPES = ("AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy")

LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


def aws_client(service: str, endpoint_url: str) -> Any:
    """A boto3 client for the local endpoint, with the fake credentials moto accepts."""
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=LOCAL_CREDENTIALS["AWS_SESSION_TOKEN"],
    )


@dataclass(frozen=True)
class ProvisionedStack:
    """What moto created: each resource's Ref value and the GetAtt values the template uses."""

    stack_name: str
    endpoint_url: str
    physical_ids: dict[str, str]
    resource_types: dict[str, str]
    attributes: dict[tuple[str, str], str]

    def queue_urls_by_arn(self) -> dict[str, str]:
        return {
            self.attributes[(lid, "Arn")]: url
            for lid, url in self.physical_ids.items()
            if self.resource_types.get(lid) == "AWS::SQS::Queue" and (lid, "Arn") in self.attributes
        }


def provision(template: Template, endpoint_url: str) -> ProvisionedStack:
    """Create the data resources in moto and apply what its CloudFormation leaves out."""
    resources = template.resources
    provisioned = [lid for lid in template.logical_ids(*PROVISIONED_TYPES) if template.active(lid)]
    body = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": template.cfn.get("Parameters", {}),
        "Resources": {lid: _moto_resource(template, lid, set(provisioned)) for lid in provisioned},
    }
    wanted = sorted(_wanted_attributes(template, set(provisioned)))
    body["Outputs"] = {
        f"Att{index}": {"Value": {"Fn::GetAtt": [lid, attribute]}}
        for index, (lid, attribute) in enumerate(wanted)
    }
    cloudformation = aws_client("cloudformation", endpoint_url)
    try:
        cloudformation.create_stack(
            StackName=template.stack_name,
            TemplateBody=json.dumps(body),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in template.parameters.items()],
        )
        stack = cloudformation.describe_stacks(StackName=template.stack_name)["Stacks"][0]
        stack_resources = cloudformation.describe_stack_resources(StackName=template.stack_name)[
            "StackResources"
        ]
    except (ClientError, BotoCoreError) as exc:
        raise TemplateError(f"moto could not create the template's resources: {exc}") from exc
    if stack["StackStatus"] != "CREATE_COMPLETE":
        raise TemplateError(
            f"moto left the stack in {stack['StackStatus']}: {stack.get('StackStatusReason', '')}"
        )
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    result = ProvisionedStack(
        stack_name=template.stack_name,
        endpoint_url=endpoint_url,
        physical_ids={r["LogicalResourceId"]: r["PhysicalResourceId"] for r in stack_resources},
        resource_types={lid: resources[lid]["Type"] for lid in provisioned},
        attributes={key: outputs[f"Att{index}"] for index, key in enumerate(wanted)},
    )
    resolver = Resolver(
        {**template.pseudo_parameters(), **template.parameters},
        result.physical_ids,
        result.attributes,
        {lid: res["Type"] for lid, res in resources.items()},
        template.conditions,
    )
    _apply_skipped_properties(template, result, resolver)
    _apply_policies(template, result, resolver)
    _create_secrets(template, result, resolver)
    return result


def _create_secrets(template: Template, stack: ProvisionedStack, resolver: Resolver) -> None:
    """Secrets Manager secrets (moto's CloudFormation makes none): created through the API, their Ref
    the ARN, as on AWS."""
    client = aws_client("secretsmanager", stack.endpoint_url)
    for logical_id in template.logical_ids("AWS::SecretsManager::Secret"):
        properties = template.resources[logical_id].get("Properties", {})
        value = resolver.resolve_string(properties.get("SecretString", ""))
        name = f"{stack.stack_name}-{logical_id}"
        try:
            arn = client.create_secret(Name=name, SecretString=value)["ARN"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceExistsException":
                raise TemplateError(f"moto could not create the secret {logical_id}: {exc}") from exc
            arn = client.put_secret_value(SecretId=name, SecretString=value)["ARN"]
        stack.physical_ids[logical_id] = arn


def _moto_resource(template: Template, logical_id: str, provisioned: set[str]) -> dict[str, Any]:
    """The resource as moto's CloudFormation can take it; anything it would trip on is left out."""
    resource = template.resources[logical_id]
    kind = resource["Type"]
    readable = _MOTO_CFN_PROPERTIES[kind]
    known = provisioned | set(template.parameters) | set(template.pseudo_parameters()) | {"AWS::NoValue"}
    properties: dict[str, Any] = {}
    for name, value in resource.get("Properties", {}).items():
        if readable is not None and name not in readable:
            if name not in _API_APPLIED[kind]:
                logger.info("not emulated locally: %s.%s", logical_id, name)
            continue
        foreign = sorted({lid for lid, _ in references(value)} - known)
        if foreign:
            logger.warning("not emulated locally: %s.%s (refers to %s)", logical_id, name, ", ".join(foreign))
            continue
        properties[name] = value
    moto_resource: dict[str, Any] = {"Type": kind, "Properties": properties}
    depends_on = resource.get("DependsOn")
    if depends_on:
        kept = [d for d in ([depends_on] if isinstance(depends_on, str) else depends_on) if d in provisioned]
        if kept:
            moto_resource["DependsOn"] = kept
    return moto_resource


def _wanted_attributes(template: Template, provisioned: set[str]) -> set[tuple[str, str]]:
    """The GetAtt values of provisioned resources anything outside moto's stack will need."""
    wanted = {(lid, "Arn") for lid in provisioned if template.resources[lid]["Type"] == "AWS::SQS::Queue"}
    fragments: list[Any] = []
    for lid, resource in template.resources.items():
        kind = resource.get("Type")
        properties = resource.get("Properties", {})
        if kind == "AWS::Lambda::Function":
            fragments.append(properties.get("Environment", {}))
        elif kind == "AWS::Lambda::EventSourceMapping":
            fragments.append(properties.get("EventSourceArn"))
        elif kind in _POLICY_TYPES:
            fragments.append(properties)
        elif kind == "AWS::IAM::Role":  # the functions' roles are created locally (identities.py)
            fragments.append(properties.get("Policies", []))
        elif kind in _API_APPLIED and lid in provisioned:
            fragments.append({name: properties[name] for name in _API_APPLIED[kind] if name in properties})
    for fragment in fragments:
        wanted.update(
            (lid, attr) for lid, attr in references(fragment) if lid in provisioned and attr is not None
        )
    return wanted


def _apply_skipped_properties(template: Template, stack: ProvisionedStack, resolver: Resolver) -> None:
    dynamodb = aws_client("dynamodb", stack.endpoint_url)
    s3 = aws_client("s3", stack.endpoint_url)
    for lid, kind in stack.resource_types.items():
        properties = resolver.resolve(
            {
                k: v
                for k, v in template.resources[lid].get("Properties", {}).items()
                if k in _API_APPLIED[kind]
            }
        )
        name = stack.physical_ids[lid]
        if kind == "AWS::DynamoDB::Table":
            _apply_table(dynamodb, name, properties)
        elif kind == "AWS::S3::Bucket":
            _apply_bucket(s3, name, properties)


def _apply_table(dynamodb: Any, name: str, properties: Mapping[str, Any]) -> None:
    ttl = properties.get("TimeToLiveSpecification")
    if ttl:
        dynamodb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={
                "AttributeName": ttl["AttributeName"],
                "Enabled": _bool(ttl.get("Enabled")),
            },
        )
    recovery = properties.get("PointInTimeRecoverySpecification")
    if recovery:
        dynamodb.update_continuous_backups(
            TableName=name,
            PointInTimeRecoverySpecification={
                "PointInTimeRecoveryEnabled": _bool(recovery.get("PointInTimeRecoveryEnabled"))
            },
        )


def _apply_bucket(s3: Any, name: str, properties: Mapping[str, Any]) -> None:
    if "PublicAccessBlockConfiguration" in properties:
        block = {k: _bool(v) for k, v in properties["PublicAccessBlockConfiguration"].items()}
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=block)
    if "OwnershipControls" in properties:
        s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=properties["OwnershipControls"])
    if "VersioningConfiguration" in properties:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration=properties["VersioningConfiguration"])
    if "CorsConfiguration" in properties:
        rules = [_cors_rule(rule) for rule in properties["CorsConfiguration"].get("CorsRules", [])]
        s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": rules})
    if "LifecycleConfiguration" in properties:
        rules = [_lifecycle_rule(rule) for rule in properties["LifecycleConfiguration"].get("Rules", [])]
        s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": rules})
    if "NotificationConfiguration" in properties:
        s3.put_bucket_notification_configuration(
            Bucket=name,
            NotificationConfiguration=_notifications(name, properties["NotificationConfiguration"]),
        )


def _notifications(bucket: str, configuration: Mapping[str, Any]) -> dict[str, Any]:
    """S3 event notifications to SQS and SNS, which moto delivers; to Lambda they are not emulated."""
    converted: dict[str, Any] = {}
    for kind, target_key, api_key in (
        ("QueueConfigurations", "Queue", "QueueArn"),
        ("TopicConfigurations", "Topic", "TopicArn"),
    ):
        entries = []
        for entry in configuration.get(kind, []):
            notification: dict[str, Any] = {api_key: entry[target_key], "Events": [entry["Event"]]}
            rules = entry.get("Filter", {}).get("S3Key", {}).get("Rules", [])
            if rules:
                notification["Filter"] = {
                    "Key": {"FilterRules": [{"Name": r["Name"], "Value": r["Value"]} for r in rules]}
                }
            entries.append(notification)
        if entries:
            converted[kind] = entries
    if configuration.get("LambdaConfigurations"):
        logger.warning("not emulated locally: S3 notifications from %s straight to Lambda", bucket)
    if configuration.get("EventBridgeConfiguration"):
        logger.warning("not emulated locally: EventBridge notifications from %s", bucket)
    return converted


def _cors_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    renamed = {"Id": "ID", "ExposedHeaders": "ExposeHeaders", "MaxAge": "MaxAgeSeconds"}
    converted = {renamed.get(key, key): value for key, value in rule.items()}
    if "MaxAgeSeconds" in converted:
        converted["MaxAgeSeconds"] = int(converted["MaxAgeSeconds"])
    return converted


def _lifecycle_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule in the shape PutBucketLifecycleConfiguration takes."""
    converted: dict[str, Any] = {"Status": rule["Status"], "Filter": {"Prefix": rule.get("Prefix", "")}}
    if "Id" in rule:
        converted["ID"] = rule["Id"]
    if rule.get("TagFilters"):
        tags = [{"Key": t["Key"], "Value": t["Value"]} for t in rule["TagFilters"]]
        converted["Filter"] = {"And": {"Prefix": rule.get("Prefix", ""), "Tags": tags}}
    expiration: dict[str, Any] = {}
    if "ExpirationInDays" in rule:
        expiration["Days"] = int(rule["ExpirationInDays"])
    if "ExpirationDate" in rule:
        expiration["Date"] = rule["ExpirationDate"]
    if "ExpiredObjectDeleteMarker" in rule:
        expiration["ExpiredObjectDeleteMarker"] = _bool(rule["ExpiredObjectDeleteMarker"])
    if expiration:
        converted["Expiration"] = expiration
    if "AbortIncompleteMultipartUpload" in rule:
        days = int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
        converted["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
    if "NoncurrentVersionExpirationInDays" in rule:
        converted["NoncurrentVersionExpiration"] = {
            "NoncurrentDays": int(rule["NoncurrentVersionExpirationInDays"])
        }
    if "Transitions" in rule:
        converted["Transitions"] = [
            {"Days": int(t["TransitionInDays"]), "StorageClass": t["StorageClass"]}
            for t in rule["Transitions"]
            if "TransitionInDays" in t
        ]
    return converted


def _apply_policies(template: Template, stack: ProvisionedStack, resolver: Resolver) -> None:
    """Bucket and queue policies, which moto's CloudFormation cannot create."""
    for lid in template.logical_ids(*_POLICY_TYPES):
        resource = template.resources[lid]
        properties = resolver.resolve(resource.get("Properties", {}))
        policy = _for_plain_http(lid, properties["PolicyDocument"])
        if policy is None:
            continue
        document = json.dumps(policy)
        if resource["Type"] == "AWS::S3::BucketPolicy":
            aws_client("s3", stack.endpoint_url).put_bucket_policy(
                Bucket=properties["Bucket"], Policy=document
            )
        else:
            sqs = aws_client("sqs", stack.endpoint_url)
            for queue_url in properties.get("Queues", []):
                sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": document})


def _for_plain_http(logical_id: str, policy: Mapping[str, Any]) -> dict[str, Any] | None:
    """The policy without statements about aws:SecureTransport: the local endpoint is plain HTTP, and moto
    enforces bucket policies, so a deny-insecure-transport statement would refuse every request."""
    statements = policy.get("Statement", [])
    statements = [statements] if isinstance(statements, dict) else statements
    kept = [s for s in statements if "aws:SecureTransport" not in json.dumps(s.get("Condition", {}))]
    if len(kept) < len(statements):
        logger.info("not emulated locally: the aws:SecureTransport statements of %s (plain HTTP)", logical_id)
    return {**policy, "Statement": kept} if kept else None


def _bool(value: Any) -> bool:
    return value is True or str(value).lower() == "true"
