"""Bench 1: `POST /v1/jobs` (async) through the local gateway, against the raw boto3 calls it must make.

The floor is what any implementation has to do for one job: a conditional PutItem of the job record
and a SendMessage of its id, with boto3, to the same moto server, in the same run, interleaved with
jobgate's submits. The worker sandboxes are paused (SIGSTOP) while it runs, so the figure is the API's
path alone, as in AWS where workers run elsewhere.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from boto3.dynamodb.types import TypeSerializer
from common import (
    HEATMAP_FLAGS,
    BenchResult,
    Figure,
    api_client,
    boto_client,
    dev_stack,
    function_pids,
    local_gateways_set_nodelay,
    median,
    nagle_penalty,
    pause,
    percentile,
    run_bench,
    timed,
    tiny_field,
    upload,
)
from inproc import counting_calls, load_handler, stack_environment
from jobgate_local.testing import FakeContext, http_event
from ulid import ULID


def heatmap_request(asset_id: str) -> dict[str, Any]:
    """A request a client really sends: a heatmap of an uploaded input, checked against the contract."""
    return {
        "stage": "visualize",
        "command": "heatmap",
        "args": {"input": f"asset://{asset_id}", "output": "map.png", **HEATMAP_FLAGS},
    }


def job_item(job_id: str) -> dict[str, Any]:
    """A job record as big as jobgate's (same attributes and keys), marshalled for DynamoDB."""
    now = "2026-01-01T00:00:00+00:00"
    doc = {
        "pk": f"JOB#{job_id}",
        "sk": "JOB",
        "gsi1pk": "TENANT#default#JOBS",
        "gsi1sk": job_id,
        "gsi2pk": "TENANT#default#STATUS#queued",
        "gsi2sk": job_id,
        "job_id": job_id,
        "tenant": "default",
        "stage": "visualize",
        "command": "heatmap",
        "args": {"output": "map.png", "no_coastline": True, "no_borders": True},
        "status": "queued",
        "progress": 0,
        "attempts": 0,
        "timeout_s": 600,
        "request_hash": "0" * 64,
        "created_at": now,
        "expires_at": 1800000000,
    }
    ser = TypeSerializer()
    return {k: ser.serialize(v) for k, v in doc.items()}


