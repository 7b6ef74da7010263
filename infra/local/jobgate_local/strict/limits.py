"""AWS's size and count limits, with the errors AWS answers, where moto checks them partly or not at all.

DynamoDB sizes follow AWS's published rules ("DynamoDB item sizes and formats"): an item is the sum of
its attribute names (UTF-8 bytes) and values; strings count their UTF-8 bytes, numbers one byte per two
significant digits plus one, binaries their raw bytes, booleans and nulls one byte, and lists and maps 3
bytes plus one byte per element. The limit is 400 KB (409,600 bytes).

Request shapes (counts, per-item sizes of what is sent) are checked here before moto sees the request;
what only the stored item knows (an update's resulting size) is checked inside moto's backend, which is
patched to refuse such an update and leave the item as it was (moto alone can apply an oversize update
and raise afterwards).
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import copy
import math
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from typing import Any

from .actions import Call
from .errors import Protocol, sqs_error, validation
from .request import StrictRequest

MAX_ITEM_BYTES = 400 * 1024
MAX_TRANSACTION_ACTIONS = 100
MAX_TRANSACTION_BYTES = 4 * 1024 * 1024
MAX_BATCH_WRITE_REQUESTS = 25
MAX_BATCH_GET_KEYS = 100
MAX_SQS_BATCH_ENTRIES = 10
MAX_SQS_BATCH_BYTES = 1024 * 1024  # SQS's maximum message size, which also caps a whole batch
ITEM_TOO_LARGE = "Item size has exceeded the maximum allowed size"
UPDATE_TOO_LARGE = "Item size to update has exceeded the maximum allowed size"


# -- DynamoDB item sizes --------------------------------------------------------------------------------


def _utf8(text: Any) -> int:
    return len(str(text).encode("utf-8"))


def _raw(binary: Any) -> int:
    if isinstance(binary, bytes | bytearray):
        return len(binary)
    try:
        return len(base64.b64decode(str(binary), validate=False))
    except (binascii.Error, ValueError):
        return _utf8(binary)


def number_size(number: Any) -> int:
    """One byte per two significant digits (leading and trailing zeros trimmed), plus one."""
    try:
        digits = Decimal(str(number)).normalize().as_tuple().digits
    except InvalidOperation:
        return _utf8(number)
    significant = len(digits) if any(digits) else 1
    return math.ceil(significant / 2) + 1


def value_size(value: Mapping[str, Any]) -> int:
    """The size of one attribute value in DynamoDB's JSON form (``{"S": "..."}``)."""
    kind, content = next(iter(value.items()))
    if kind == "S":
        return _utf8(content)
    if kind == "N":
        return number_size(content)
    if kind == "B":
        return _raw(content)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(_utf8(v) for v in content)
    if kind == "NS":
        return sum(number_size(v) for v in content)
    if kind == "BS":
        return sum(_raw(v) for v in content)
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in content)
    if kind == "M":
        return 3 + sum(1 + _utf8(name) + value_size(v) for name, v in content.items())
    return _utf8(content)


def item_size(item: Mapping[str, Mapping[str, Any]]) -> int:
    return sum(_utf8(name) + value_size(value) for name, value in item.items())


# -- request checks ---------------------------------------------------------------------------------------


