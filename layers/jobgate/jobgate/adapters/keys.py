"""DynamoDB adapter for API keys: one item per key, found by the SHA-256 of the key, never the key."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from jobgate.adapters.dynamo import _guard, _is_conditional_failure, _marshal, _unmarshal, _values, items_of
from jobgate.errors import Conflict, NotFound, StoreError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

KEY_SK = "KEY"

KeyState = Literal["active", "revoked", "expired"]


def _key_pk(key_hash: str) -> str:
    return f"KEY#{key_hash}"


def _tenant_keys(tenant: str) -> str:
    return f"TENANT#{tenant}#KEYS"


class ApiKeyRecord(BaseModel):
    """What the table keeps of a key: its hash and who it belongs to; the key itself is never stored."""

    key_id: str
    tenant: str
    name: str
    key_hash: str
    created_at: datetime
    expires: datetime | None = None
    revoked_at: datetime | None = None

    def state(self, now: datetime) -> KeyState:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires is not None and self.expires <= now:
            return "expired"
        return "active"


class KeyStore:
    """Key items live in the jobs table: pk `KEY#<sha256>`, listed per tenant through gsi1.

    A revoked or expired key keeps its item (so `keys list` shows it) until the table's TTL removes
    it `retention` after it stopped working.
    """

    def __init__(self, client: DynamoDBClient, table_name: str, retention: timedelta) -> None:
        self._db = client
        self._table = table_name
        self._retention = retention

    def _item(self, record: ApiKeyRecord) -> dict[str, Any]:
        doc = record.model_dump(mode="json")
        doc.update(
            pk=_key_pk(record.key_hash),
            sk=KEY_SK,
            gsi1pk=_tenant_keys(record.tenant),
            gsi1sk=record.key_id,
        )
        if record.expires is not None:
            doc["expires_at"] = int((record.expires + self._retention).timestamp())
        return _marshal(doc)

    def put(self, record: ApiKeyRecord) -> ApiKeyRecord:
        try:
            self._db.put_item(
                TableName=self._table, Item=self._item(record), ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as exc:
            if _is_conditional_failure(exc):
                raise Conflict("A key with this hash exists already.") from exc
            raise StoreError(f"DynamoDB call failed: {exc.response.get('Error', {}).get('Code')}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"DynamoDB unreachable: {exc}") from exc
        return record

    def find(self, key_hash: str) -> ApiKeyRecord | None:
        """The key with this hash; a consistent read, so a revocation counts from the next request."""
        key = {"pk": {"S": _key_pk(key_hash)}, "sk": {"S": KEY_SK}}
        got = _guard(lambda: self._db.get_item(TableName=self._table, Key=key, ConsistentRead=True))
        return ApiKeyRecord.model_validate(_unmarshal(got["Item"])) if "Item" in got else None

    def list_keys(self, tenant: str) -> list[ApiKeyRecord]:
        """Every key of the tenant, newest first."""
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": "gsi1",
            "KeyConditionExpression": "gsi1pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": _tenant_keys(tenant)}},
            "ScanIndexForward": False,
        }
        records: list[ApiKeyRecord] = []
        while True:
            got = _guard(lambda: self._db.query(**query))
            items = items_of(self._db, self._table, got.get("Items", []), consistent=True)
            records.extend(ApiKeyRecord.model_validate(_unmarshal(i)) for i in items)
            if "LastEvaluatedKey" not in got:
                return records
            query["ExclusiveStartKey"] = got["LastEvaluatedKey"]

    def revoke(self, tenant: str, key_id: str, *, now: datetime) -> ApiKeyRecord:
        """Mark the key revoked; revoking a revoked key answers it unchanged."""
        found = next((r for r in self.list_keys(tenant) if r.key_id == key_id), None)
        if found is None:
            raise NotFound(f"Tenant '{tenant}' has no key '{key_id}'.")
        try:
            got = self._db.update_item(
                TableName=self._table,
                Key={"pk": {"S": _key_pk(found.key_hash)}, "sk": {"S": KEY_SK}},
                UpdateExpression="SET revoked_at = :now, expires_at = :ttl",
                ConditionExpression=(
                    "attribute_exists(pk) AND tenant = :tenant AND attribute_not_exists(revoked_at)"
                ),
                ExpressionAttributeValues=_values(
                    now=now.isoformat(), ttl=int((now + self._retention).timestamp()), tenant=tenant
                ),
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _is_conditional_failure(exc):
                return self.find(found.key_hash) or found
            raise StoreError(f"DynamoDB update failed: {exc.response.get('Error', {}).get('Code')}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"DynamoDB unreachable: {exc}") from exc
        return ApiKeyRecord.model_validate(_unmarshal(got["Attributes"]))
