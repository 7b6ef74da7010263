"""Lambda's SQS event source mapping, played locally: poll, batch, invoke, delete what succeeded.

A failed invoke (error, timeout, crash) deletes nothing; a partial batch response deletes all but the
reported items. What is not deleted becomes visible again after the queue's visibility timeout, and
after ``maxReceiveCount`` receives moto's SQS moves it to the dead-letter queue itself (on the next
receive), as SQS does; the poller does no redrive of its own.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .components import RunningStack
from .functions import MAX_SYNC_PAYLOAD_BYTES, REGION, FunctionPool, InvokeResult, PoolClosedError
from .procs import StartupError
from .provision import aws_client
from .template import SqsEventSource, Template, sqs_event_sources

logger = logging.getLogger(__name__)

_MAX_RECEIVE = 10  # SQS hands out at most ten messages per ReceiveMessage


def build_sqs_event(
    messages: Sequence[Mapping[str, Any]], queue_arn: str, region: str = REGION
) -> dict[str, Any]:
    """The event Lambda sends for a batch of SQS messages."""
    return {"Records": [_record(message, queue_arn, region) for message in messages]}


def _record(message: Mapping[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: _message_attribute(value) for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    record.update({"eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": region})
    return record


def _message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    attribute: dict[str, Any] = {}
    if "StringValue" in value:
        attribute["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        binary = value["BinaryValue"]
        attribute["binaryValue"] = base64.b64encode(binary).decode() if isinstance(binary, bytes) else binary
    attribute["stringListValues"] = list(value.get("StringListValues", []))
    attribute["binaryListValues"] = [
        base64.b64encode(v).decode() if isinstance(v, bytes) else v for v in value.get("BinaryListValues", [])
    ]
    attribute["dataType"] = value["DataType"]
    return attribute


def failed_message_ids(
    result: InvokeResult, message_ids: Sequence[str], report_failures: bool
) -> set[str] | None:
    """The messages to keep after an invoke; None when the whole batch failed (keep them all).

    Follows Lambda's rules for partial batch responses: no or an empty ``batchItemFailures`` is a
    complete success; an item without a valid ``itemIdentifier`` of this batch fails the whole batch.
    """
    if not result.ok:
        return None
    if not report_failures or not isinstance(result.payload, dict):
        return set()
    failures = result.payload.get("batchItemFailures")
    if not failures:
        return set()
    if not isinstance(failures, list):
        return None
    failed: set[str] = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not identifier or identifier not in message_ids:
            return None
        failed.add(identifier)
    return failed


class SqsPoller:
    """One event source mapping: ``concurrency`` pollers, each with one batch in flight at a time."""

    def __init__(
        self,
        source: SqsEventSource,
        pool: FunctionPool,
        endpoint_url: str,
        *,
        concurrency: int,
        wait_time_s: int = 1,
    ) -> None:
        self.source = source
        self._pool = pool
        self._endpoint_url = endpoint_url
        self._concurrency = max(1, min(concurrency, source.maximum_concurrency or concurrency))
        # Lambda long-polls for 20 s; a short wait keeps Ctrl-C quick and costs nothing locally.
        self._wait_time_s = wait_time_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self._concurrency):
            thread = threading.Thread(
                target=self._run, name=f"poll-{self.source.logical_id}-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float | None = None) -> None:
        """Stop polling; a poller still waiting on an invoke ends when its sandbox answers or is stopped."""
        self._stop.set()
        deadline = time.monotonic() + (self._wait_time_s + 1.0 if timeout is None else timeout)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        sqs = aws_client("sqs", self._endpoint_url)
        while not self._stop.is_set():
            try:
                messages = self._receive(sqs)
                if messages:
                    self._process(sqs, messages)
            except PoolClosedError:
                return
            except (ClientError, BotoCoreError) as exc:
                if self._stop.is_set():
                    return
                logger.warning("%s: SQS call failed: %s", self.source.logical_id, exc)
                self._stop.wait(1.0)

    def _receive(self, sqs: Any) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        window_ends = time.monotonic() + self.source.batching_window_s
        wait = self._wait_time_s
        while len(messages) < self.source.batch_size and not self._stop.is_set():
            response = sqs.receive_message(
                QueueUrl=self.source.queue_url,
                MaxNumberOfMessages=min(_MAX_RECEIVE, self.source.batch_size - len(messages)),
                WaitTimeSeconds=wait,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            received = response.get("Messages", [])
            messages.extend(received)
            remaining = window_ends - time.monotonic()
            if (messages and remaining <= 0) or (not received and messages):
                break
            if not messages:
                return []
            wait = max(0, min(self._wait_time_s, int(remaining)))
        return messages

    def _process(self, sqs: Any, messages: Sequence[Mapping[str, Any]]) -> None:
        # Lambda never hands a function a batch over its 6 MB payload limit: what does not fit goes
        # in the next batch.
        fitting = len(messages)
        while (
            fitting > 1 and _payload_bytes(messages[:fitting], self.source.queue_arn) > MAX_SYNC_PAYLOAD_BYTES
        ):
            fitting -= 1
        if fitting < len(messages):
            self._process(sqs, messages[:fitting])
            self._process(sqs, messages[fitting:])
            return
        event = build_sqs_event(messages, self.source.queue_arn)
        result = self._pool.invoke(event)
        if self._stop.is_set() and not result.ok:
            return  # the stack is stopping: the sandbox was stopped under the invoke
        ids = [m["MessageId"] for m in messages]
        failed = failed_message_ids(result, ids, self.source.report_batch_item_failures)
        if failed is None:
            reason = (
                f"{result.error.error_type}: {result.error.message}"
                if result.error
                else "invalid batch response"
            )
            logger.warning(
                "%s: batch of %d failed (%s); the messages return after the visibility timeout",
                self.source.function,
                len(messages),
                reason,
            )
            return
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), _MAX_RECEIVE):
            entries = [
                {"Id": str(index), "ReceiptHandle": m["ReceiptHandle"]}
                for index, m in enumerate(done[start : start + _MAX_RECEIVE])
            ]
            sqs.delete_message_batch(QueueUrl=self.source.queue_url, Entries=entries)
        if failed:
            logger.info(
                "%s: %d of %d messages reported as failed", self.source.function, len(failed), len(messages)
            )


def _payload_bytes(messages: Sequence[Mapping[str, Any]], queue_arn: str) -> int:
    return len(json.dumps(build_sqs_event(messages, queue_arn)).encode())


def check_visibility_timeout(
    source: SqsEventSource, visibility_timeout_s: int, function_timeout_s: float
) -> None:
    """Lambda refuses an SQS event source whose queue hides a message for less than the function may run."""
    if visibility_timeout_s < function_timeout_s:
        timeout = (
            int(function_timeout_s) if function_timeout_s == int(function_timeout_s) else function_timeout_s
        )
        raise StartupError(
            f"{source.logical_id}: InvalidParameterValueException: Queue visibility timeout: "
            f"{visibility_timeout_s} seconds is less than Function timeout: {timeout} seconds"
        )


class SqsEventSources:
    """Component: every SQS event source mapping of the template, each with ``workers`` pollers."""

    name = "sqs"

    def __init__(self, workers: int, *, wait_time_s: int = 1) -> None:
        self._workers = workers
        self._wait_time_s = wait_time_s
        self._pollers: list[SqsPoller] = []

    def reserve(self) -> None:
        pass

    def played_resources(self, template: Template) -> Mapping[str, Mapping[str, str]]:
        del template  # event source mappings have nothing to resolve
        return {}

    def function_environment(self) -> Mapping[str, str]:
        return {}

    def sandboxes(self, template: Template) -> Mapping[str, int]:
        needs: dict[str, int] = {}
        for logical_id in template.logical_ids("AWS::Lambda::EventSourceMapping"):
            if not template.active(logical_id):
                continue
            properties = template.resources[logical_id]["Properties"]
            function = properties["FunctionName"]
            if isinstance(function, dict) and "Ref" in function:
                limit = properties.get("ScalingConfig", {}).get("MaximumConcurrency")
                wanted = min(self._workers, int(limit)) if isinstance(limit, int) else self._workers
                needs[function["Ref"]] = max(needs.get(function["Ref"], 0), wanted)
        return needs

    async def start(self, stack: RunningStack) -> None:
        sources = sqs_event_sources(stack.template, stack.resolver, stack.provisioned.queue_urls_by_arn())
        sqs = aws_client("sqs", stack.endpoint_url)
        for source in sources:
            attributes = sqs.get_queue_attributes(
                QueueUrl=source.queue_url, AttributeNames=["VisibilityTimeout"]
            )
            visibility = int(attributes["Attributes"]["VisibilityTimeout"])
            check_visibility_timeout(source, visibility, stack.pools[source.function].config.timeout_s)
        for source in sources:
            pool = stack.pools[source.function]
            poller = SqsPoller(
                source, pool, stack.endpoint_url, concurrency=pool.size, wait_time_s=self._wait_time_s
            )
            poller.start()
            self._pollers.append(poller)
            logger.info(
                "%s <- SQS %s (batch %d, %d poller%s)",
                source.function,
                source.queue_arn.rsplit(":", 1)[-1],
                source.batch_size,
                pool.size,
                "" if pool.size == 1 else "s",
            )

    async def stop(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(poller.stop) for poller in self._pollers))
        self._pollers.clear()

    def urls(self) -> Mapping[str, str]:
        return {}