def main(args: argparse.Namespace) -> BenchResult:
    rounds = 40 if args.quick else 200
    result = BenchResult(
        "submit_overhead", "1. Submit overhead: POST /v1/jobs (async) vs the raw boto3 floor"
    )
    with dev_stack() as dev:
        pause(function_pids(dev, "WorkerFunction"))
        table = dev.resources["JobsTable"]
        queue_url = dev.resources["JobsQueue"]
        ddb = boto_client("dynamodb", dev.aws_endpoint_url)
        sqs = boto_client("sqs", dev.aws_endpoint_url)
        with api_client(dev) as api, tempfile.TemporaryDirectory() as tmp:
            asset_id = upload(api, tiny_field(Path(tmp) / "field.npy"), "application/x-npy")
            body = heatmap_request(asset_id)
            asset_key = {"pk": {"S": f"ASSET#{asset_id}"}, "sk": {"S": "ASSET"}}

            def submit() -> None:
                answer = api.post("/v1/jobs", json=body)
                if answer.status_code != 202:
                    raise RuntimeError(f"submit answered {answer.status_code}: {answer.text}")

            def floor() -> None:
                # The input must exist, be AVAILABLE and of an accepted type: one consistent read.
                ddb.get_item(TableName=table, Key=asset_key, ConsistentRead=True)
                job_id = str(ULID())
                ddb.put_item(
                    TableName=table, Item=job_item(job_id), ConditionExpression="attribute_not_exists(pk)"
                )
                sqs.send_message(
                    QueueUrl=queue_url, MessageBody=json.dumps({"job_id": job_id, "tenant": "default"})
                )

            for _ in range(20):  # warm every API sandbox and both clients
                submit()
                floor()
            ours: list[float] = []
            base: list[float] = []
            for i in range(rounds):
                # Alternate which goes first, so a slow patch of the machine hits both alike.
                if i % 2:
                    ours.append(timed(submit))
                    base.append(timed(floor))
                else:
                    base.append(timed(floor))
                    ours.append(timed(submit))
            anatomy = _anatomy(
                dev.aws_endpoint_url, dev.resources, dev.api_key, body, rounds=30 if args.quick else 100
            )

    fig = Figure(
        "jobgate POST /v1/jobs (median)",
        median(ours),
        "s",
        peer_label="floor: GetItem (input) + PutItem + SendMessage (median)",
        peer_value=median(base),
        target="<= 1.5x the floor",
        target_ratio=1.5,
    )
    result.figures.append(fig)
    control = nagle_penalty()
    result.details = {
        "rounds": rounds,
        "nagle_control": control,
        "jobgate_p90_s": percentile(ours, 90),
        "floor_p90_s": percentile(base, 90),
        **anatomy,
    }
    calls = ", ".join(f"{n} x{c}" for n, c in sorted(anatomy["calls_per_submit"].items()))
    result.notes.append(
        f"Per submit the API handler makes {anatomy['aws_calls_per_submit']:.0f} AWS calls ({calls}), "
        f"{anatomy['aws_seconds_per_submit'] * 1000:.1f} ms of them (median); the handler in-process takes "
        f"{anatomy['handler_median_s'] * 1000:.1f} ms (median), so the local gateway + sandbox hop adds "
        f"about {max(0.0, median(ours) - anatomy['handler_median_s']) * 1000:.1f} ms (the in-process "
        "handler is timed after the HTTP rounds, so a few ms either way are the machine's noise)."
    )
    stall = control["proto_0_s"] - control["ipproto_tcp_s"]
    if fig.met is False:
        over = median(ours) - median(base)
        in_handler = max(0.0, anatomy["handler_median_s"] - anatomy["aws_seconds_per_submit"])
        result.notes.append(
            f"Missed by {(fig.ratio or 0) - 1.5:.2f}x: jobgate spends {over * 1000:.1f} ms above the floor; "
            f"{in_handler * 1000:.1f} ms of it is Python in the handler (Mangum, FastAPI routing and "
            "validation, the contract check, pydantic models), the rest is the local HTTP gateway."
        )
    if local_gateways_set_nodelay():
        result.notes.append(
            "The local gateway's sockets are TCP_NODELAY (reserve_port makes them IPPROTO_TCP). The "
            f"same-run control shows what that saves on every answer: a trivial uvicorn app answers in "
            f"{control['proto_0_s'] * 1000:.1f} ms on a proto=0 socket (Nagle + the client's delayed ACK) "
            f"and {control['ipproto_tcp_s'] * 1000:.1f} ms on an IPPROTO_TCP one."
        )
    elif stall > 0.02:
        without = median(ours) - stall
        result.notes.append(
            f"The local gateway's listening socket is made with proto=0 (jobgate_local.procs.reserve_port), "
            "so asyncio never sets TCP_NODELAY on its connections and every answer waits for the client's "
            f"delayed ACK: the same-run control (a trivial uvicorn app) answers in "
            f"{control['proto_0_s'] * 1000:.1f} ms on such a socket and "
            f"{control['ipproto_tcp_s'] * 1000:.1f} ms on an IPPROTO_TCP one. Without that stall the "
            f"submit would take about {without * 1000:.1f} ms, {without / median(base):.2f}x the floor. "
            "API Gateway has no such stall; the fix is one argument in reserve_port."
        )
    return result


def _anatomy(
    endpoint: str, resources: Mapping[str, str], api_key: str, body: dict[str, Any], rounds: int
) -> dict[str, Any]:
    """The API handler in this process, on the same moto: its AWS calls and its own time per submit."""
    module = load_handler("api", stack_environment(endpoint, resources, api_key))

    def call() -> None:
        answer = module.handler(
            http_event("POST", "/v1/jobs", body=body, headers={"x-api-key": api_key}),
            FakeContext(function_name="api"),
        )
        if answer["statusCode"] != 202:
            raise RuntimeError(f"in-process submit answered {answer['statusCode']}: {answer.get('body')}")

    for _ in range(10):
        call()
    times: list[float] = []
    aws_times: list[float] = []
    with counting_calls() as log:
        for _ in range(rounds):
            before = log.total_seconds
            times.append(timed(call))
            aws_times.append(log.total_seconds - before)
    return {
        "handler_median_s": median(times),
        "aws_calls_per_submit": log.total_calls / rounds,
        "aws_seconds_per_submit": median(aws_times),
        "calls_per_submit": {name: count / rounds for name, count in log.calls.items()},
    }


if __name__ == "__main__":
    raise SystemExit(run_bench(main, __doc__ or ""))
