"""The local AWS's data kept across `jobgate dev` restarts: saved when the stack stops, restored at start.

What is kept, by the template's logical ids (moto names resources anew each start): every item of every
table, every object of every bucket (body, content type, metadata), and every message waiting in every
queue (body and message attributes). Saved through the AWS APIs as the stack's admin identity, after the
functions and event sources have stopped, so nothing changes meanwhile; restored the same way before any
function starts. Roles and their credentials are made anew at each start from the template, so what is
restored is reached through IAM like everything else. Not kept: messages in flight at the stop (their
jobs' leases run out and the sweeper hands them on, as after a crashed worker), open multipart uploads,
WebSocket connections.

Layout of the folder (`.jobgate/aws/`): `saved.json` (what was saved, when), `tables/<logical>.jsonl` (one
item a line, in DynamoDB's typed JSON), `buckets/<logical>/<n>` (object bodies), `queues/<logical>.jsonl`.
A save is written beside the old one and swapped in whole, so a stack killed mid-save keeps the last one.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .provision import aws_client

logger = logging.getLogger(__name__)

FORMAT = 1
TABLE, BUCKET, QUEUE = "AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::SQS::Queue"
_BATCH_WRITE = 25  # DynamoDB's BatchWriteItem limit
_SEND_BATCH = 10  # SQS's SendMessageBatch limit


@dataclass
class Counts:
    """How much was saved or restored, for one log line."""

    items: int = 0
    objects: int = 0
    messages: int = 0
    skipped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"{self.items} items, {self.objects} objects, {self.messages} queued messages"
        return text + (f" (not restored: {', '.join(self.skipped)})" if self.skipped else "")


class SavedAws:
    """The saved data of one checkout's local AWS, in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def exists(self) -> bool:
        return (self.folder / "saved.json").is_file()

    def forget(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- save -------------------------------------------------------------------------------------

    def save(self, endpoint_url: str, resources: Mapping[str, str], types: Mapping[str, str]) -> Counts:
        """Save every table, bucket and queue of `resources` (logical id -> physical id)."""
        pending = self.folder.with_name(self.folder.name + ".saving")
        shutil.rmtree(pending, ignore_errors=True)
        pending.mkdir(parents=True)
        counts = Counts()
        saved: dict[str, str] = {}
        for logical_id, physical_id in sorted(resources.items()):
            kind = types.get(logical_id)
            if kind == TABLE:
                counts.items += _save_table(
                    endpoint_url, physical_id, pending / "tables" / f"{logical_id}.jsonl"
                )
            elif kind == BUCKET:
                counts.objects += _save_bucket(endpoint_url, physical_id, pending / "buckets" / logical_id)
            elif kind == QUEUE:
                counts.messages += _save_queue(
                    endpoint_url, physical_id, pending / "queues" / f"{logical_id}.jsonl"
                )
            else:
                continue
            saved[logical_id] = kind
        manifest = {"format": FORMAT, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (pending / "saved.json").write_text(json.dumps({**manifest, "resources": saved}, indent=2) + "\n")
        previous = self.folder.with_name(self.folder.name + ".previous")
        shutil.rmtree(previous, ignore_errors=True)
        if self.folder.exists():
            self.folder.rename(previous)
        pending.rename(self.folder)
        shutil.rmtree(previous, ignore_errors=True)
        return counts

    # -- restore ----------------------------------------------------------------------------------

    def restore(self, endpoint_url: str, resources: Mapping[str, str], types: Mapping[str, str]) -> Counts:
        """Put what was saved back into the resources of the same logical ids (others are named, not put)."""
        manifest = json.loads((self.folder / "saved.json").read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{self.folder} holds data saved in another format ({manifest.get('format')})")
        counts = Counts()
        for logical_id, kind in sorted(manifest["resources"].items()):
            physical_id = resources.get(logical_id)
            if physical_id is None or types.get(logical_id) != kind:
                counts.skipped.append(logical_id)  # the template no longer has it
                continue
            if kind == TABLE:
                counts.items += _restore_table(
                    endpoint_url, physical_id, self.folder / "tables" / f"{logical_id}.jsonl"
                )
            elif kind == BUCKET:
                counts.objects += _restore_bucket(
                    endpoint_url, physical_id, self.folder / "buckets" / logical_id
                )
            elif kind == QUEUE:
                counts.messages += _restore_queue(
                    endpoint_url, physical_id, self.folder / "queues" / f"{logical_id}.jsonl"
                )
        return counts


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        return
    with path.open() as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _save_table(endpoint_url: str, table: str, path: Path) -> int:
    dynamodb = aws_client("dynamodb", endpoint_url)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w") as fh:
        for page in dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
            for item in page["Items"]:
                fh.write(json.dumps(item, default=_binary) + "\n")
                count += 1
    return count


def _binary(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"__bytes__": bytes(value).hex()}
    raise TypeError(f"cannot save {type(value).__name__}")


def _unbinary(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__bytes__"}:
            return bytes.fromhex(value["__bytes__"])
        return {k: _unbinary(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unbinary(v) for v in value]
    return value


def _restore_table(endpoint_url: str, table: str, path: Path) -> int:
    dynamodb = aws_client("dynamodb", endpoint_url)
    batch: list[dict[str, Any]] = []
    count = 0

    def flush() -> None:
        pending: dict[str, Any] = {table: [{"PutRequest": {"Item": item}} for item in batch]}
        while pending:
            pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
        batch.clear()

    for item in _lines(path):
        batch.append(_unbinary(item))
        count += 1
        if len(batch) == _BATCH_WRITE:
            flush()
    if batch:
        flush()
    return count


def _save_bucket(endpoint_url: str, bucket: str, folder: Path) -> int:
    s3 = aws_client("s3", endpoint_url)
    folder.mkdir(parents=True, exist_ok=True)
    index: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for listed in page.get("Contents", []):
            got = s3.get_object(Bucket=bucket, Key=listed["Key"])
            body = folder / str(len(index))
            with body.open("wb") as fh:
                for chunk in got["Body"].iter_chunks(1024 * 1024):
                    fh.write(chunk)
            index.append(
                {
                    "key": listed["Key"],
                    "file": body.name,
                    "content_type": got.get("ContentType"),
                    "metadata": got.get("Metadata") or {},
                }
            )
    (folder / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return len(index)


def _restore_bucket(endpoint_url: str, bucket: str, folder: Path) -> int:
    index_file = folder / "index.json"
    if not index_file.is_file():
        return 0
    s3 = aws_client("s3", endpoint_url)
    index = json.loads(index_file.read_text())
    for entry in index:
        extra: dict[str, Any] = {"Metadata": entry["metadata"]}
        if entry.get("content_type"):
            extra["ContentType"] = entry["content_type"]
        with (folder / entry["file"]).open("rb") as fh:
            s3.put_object(Bucket=bucket, Key=entry["key"], Body=fh, **extra)
    return len(index)


def _save_queue(endpoint_url: str, queue_url: str, path: Path) -> int:
    """Take every visible message off the queue (the stack is stopping; nothing else reads it)."""
    sqs = aws_client("sqs", endpoint_url)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w") as fh:
        while True:
            answer = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                VisibilityTimeout=60,
                MessageAttributeNames=["All"],
            )
            messages = answer.get("Messages", [])
            if not messages:
                return count
            for message in messages:
                attributes = {
                    name: {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
                    for name, value in (message.get("MessageAttributes") or {}).items()
                }
                kept = {"body": message["Body"], "attributes": attributes}
                fh.write(json.dumps(kept, default=_binary) + "\n")
                count += 1


def _restore_queue(endpoint_url: str, queue_url: str, path: Path) -> int:
    sqs = aws_client("sqs", endpoint_url)
    messages = list(_lines(path))
    for start in range(0, len(messages), _SEND_BATCH):
        entries = [
            {"Id": str(n), "MessageBody": m["body"], "MessageAttributes": _unbinary(m["attributes"])}
            for n, m in enumerate(messages[start : start + _SEND_BATCH])
        ]
        failed = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed") or []
        if failed:
            raise RuntimeError(f"could not restore messages of {queue_url}: {failed}")
    return len(messages)