def check_dynamodb(call: Call, request: StrictRequest) -> None:
    """Counts and sizes DynamoDB refuses in the request itself, before writing anything."""
    body = request.json
    op = call.operation
    if op == "PutItem":
        if item_size(body.get("Item", {})) > MAX_ITEM_BYTES:
            raise validation(call.protocol, ITEM_TOO_LARGE)
    elif op == "BatchWriteItem":
        requests = [r for table in body.get("RequestItems", {}).values() for r in table]
        if len(requests) > MAX_BATCH_WRITE_REQUESTS:
            raise validation(call.protocol, "Too many items requested for the BatchWriteItem call")
        for entry in requests:
            if item_size(entry.get("PutRequest", {}).get("Item", {})) > MAX_ITEM_BYTES:
                raise validation(call.protocol, ITEM_TOO_LARGE)
    elif op == "BatchGetItem":
        keys = sum(len(table.get("Keys", [])) for table in body.get("RequestItems", {}).values())
        if keys > MAX_BATCH_GET_KEYS:
            raise validation(call.protocol, "Too many items requested for the BatchGetItem call")
    elif op in ("TransactWriteItems", "TransactGetItems"):
        actions = body.get("TransactItems", [])
        if len(actions) > MAX_TRANSACTION_ACTIONS:
            raise validation(
                call.protocol,
                "1 validation error detected: Value at 'transactItems' failed to satisfy constraint: "
                f"Member must have length less than or equal to {MAX_TRANSACTION_ACTIONS}",
            )
        if op == "TransactWriteItems" and _transaction_bytes(actions) > MAX_TRANSACTION_BYTES:
            raise validation(call.protocol, "Transaction request cannot be larger than 4 MB")


def _transaction_bytes(actions: list[Mapping[str, Any]]) -> int:
    """What a transaction writes: whole items for Put, keys and values for the others."""
    total = 0
    for entry in actions:
        for action in entry.values():
            if not isinstance(action, Mapping):
                continue
            total += item_size(action.get("Item", {})) + item_size(action.get("Key", {}))
            total += sum(value_size(v) for v in action.get("ExpressionAttributeValues", {}).values())
    return total


def sqs_message_size(body: str, attributes: Mapping[str, Mapping[str, Any]], binary_base64: bool) -> int:
    """SQS counts the body and each attribute's name, data type and value, in bytes."""
    size = _utf8(body)
    for name, attribute in attributes.items():
        size += _utf8(name) + _utf8(attribute.get("DataType", ""))
        if "StringValue" in attribute:
            size += _utf8(attribute["StringValue"])
        if "BinaryValue" in attribute:
            value = attribute["BinaryValue"]
            size += _raw(value) if binary_base64 else _utf8(value)
    return size


def check_sqs(call: Call, request: StrictRequest, max_message_bytes: Callable[[str], int | None]) -> None:
    """Message sizes against the queue's MaximumMessageSize and batch limits, as SQS counts them."""
    op = call.operation
    if op not in ("SendMessage", "SendMessageBatch", "DeleteMessageBatch", "ChangeMessageVisibilityBatch"):
        return
    json_protocol = call.protocol is Protocol.SQS_JSON
    params = request.json if json_protocol else _query_params(request)
    limit = max_message_bytes(call.queue_url or "") or MAX_SQS_BATCH_BYTES
    if op == "SendMessage":
        entries = [params]
    else:
        entries = list(params.get("Entries", []))
        if len(entries) > MAX_SQS_BATCH_ENTRIES:
            raise sqs_error(
                call.protocol,
                "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
                f"Maximum number of entries per request are {MAX_SQS_BATCH_ENTRIES}. "
                f"You have sent {len(entries)}.",
            )
        if op != "SendMessageBatch":
            return
    sizes = [
        sqs_message_size(str(e.get("MessageBody", "")), e.get("MessageAttributes", {}) or {}, json_protocol)
        for e in entries
    ]
    if op == "SendMessageBatch" and sum(sizes) > MAX_SQS_BATCH_BYTES:
        raise sqs_error(
            call.protocol,
            "AWS.SimpleQueueService.BatchRequestTooLong",
            f"Batch requests cannot be longer than {MAX_SQS_BATCH_BYTES} bytes. "
            f"You have sent {sum(sizes)} bytes.",
        )
    if any(size > limit for size in sizes):
        raise sqs_error(
            call.protocol,
            "InvalidParameterValue",
            f"One or more parameters are invalid. Reason: Message must be shorter than {limit} bytes.",
        )


