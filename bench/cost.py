"""Bench 8: every AWS request a small job makes, by function and operation, and what 1,000 of them cost.

The API and worker handlers run in this process against the local stack's AWS (moto behind the strict
layer), with the settings a deployment has (rate limits and the active-job limit on). Each round is a
sync heatmap as a client sends it: the API handler gets the POST, writes and queues the job and waits
for it; a thread plays Lambda's SQS event source (receive, invoke the worker handler, delete).

Two passes. The first counts every HTTP request the clients send (retries included) and times the
handlers, for the Lambda GB-seconds. The second serializes the calls and reads each item a write
touches before and after it, to count DynamoDB's write and read units by AWS's rules (bench/capacity.py),
index copies included; it is slower, so it is not timed.

Prices are AWS's us-east-1 list prices without free tiers (bench/RESULTS.md cites each).
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import io
import json
import math
import os
import re
import statistics
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capacity import Index, WriteCost, read_units, table_indexes, write_cost
from common import (
    CODE_ROOT,
    HEATMAP_FLAGS,
    BenchResult,
    Figure,
    api_client,
    boto_client,
    dev_stack,
    run_bench,
    tiny_field,
    upload,
)
from inproc import load_handler, stack_environment
from jobgate_local.testing import FakeContext, http_event, sqs_event

# us-east-1 list prices, USD (bench/RESULTS.md, "Prices", says where each comes from and when read).
PRICES = {
    "dynamodb_wru": 0.625 / 1e6,
    "dynamodb_rru": 0.125 / 1e6,
    "s3_put": 0.005 / 1000,  # PUT, COPY, POST, LIST
    "s3_get": 0.0004 / 1000,  # GET, HEAD and the rest
    "sqs_request": 0.40 / 1e6,  # standard queue, per 64 KB chunk
    "http_api_request": 1.00 / 1e6,
    "ws_message": 1.00 / 1e6,  # per 32 KB
    "ws_connection_minute": 0.25 / 1e6,
    "lambda_gb_s": 0.0000166667,  # x86
    "lambda_request": 0.20 / 1e6,
    "logs_gb": 0.50,  # CloudWatch Logs ingestion
    "xray_trace": 5.00 / 1e6,
    "fargate_vcpu_h": 0.04048,
    "fargate_gb_h": 0.004445,
    "public_ipv4_h": 0.005,
}
# Where each price was read (2026-11-29, through the search tool; AWS's own pricing pages render their
# rate tables in the browser, so the figures are quoted from pages that transcribe them, with their date).
PRICE_SOURCES = (
    "DynamoDB on demand, $0.625 per million write request units and $0.125 per million read request "
    "units since the cut of 1 Nov 2024 (airbyte.com/data-engineering-resources/dynamodb-pricing, "
    "21 Jul 2025; unit rules: aws.amazon.com/dynamodb/pricing/on-demand/ and the developer guide's "
    "'DynamoDB read and write operations')",
    "Lambda x86, $0.0000166667 per GB-second and $0.20 per million requests "
    "(aws.amazon.com/lambda/pricing/ as transcribed by api-evangelist/aws-lambda, 20 Sep 2026; artillery's "
    "price table, lib/platform/aws-lambda/prices.js)",
    "S3 Standard, $0.005 per 1,000 PUT, COPY, POST and LIST requests and $0.0004 per 1,000 GET and "
    "others (usage.ai S3 cost guide, June 2026, from aws.amazon.com/s3/pricing/)",
    "SQS standard queue, $0.40 per million requests, each 64 KB a request (cloudburn.io/blog/"
    "amazon-sqs-pricing, March 2026; factualminds.com, June 2026)",
    "API Gateway HTTP API, $1.00 per million requests (first 300 million); WebSocket, $1.00 per million "
    "messages of 32 KB and $0.25 per million connection minutes (aws.amazon.com/api-gateway/pricing/, "
    "its worked examples as transcribed by api-evangelist, 20 Sep 2026; repost.aws on connection minutes)",
    "CloudWatch Logs ingestion, $0.50 per GB (hykell.com and factualminds.com, 2026); X-Ray, $5.00 per "
    "million traces recorded (aws.amazon.com/cloudwatch/pricing/)",
    "Fargate Linux x86, $0.04048 per vCPU-hour and $0.004445 per GB-hour (factualminds.com, June 2026; "
    "vantage.sh/blog/fargate-pricing); a public IPv4 address $0.005 an hour (cloudburn.io/blog/"
    "aws-fargate-pricing, April 2026)",
)
HOURS_A_MONTH = 730
MINUTES_A_MONTH = HOURS_A_MONTH * 60
# Lambda's SQS event source keeps five pollers long-polling (20 s) each queue it drains, busy or not.
ESM_POLLERS = 5
SQS_EVENT_SOURCES = 3  # JobsQueue, JobsDeadLetterQueue, UploadEventsQueue
# What Lambda itself logs per invocation (START, END, REPORT lines), bytes.
PLATFORM_LOG_BYTES = 300
# The peer: zyra's API, its RQ worker and Redis in one always-on Fargate task.
FARGATE_VCPU, FARGATE_GB = 1.0, 2.0

_phase: contextvars.ContextVar[str] = contextvars.ContextVar("bench_phase", default="")


@dataclass
class Ledger:
    """Requests (HTTP attempts) by function and operation, and DynamoDB units by function and operation."""

    requests: Counter[str] = field(default_factory=Counter)
    wru: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    wru_index: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    rru: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    s3_put_bytes: int = 0

    def reset(self) -> None:
        self.requests.clear()
        self.wru.clear()
        self.wru_index.clear()
        self.rru.clear()
        self.s3_put_bytes = 0


class Meter:
    """Hooks on boto3 clients: count each request; in `capacity` mode also DynamoDB's units."""

    def __init__(self, admin: Any, table: str, indexes: list[Index]) -> None:
        self.ledger = Ledger()
        self.capacity = False
        self._admin = admin
        self._table = table
        self._indexes = indexes
        self._lock = threading.RLock()

    def attach(self, client: Any, function: str) -> None:
        events = client.meta.events
        events.register("before-send", self._sent(function), unique_id=f"meter-send-{id(client)}")
        if client.meta.service_model.service_name == "dynamodb":
            events.register(
                "before-parameter-build.dynamodb", self._before, unique_id=f"meter-before-{id(client)}"
            )
            events.register(
                "after-call.dynamodb", self._after(function), unique_id=f"meter-after-{id(client)}"
            )
            events.register("after-call-error.dynamodb", self._error, unique_id=f"meter-error-{id(client)}")

    def _sent(self, function: str) -> Callable[..., None]:
        def sent(request: Any, event_name: str, **_: Any) -> None:
            _, service, operation = event_name.split(".", 2)
            phase = _phase.get()
            label = f"{function}{'/' + phase if phase else ''}"
            self.ledger.requests[f"{label} {service}.{operation}"] += 1
            if service == "s3" and operation in ("PutObject", "UploadPart"):
                body = getattr(request, "body", None)
                length = request.headers.get("Content-Length")
                self.ledger.s3_put_bytes += int(length) if length else len(body or b"")

        return sent

    # -- DynamoDB units (capacity mode) ------------------------------------------------------------

    def _before(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        if not self.capacity:
            return
        self._lock.acquire()
        context["meter_held"] = True
        context["meter_params"] = json.loads(json.dumps(params, default=str))
        context["meter_before"] = {k: self._read(k) for k in _written_keys(model.name, params)}

    def _after(self, function: str) -> Callable[..., None]:
        def after(parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
            if not context.pop("meter_held", False):
                return
            try:
                phase = _phase.get()
                label = f"{function}{'/' + phase if phase else ''} dynamodb.{model.name}"
                self._account(label, model.name, context["meter_params"], context["meter_before"], parsed)
            finally:
                self._lock.release()

        return after

    def _error(self, context: dict[str, Any], **_: Any) -> None:
        if context.pop("meter_held", False):
            self._lock.release()

    def _read(self, key: tuple[str, str]) -> dict[str, Any] | None:
        got = self._admin.get_item(
            TableName=self._table, Key={"pk": {"S": key[0]}, "sk": {"S": key[1]}}, ConsistentRead=True
        )
        item: dict[str, Any] | None = got.get("Item")
        return item

    def _account(
        self,
        label: str,
        op: str,
        params: dict[str, Any],
        before: dict[tuple[str, str], Any],
        parsed: dict[str, Any],
    ) -> None:
        ledger = self.ledger
        error = parsed.get("Error", {}).get("Code")
        if before:
            transactional = op == "TransactWriteItems"
            failed = error in ("ConditionalCheckFailedException", "TransactionCanceledException")
            for key, old in before.items():
                new = None if failed else self._read(key)
                cost: WriteCost = write_cost(
                    old, new if not failed else old, self._indexes, transactional=transactional, failed=failed
                )
                ledger.wru[label] += cost.table
                ledger.wru_index[label] += cost.indexes
            return
        if error:
            return
        consistent = bool(params.get("ConsistentRead"))
        if op == "GetItem":
            ledger.rru[label] += read_units([parsed.get("Item", {})], consistent=consistent, per_item=True)
        elif op == "BatchGetItem":
            for table, items in parsed.get("Responses", {}).items():
                strong = bool(params["RequestItems"][table].get("ConsistentRead"))
                ledger.rru[label] += read_units(items, consistent=strong, per_item=True)
        elif op == "Query":
            ledger.rru[label] += read_units(self._evaluated(params), consistent=consistent, per_item=False)

    def _evaluated(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """What a query read before its filter: the same key range, again, as the index holds it."""
        keep = ("TableName", "IndexName", "KeyConditionExpression", "ScanIndexForward", "Limit")
        query = {k: params[k] for k in (*keep, "ExclusiveStartKey", "ConsistentRead") if k in params}
        key = params["KeyConditionExpression"]

        def used(name: str) -> bool:
            return re.search(re.escape(name) + r"(?![A-Za-z0-9_])", key) is not None

        names = {k: v for k, v in params.get("ExpressionAttributeNames", {}).items() if used(k)}
        if names:
            query["ExpressionAttributeNames"] = names
        query["ExpressionAttributeValues"] = {
            k: v for k, v in params.get("ExpressionAttributeValues", {}).items() if used(k)
        }
        items: list[dict[str, Any]] = self._admin.query(**query).get("Items", [])
        index = next((i for i in self._indexes if i.name == params.get("IndexName")), None)
        return [index.entry(i) or i for i in items] if index is not None else items


def _written_keys(op: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    def key_of(mapping: dict[str, Any]) -> tuple[str, str]:
        return (mapping["pk"]["S"], mapping["sk"]["S"])

    if op == "PutItem":
        return [key_of(params["Item"])]
    if op in ("UpdateItem", "DeleteItem"):
        return [key_of(params["Key"])]
    if op == "BatchWriteItem":
        keys = []
        for requests in params["RequestItems"].values():
            for request in requests:
                put, delete = request.get("PutRequest"), request.get("DeleteRequest")
                keys.append(key_of(put["Item"]) if put else key_of(delete["Key"]))
        return keys
    if op == "TransactWriteItems":
        keys = []
        for entry in params["TransactItems"]:
            ((kind, body),) = entry.items()
            keys.append(key_of(body["Item"]) if kind == "Put" else key_of(body["Key"]))
        return keys
    return []


@contextmanager
def phase(name: str) -> Iterator[None]:
    token = _phase.set(name)
    try:
        yield
    finally:
        _phase.reset(token)


# -- the run --------------------------------------------------------------------------------------


@dataclass
class Rounds:
    api_s: list[float] = field(default_factory=list)
    worker_s: list[float] = field(default_factory=list)
    log_bytes: list[int] = field(default_factory=list)


class SqsEventSource:
    """Lambda's SQS event source for one queue, in a thread: receive, invoke the worker, delete."""

    def __init__(self, sqs: Any, queue_url: str, worker: Any, rounds: Rounds) -> None:
        self._sqs = sqs
        self._url = queue_url
        self._worker = worker
        self._rounds = rounds
        self._arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="esm", daemon=True)
        self.errors: list[BaseException] = []

    def __enter__(self) -> SqsEventSource:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                got = self._sqs.receive_message(
                    QueueUrl=self._url,
                    MaxNumberOfMessages=1,
                    WaitTimeSeconds=1,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
                for message in got.get("Messages", []):
                    started = time.perf_counter()
                    answer = self._worker.handler(
                        sqs_event([message], self._arn), FakeContext(function_name="worker", timeout_s=900)
                    )
                    self._rounds.worker_s.append(time.perf_counter() - started)
                    if not answer.get("batchItemFailures"):
                        self._sqs.delete_message(QueueUrl=self._url, ReceiptHandle=message["ReceiptHandle"])
            except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
                self.errors.append(exc)
                return


class LogCounter(io.TextIOBase):
    """Counts what the handlers log (CloudWatch Logs ingests it), passing nothing on."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, text: str) -> int:
        self.bytes += len(text.encode())
        return len(text)


def main(args: argparse.Namespace) -> BenchResult:
    rounds = 5 if args.quick else 12
    result = BenchResult("cost", "8. AWS requests and cost per small job, and per 1,000 jobs")
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp_name:
        tmp = Path(tmp_name)
        field_path = tiny_field(tmp / "field.npy")
        with dev_stack(workers=1) as dev, api_client(dev) as api:
            asset_id = upload(api, field_path, "application/x-npy")
            measured = _measure(dev, asset_id, rounds)
    return _report(result, measured, rounds, args.baseline)


def _measure(dev: Any, asset_id: str, rounds: int) -> dict[str, Any]:
    endpoint = dev.aws_endpoint_url
    sqs = boto_client("sqs", endpoint)
    # A queue of this bench's own, so the local stack's poller and workers never see these jobs.
    queue_url = sqs.create_queue(QueueName="bench-cost-jobs", Attributes={"VisibilityTimeout": "900"})[
        "QueueUrl"
    ]
    env = stack_environment(endpoint, dev.resources, dev.api_key)
    env["JOBGATE_QUEUE_URL"] = queue_url
    # A deployment's limits: every submit pays for the rate limiter and the active-job count.
    for name in ("JOBGATE_RATE_LIMIT_PER_S", "JOBGATE_MAX_ACTIVE_JOBS"):
        env.pop(name)
        os.environ.pop(name, None)
    api_fn = load_handler("api", env)
    worker_fn = load_handler("worker", env, fresh_clients=False)
    sweeper_fn = load_handler("sweeper", env, fresh_clients=False)

    from jobgate.adapters import aws
    from jobgate.services.jobs import JobService

    admin = boto_client("dynamodb", endpoint)
    # The table's indexes as the measured code's template declares them: its writes cost what they
    # would cost on its own table.
    meter = Meter(admin, dev.resources["JobsTable"], table_indexes(CODE_ROOT / "template.yaml"))
    for budget, function in ((aws.API, "api"), (aws.BACKGROUND, "worker")):
        for make in (aws.dynamodb, aws.sqs, aws.s3):
            meter.attach(make(budget), function)
    from jobgate.services.limits import JobAdmission, RateLimiter

    patched = [
        (JobService, "wait", "sync-wait"),
        (RateLimiter, "take", "limits"),
        (JobAdmission, "check_active", "limits"),
    ]
    originals = [(cls, name, getattr(cls, name)) for cls, name, _ in patched]
    for cls, name, label in patched:
        setattr(cls, name, _in_phase(getattr(cls, name), label))
    body = {
        "stage": "visualize",
        "command": "heatmap",
        "mode": "sync",
        "wait_s": 25,
        "args": {"input": f"asset://{asset_id}", "output": "map.png", **HEATMAP_FLAGS},
    }
    passes: dict[str, Any] = {}
    counter = LogCounter()
    try:
        with _logs_to(counter):
            for name, capacity in (("timed", False), ("units", True)):
                meter.capacity = capacity
                timings = Rounds()
                with SqsEventSource(sqs, queue_url, worker_fn, timings) as esm:
                    _sync_job(api_fn, body, dev.api_key)  # warm: clients, the zygote's first fork
                    meter.ledger.reset()
                    timings.api_s.clear()
                    timings.worker_s.clear()
                    counter.bytes = 0
                    for _ in range(rounds):
                        timings.api_s.append(_sync_job(api_fn, body, dev.api_key))
                    _wait_for(lambda: len(timings.worker_s) >= rounds)  # noqa: B023
                    if esm.errors:
                        raise esm.errors[0]
                passes[name] = {"ledger": meter.ledger, "timings": timings, "log_bytes": counter.bytes}
                meter.ledger = Ledger()
            meter.capacity = False
            sweep = _sweeper_run(sweeper_fn, meter)
    finally:
        for cls, name, original in originals:
            setattr(cls, name, original)
    return {"passes": passes, "sweep": sweep}


def _in_phase(method: Callable[..., Any], label: str) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        with phase(label):
            return method(*args, **kwargs)

    return run


@contextmanager
def _logs_to(stream: io.TextIOBase) -> Iterator[None]:
    """The handlers' structured logs, counted rather than printed."""
    import logging

    handlers = [h for h in logging.getLogger("jobgate").handlers if isinstance(h, logging.StreamHandler)]
    saved = [h.stream for h in handlers]
    for h in handlers:
        h.setStream(stream)
    try:
        with contextlib.redirect_stdout(stream):  # the metrics (EMF) are printed, and ingested too
            yield
    finally:
        for h, s in zip(handlers, saved, strict=True):
            h.setStream(s)


def _sync_job(api_fn: Any, body: dict[str, Any], api_key: str) -> float:
    started = time.perf_counter()
    answer = api_fn.handler(
        http_event("POST", "/v1/jobs", body=body, headers={"x-api-key": api_key}),
        FakeContext(function_name="api", timeout_s=29),
    )
    elapsed = time.perf_counter() - started
    job = json.loads(answer["body"])
    if answer["statusCode"] != 200 or job.get("status") != "succeeded":
        raise RuntimeError(f"sync job answered {answer['statusCode']}: {answer['body'][:400]}")
    return elapsed


def _wait_for(done: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError("the worker did not finish the last job")
        time.sleep(0.05)


def _sweeper_run(sweeper_fn: Any, meter: Meter) -> dict[str, Any]:
    """One sweep of an idle stack (what every minute costs), requests and duration."""
    times = []
    meter.ledger.reset()
    with phase("sweep"):
        for _ in range(3):
            started = time.perf_counter()
            sweeper_fn.handler({}, FakeContext(function_name="sweeper", timeout_s=60))
            times.append(time.perf_counter() - started)
    requests = {k.replace("worker/sweep", "sweeper"): v / 3 for k, v in meter.ledger.requests.items()}
    return {"seconds": statistics.median(times), "requests": requests}


# -- figures --------------------------------------------------------------------------------------


def _memory_mb() -> dict[str, int]:
    from cfnlint.decode import decode

    decoded, _ = decode(str(CODE_ROOT / "template.yaml"))
    assert decoded is not None
    resources = decoded["Resources"]
    params = decoded["Parameters"]

    def size(logical_id: str) -> int:
        value = resources[logical_id]["Properties"]["MemorySize"]
        if isinstance(value, dict) and "Ref" in value:
            value = params[value["Ref"]]["Default"]
        return int(value)

    return {"api": size("ApiFunction"), "worker": size("WorkerFunction"), "sweeper": size("SweeperFunction")}


def per_job(measured: dict[str, Any], rounds: int) -> dict[str, Any]:
    """Requests, units, seconds and bytes per job, from the two passes."""
    timed, units = measured["passes"]["timed"], measured["passes"]["units"]
    requests: Counter[str] = timed["ledger"].requests
    by_op = {k: v / rounds for k, v in sorted(requests.items())}
    ledger: Ledger = units["ledger"]
    timings: Rounds = timed["timings"]
    # Lambda's SQS event source, batch size 1: the receive that brings the message, the delete after.
    by_op["sqs-event-source sqs.ReceiveMessage"] = 1.0
    by_op["sqs-event-source sqs.DeleteMessageBatch"] = 1.0
    return {
        "requests": by_op,
        "wru_table": {k: v / rounds for k, v in sorted(ledger.wru.items())},
        "wru_index": {k: v / rounds for k, v in sorted(ledger.wru_index.items())},
        "rru": {k: v / rounds for k, v in sorted(ledger.rru.items())},
        "api_s": statistics.median(timings.api_s),
        "worker_s": statistics.median(timings.worker_s),
        "log_bytes": timed["log_bytes"] / rounds,
        "s3_put_bytes": timed["ledger"].s3_put_bytes / rounds,
    }


def costs_per_1000(job: dict[str, Any], memory: dict[str, int]) -> dict[str, float]:
    """USD per 1,000 jobs, by line."""
    p = PRICES
    count = Counter[str]()
    for key, n in job["requests"].items():
        service_op = key.split(" ", 1)[1]
        count[service_op] += n
    s3_put = sum(n for op, n in count.items() if op.startswith("s3.") and op.split(".")[1] in _S3_CLASS_A)
    s3_get = sum(n for op, n in count.items() if op.startswith("s3.")) - s3_put
    sqs = sum(n for op, n in count.items() if op.startswith("sqs."))
    wru = sum(job["wru_table"].values()) + sum(job["wru_index"].values())
    rru = sum(job["rru"].values())
    gb_s = (
        math.ceil(job["api_s"] * 1000) / 1000 * memory["api"] / 1024
        + math.ceil(job["worker_s"] * 1000) / 1000 * memory["worker"] / 1024
    )
    log_gb = (job["log_bytes"] + 2 * PLATFORM_LOG_BYTES) / 1e9
    lines = {
        "DynamoDB writes": wru * p["dynamodb_wru"],
        "DynamoDB reads": rru * p["dynamodb_rru"],
        "S3 requests": s3_put * p["s3_put"] + s3_get * p["s3_get"],
        "SQS requests": sqs * p["sqs_request"],
        "HTTP API requests": 1 * p["http_api_request"],
        "Lambda GB-seconds": gb_s * p["lambda_gb_s"],
        "Lambda requests": 2 * p["lambda_request"],
        "CloudWatch Logs": log_gb * p["logs_gb"],
        "X-Ray traces (every invocation sampled)": 2 * p["xray_trace"],
    }
    return {k: v * 1000 for k, v in lines.items()}


_S3_CLASS_A = {
    "PutObject",
    "CopyObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "ListObjectsV2",
}


def monthly_fixed(sweep: dict[str, Any], memory: dict[str, int]) -> dict[str, float]:
    """What the stack costs a month with no job at all: the sweeper every minute, the SQS pollers."""
    p = PRICES
    runs = MINUTES_A_MONTH
    requests = sum(sweep["requests"].values())
    sweeper = runs * (
        math.ceil(sweep["seconds"] * 1000) / 1000 * memory["sweeper"] / 1024 * p["lambda_gb_s"]
        + p["lambda_request"]
        + requests * 0.5 * p["dynamodb_rru"]  # its queries read (almost) nothing on an idle stack
    )
    polls = SQS_EVENT_SOURCES * ESM_POLLERS * (60 / 20) * MINUTES_A_MONTH
    return {"sweeper every minute": sweeper, "SQS event source polling": polls * p["sqs_request"]}


def fargate_per_1000(jobs_a_month: int) -> float:
    p = PRICES
    month = HOURS_A_MONTH * (
        FARGATE_VCPU * p["fargate_vcpu_h"] + FARGATE_GB * p["fargate_gb_h"] + p["public_ipv4_h"]
    )
    return month / jobs_a_month * 1000


def _requests(job: dict[str, Any], prefix: str) -> float:
    return float(sum(v for k, v in job["requests"].items() if k.split(" ", 1)[0] == prefix))


def _report(result: BenchResult, measured: dict[str, Any], rounds: int, baseline: Path | None) -> BenchResult:
    job = per_job(measured, rounds)
    memory = _memory_mb()
    lines = costs_per_1000(job, memory)
    fixed = monthly_fixed(measured["sweep"], memory)
    fixed_month = sum(fixed.values())
    before = _baseline(baseline)
    old_job = before["details"]["per_job"] if before else None
    old_lines = before["details"]["usd_per_1000_jobs"] if before else None

    def counted(j: dict[str, Any]) -> dict[str, float]:
        return {
            "worker": _requests(j, "worker"),
            "api": _requests(j, "api"),
            "limits": _requests(j, "api/limits"),
            "wait": _requests(j, "api/sync-wait"),
        }

    now_n = counted(job)
    old_n = counted(old_job) if old_job else None
    issue = sum(v for k, v in lines.items() if k in ISSUE_LINES)
    old_issue = sum(v for k, v in old_lines.items() if k in ISSUE_LINES) if old_lines else None
    peer = f"today's main ({before['commit']})" if before else ""
    result.figures += [
        Figure(
            "AWS requests per small job, worker (claim -> end)",
            now_n["worker"],
            "requests",
            peer_label=peer,
            peer_value=old_n["worker"] if old_n else None,
            target="<= 8 on the job's path",
            target_max=8,
        ),
        Figure(
            "AWS requests per small job, worker + API (limits off, as benches 1-3 run)",
            now_n["worker"] + now_n["api"],
            "requests",
            peer_label=peer,
            peer_value=old_n["worker"] + old_n["api"] if old_n else None,
            target="<= 10 in all",
            target_max=10,
        ),
        Figure(
            "... and the rate limiter and active-job count a deployment runs by default",
            now_n["limits"],
            "requests",
            peer_label=peer,
            peer_value=old_n["limits"] if old_n else None,
        ),
        Figure(
            "sync-mode reads of the job per small job",
            now_n["wait"],
            "requests",
            peer_label=peer,
            peer_value=old_n["wait"] if old_n else None,
        ),
        Figure(
            "cost per 1,000 small jobs: DynamoDB, S3, SQS, API Gateway, Lambda",
            issue,
            "USD",
            peer_label=peer,
            peer_value=old_issue,
            target="<= 0.5x today's",
            target_ratio=0.5 if old_issue else None,
        ),
        Figure(
            "... with CloudWatch Logs and X-Ray (every invocation traced)",
            sum(lines.values()),
            "USD",
            peer_label=peer,
            peer_value=sum(old_lines.values()) if old_lines else None,
        ),
    ]
    for jobs_a_month in (10_000, 1_000_000):
        ours = sum(lines.values()) + fixed_month / jobs_a_month * 1000
        result.figures.append(
            Figure(
                f"cost per 1,000 jobs at {jobs_a_month:,} jobs/month (all lines + fixed)",
                ours,
                "USD",
                peer_label="zyra's API on one always-on Fargate task",
                peer_value=fargate_per_1000(jobs_a_month),
            )
        )
    result.details = {
        "rounds": rounds,
        "per_job": job,
        "memory_mb": memory,
        "usd_per_1000_jobs": lines,
        "fixed_usd_a_month": fixed,
        "sweep": measured["sweep"],
        "prices": PRICES,
    }
    result.notes.append(
        "Requests per job: " + ", ".join(f"{k} x{v:g}" for k, v in job["requests"].items()) + "."
    )
    if old_job:
        result.notes.append(
            "Today's main, same run of this bench on it: "
            + ", ".join(f"{k} x{v:g}" for k, v in old_job["requests"].items())
            + "."
        )
    result.notes.append(
        "DynamoDB units per job: writes "
        + ", ".join(f"{k} {v:g}" for k, v in job["wru_table"].items())
        + "; index copies "
        + ", ".join(f"{k} {v:g}" for k, v in job["wru_index"].items() if v)
        + "; reads "
        + ", ".join(f"{k} {v:g}" for k, v in job["rru"].items())
        + "."
    )
    result.notes.append(
        "USD per 1,000 jobs, line by line (now | today's main): "
        + "; ".join(
            f"{k} {v:.5f}" + (f" | {old_lines[k]:.5f}" if old_lines and k in old_lines else "")
            for k, v in lines.items()
        )
        + f". Lambda at the template's memory: API {memory['api']} MB for {job['api_s'] * 1000:.0f} ms "
        f"(a sync request waits for its job), worker {memory['worker']} MB for {job['worker_s'] * 1000:.0f} "
        "ms (handlers timed in this one process, so each also waits on the other for the GIL)."
    )
    result.notes.append(
        "Fixed a month, with no job at all: "
        + ", ".join(f"{k} ${v:.2f}" for k, v in fixed.items())
        + f". zyra's API on one always-on Fargate task ({FARGATE_VCPU:g} vCPU, {FARGATE_GB:g} GB, its RQ "
        f"worker and Redis in the same task, a public IPv4 address, no load balancer): "
        f"${fargate_per_1000(1000):.2f} a month whatever it runs."
    )
    if old_lines and old_issue and issue > 0.5 * old_issue:
        result.notes.append(_cost_miss(lines, old_lines, issue, old_issue))
    result.notes.append("Prices, us-east-1, no free tier: " + "; ".join(PRICE_SOURCES) + ".")
    return result


# Lines a job pays once whatever the code does: one SQS send, receive and delete, one HTTP request,
# one invocation of each function on its path.
PER_JOB_LINES = ("SQS requests", "HTTP API requests", "Lambda requests")


def _cost_miss(lines: dict[str, float], old: dict[str, float], issue: float, old_issue: float) -> str:
    """Why the cost target was missed: how much of today's cost no code can cut, and what the rest did."""
    fixed_now = sum(lines[k] for k in PER_JOB_LINES)
    fixed_old = sum(old[k] for k in PER_JOB_LINES)
    cut_now, cut_old = issue - fixed_now, old_issue - fixed_old
    return (
        f"Missed by {issue / old_issue - 0.5:.2f}x: {fixed_old / old_issue:.0%} of today's "
        f"{old_issue:.4f} USD is paid once per job whatever the code does ({', '.join(PER_JOB_LINES)}: "
        f"{fixed_old:.5f} then, {fixed_now:.5f} now). The lines the code decides (DynamoDB, S3, Lambda's "
        f"GB-seconds) went from {cut_old:.5f} to {cut_now:.5f} USD ({cut_now / cut_old:.2f}x); half of "
        f"the whole would need them at {max(0.0, 0.5 * old_issue - fixed_now):.5f}."
    )


# The lines the cost target counts (the requests, the item writes and Lambda's GB-seconds).
ISSUE_LINES = (
    "DynamoDB writes",
    "DynamoDB reads",
    "S3 requests",
    "SQS requests",
    "HTTP API requests",
    "Lambda GB-seconds",
    "Lambda requests",
)


def _baseline(path: Path | None) -> dict[str, Any] | None:
    """This bench's result on the code compared with: run in the same `make bench` (bench/run.py), or
    the one kept in bench/baseline/ when this bench runs alone."""
    path = path or Path(__file__).resolve().parent / "baseline" / "cost.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    data.setdefault("commit", "main")
    return data


if __name__ == "__main__":
    raise SystemExit(run_bench(main, __doc__ or ""))