def _query_params(request: StrictRequest) -> dict[str, Any]:
    """The query protocol's flat parameters (``SendMessageBatchRequestEntry.1.MessageBody``) as JSON's."""
    flat = {name: values[0] for name, values in request.form.items() if values}
    params: dict[str, Any] = {"MessageBody": flat.get("MessageBody", "")}
    params["MessageAttributes"] = _query_attributes(flat, "MessageAttribute")
    entries: dict[str, dict[str, Any]] = {}
    for name, value in flat.items():
        for prefix in (
            "SendMessageBatchRequestEntry.",
            "DeleteMessageBatchRequestEntry.",
            "ChangeMessageVisibilityBatchRequestEntry.",
        ):
            if name.startswith(prefix):
                index, _, field = name[len(prefix) :].partition(".")
                entry = entries.setdefault(index, {"_flat": {}})
                entry["_flat"][field] = value
                if field == "MessageBody":
                    entry["MessageBody"] = value
    for entry in entries.values():
        entry["MessageAttributes"] = _query_attributes(entry.pop("_flat"), "MessageAttribute")
    params["Entries"] = list(entries.values())
    return params


def _query_attributes(flat: Mapping[str, str], prefix: str) -> dict[str, dict[str, str]]:
    by_index: dict[str, dict[str, str]] = {}
    for name, value in flat.items():
        if name.startswith(prefix + "."):
            index, _, field = name[len(prefix) + 1 :].partition(".")
            by_index.setdefault(index, {})[field] = value
    attributes: dict[str, dict[str, str]] = {}
    for parts in by_index.values():
        attributes[parts.get("Name", "")] = {
            "DataType": parts.get("Value.DataType", ""),
            **({"StringValue": parts["Value.StringValue"]} if "Value.StringValue" in parts else {}),
            **({"BinaryValue": parts["Value.BinaryValue"]} if "Value.BinaryValue" in parts else {}),
        }
    return attributes


# -- inside moto's DynamoDB -----------------------------------------------------------------------------

_in_transaction: contextvars.ContextVar[bool] = contextvars.ContextVar("in_transaction", default=False)


class ValidationError(Exception):
    """Raised inside a transaction: moto names a cancellation reason after the exception's class, and
    DynamoDB's reason for an item grown too large is ``ValidationError``."""


@contextmanager
def _transaction() -> Iterator[None]:
    token = _in_transaction.set(True)
    try:
        yield
    finally:
        _in_transaction.reset(token)


def _too_large(message: str) -> Exception:
    from moto.dynamodb.exceptions import ItemSizeTooLarge, ItemSizeToUpdateTooLarge

    if _in_transaction.get():
        return ValidationError(message)
    return ItemSizeToUpdateTooLarge() if message == UPDATE_TOO_LARGE else ItemSizeTooLarge()


# Serialises the DynamoDB writes the patched backend makes (a transaction's updates re-enter it).
_WRITES = threading.RLock()


def install_backend_limits() -> None:
    """Patch moto's DynamoDB backend (in the local AWS's own process) to size items as AWS does."""
    from moto.dynamodb import models, responses
    from moto.dynamodb.exceptions import ConditionalCheckFailed
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import LimitedSizeDict

    if getattr(DynamoDBBackend, "_jobgate_limits", False):
        return
    # moto sizes items its own way (and refuses some AWS accepts); the checks here replace it.
    LimitedSizeDict.__setitem__ = dict.__setitem__  # type: ignore[method-assign]
    responses.TRANSACTION_MAX_ITEMS = MAX_TRANSACTION_ACTIONS  # moto still has the pre-2022 limit (25)

    put_item = DynamoDBBackend.put_item
    update_item = DynamoDBBackend.update_item
    delete_item = DynamoDBBackend.delete_item
    transact_write_items = DynamoDBBackend.transact_write_items

    def checked_put_item(
        self: Any, table_name: str, item_attrs: dict[str, Any], *args: Any, **kwargs: Any
    ) -> Any:
        if item_size(item_attrs) > MAX_ITEM_BYTES:
            raise _too_large(ITEM_TOO_LARGE)
        with _WRITES:
            return put_item(self, table_name, item_attrs, *args, **kwargs)

    def checked_update_item(
        self: Any, table_name: str, key: dict[str, Any], *args: Any, **kwargs: Any
    ) -> Any:
        # One write at a time, as DynamoDB applies each write to an item atomically: the snapshot, the
        # update and a put-back must not interleave with another caller's write to the table (moto's
        # server serves requests on threads and its backend takes no lock of its own).
        with _WRITES:
            table = self.get_table(table_name)
            hash_value, range_value = self.get_keys_value(table, key)
            before = copy.deepcopy(table.get_item(hash_value, range_value))
            try:
                item = update_item(self, table_name, key, *args, **kwargs)
            except ConditionalCheckFailed:
                raise  # refused before anything was applied: nothing to put back
            except Exception:
                _restore(table, hash_value, range_value, before)  # moto may have applied part of it
                raise
            if item is not None and item_size(item.to_json()["Attributes"]) > MAX_ITEM_BYTES:
                _restore(table, hash_value, range_value, before)
                raise _too_large(UPDATE_TOO_LARGE)
            return item

    def locked_delete_item(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _WRITES:
            return delete_item(self, *args, **kwargs)

    DynamoDBBackend.put_item = checked_put_item  # type: ignore[method-assign]
    DynamoDBBackend.update_item = checked_update_item  # type: ignore[method-assign]
    DynamoDBBackend.delete_item = locked_delete_item  # type: ignore[method-assign]
    DynamoDBBackend.transact_write_items = _restoring(transact_write_items)  # type: ignore[method-assign]
    models.copy = _TablesUncopied()  # type: ignore[assignment, attr-defined]
    setattr(DynamoDBBackend, "_jobgate_limits", True)  # noqa: B010 (a marker moto does not declare)


def _restoring(transact_write_items: Callable[..., Any]) -> Callable[..., Any]:
    """moto's transact_write_items, one at a time, putting back the items it names when it fails."""

    def checked_transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> Any:
        # moto backs up every table it touches (a deep copy of the whole table, on every transaction)
        # and puts the copy back on failure: under load that is seconds per write, with every other
        # write waiting. Writes are serialised here, so the items the transaction names, as they were,
        # are backup enough: moto's copy is skipped (`_TablesUncopied`) and these are put back instead.
        with _WRITES, _transaction():
            before = [_snapshot(self, action) for action in transact_items]
            try:
                return transact_write_items(self, transact_items)
            except Exception:
                for table, hash_value, range_value, item in before:
                    if table is not None:
                        _restore(table, hash_value, range_value, item)
                raise

    return checked_transact_write_items


class _TablesUncopied:
    """`copy` as moto's DynamoDB backend module sees it: a whole table is not copied (its transactions'
    backups; checked_transact_write_items keeps the items it touches instead), anything else is."""

    def deepcopy(self, value: Any, memo: dict[int, Any] | None = None) -> Any:
        from moto.dynamodb.models.table import Table

        return value if isinstance(value, Table) else copy.deepcopy(value, memo)


def _snapshot(backend: Any, action: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """The item one action of a transaction names, as it is now (None: no such item)."""
    op = next(iter(action.values()), None)
    if not isinstance(op, dict) or op.get("TableName") not in backend.tables:
        return None, None, None, None
    table = backend.tables[op["TableName"]]
    key = op.get("Key")
    if key is None and isinstance(op.get("Item"), dict):
        names = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
        key = {name: op["Item"][name] for name in names if name in op["Item"]}
    try:
        hash_value, range_value = backend.get_keys_value(table, key)
    except Exception:  # noqa: BLE001 - a malformed key: moto refuses it before writing anything
        return None, None, None, None
    return table, hash_value, range_value, copy.deepcopy(table.get_item(hash_value, range_value))


def _restore(table: Any, hash_value: Any, range_value: Any, before: Any) -> None:
    """Put an item back as it was before an update moto may have half applied (or remove a new one)."""
    if before is None:
        if table.get_item(hash_value, range_value) is not None:
            table.delete_item(hash_value, range_value)
    elif table.range_key_attr is not None:
        table.items[hash_value][range_value] = before
    else:
        table.items[hash_value] = before
