"""Bench 4: from a line a command writes to its arrival at a WebSocket client, p50 and p99.

The command is a real zyra command, `acquire api --stream`, fetching from a loopback "ticker" that
this script serves: each chunk is one line `tick <i> <unix time>` (padded past stdio's 8 KiB buffer,
so zyra's stdout passes it on at once), sent at random intervals. zyra copies each line to its stdout
the moment it arrives, so the time in the line is the time the command wrote it, on this machine's
clock. A WebSocket client subscribed to the job notes when each line reaches it.

Two figures: through the local stack's WebSocket gateway (needs `jobgate_local.gateway_ws`), and at
the service level, the worker handler in this process with a recording @connections client: what the
worker adds (the executor's wake-ups, the output batching, the DynamoDB event log) without any gateway.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from common import (
    ROOT,
    BenchResult,
    Figure,
    api_client,
    dev_stack,
    local_gateways_set_nodelay,
    median,
    percentile,
    run_bench,
)
from inproc import load_handler, stack_environment

LINE_BYTES = 9000


@dataclass
class Ticker:
    """A loopback HTTP server whose answers are lines sent over time, each stamped with its send time."""

    lines: int
    min_gap_s: float
    max_gap_s: float
    go: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        ticker = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                ticker.go.wait(30)  # the subscriber is ready before the first line
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                rng = random.Random(7)
                for i in range(ticker.lines):
                    time.sleep(rng.uniform(ticker.min_gap_s, ticker.max_gap_s))
                    data = (f"tick {i} {time.time():.6f} ".ljust(LINE_BYTES - 1, ".") + "\n").encode()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/ticks"
        finally:
            server.shutdown()
            server.server_close()


def latencies(text: str, arrived: float) -> list[float]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "tick":
            out.append(arrived - float(parts[2]))
    return out


def job_body(url: str) -> dict[str, Any]:
    return {"stage": "acquire", "command": "api", "args": {"url": url, "stream": True}, "timeout_s": 120}


def main(args: argparse.Namespace) -> BenchResult:
    jobs = 1 if args.quick else 3
    lines = 20 if args.quick else 40
    result = BenchResult("progress_latency", "4. Progress latency: a line written -> a WebSocket client")
    gateway_ready = (ROOT / "infra" / "local" / "jobgate_local" / "gateway_ws.py").exists()
    through_ws: list[float] = []
    service: list[float] = []
    with dev_stack() as dev, api_client(dev) as api:
        ws_url = dev.state.get("ws_url") or dev.state.get("websocket_url")
        if gateway_ready and ws_url:
            for _ in range(jobs):
                ticker = Ticker(lines, 0.05, 0.4)
                with ticker.serve() as url:
                    through_ws += _through_websocket(api, str(ws_url), dev.api_key, ticker, url)
        for _ in range(jobs):
            ticker = Ticker(lines, 0.05, 0.4)
            with ticker.serve() as url:
                service += _service_level(dev.aws_endpoint_url, dev.resources, dev.api_key, ticker, url)
    figure = Figure(
        "line -> WebSocket client, p50 (local stack)",
        median(through_ws) if through_ws else None,
        "s",
        target="p50 <= 100 ms",
        target_max=0.1,
        measured=bool(through_ws),
        note=""
        if through_ws
        else "the local WebSocket gateway (jobgate_local/gateway_ws.py) is not there yet",
    )
    result.figures.append(figure)
    result.figures.append(
        Figure(
            "line -> WebSocket client, p99 (local stack)",
            percentile(through_ws, 99) if through_ws else None,
            "s",
            target="p99 <= 300 ms",
            target_max=0.3,
            measured=bool(through_ws),
            note=figure.note,
        )
    )
    result.figures += [
        Figure("line -> @connections send, p50 (service level, no gateway)", median(service), "s"),
        Figure("line -> @connections send, p99 (service level, no gateway)", percentile(service, 99), "s"),
    ]
    result.details = {
        "jobs": jobs,
        "lines_per_job": lines,
        "samples_ws": len(through_ws),
        "samples_service": len(service),
        "service_max_s": max(service),
    }
    if through_ws:
        hop = median(through_ws) - median(service)
        result.notes.append(
            f"The local WebSocket path adds {hop * 1000:.0f} ms at the median over the service level: the "
            "worker's post_to_connection to the local @connections endpoint and the gateway's frame to the "
            "client"
            + (
                "."
                if local_gateways_set_nodelay()
                else ". Both local gateways listen on sockets made by jobgate_local.procs.reserve_port with "
                "proto=0, so asyncio leaves Nagle on and each answer can wait for a delayed ACK (~40 ms; "
                "see bench 1's control); API Gateway has no such stall."
            )
        )
    result.notes.append(
        "Service level: a line is handed to the attempt's event log as it arrives; with a subscriber, the "
        "log writes it at once (at most one write every 0.1 s: a burst goes out together) in one "
        "transaction with the job's event counter, reads the subscribers and sends. A line that arrives "
        "within 0.1 s of a write waits for the rest of it. The first lines of a job whose subscriber came "
        "after the claim wait for the write that learns of it (0.2 s after the first output, or the "
        "attempt's read between renewals), which is what the p99 shows."
    )
    return result


def _through_websocket(api: Any, ws_url: str, api_key: str, ticker: Ticker, url: str) -> list[float]:
    from websockets.sync.client import connect

    got: list[float] = []
    answer = api.post("/v1/jobs", json=job_body(url))
    answer.raise_for_status()
    job_id = answer.json()["job_id"]
    separator = "&" if "?" in ws_url else "?"
    with connect(f"{ws_url}{separator}api_key={api_key}", open_timeout=30) as ws:
        ws.send(json.dumps({"action": "subscribe", "job_id": job_id}))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            message = json.loads(ws.recv(timeout=60))
            arrived = time.time()
            if message.get("type") == "snapshot":
                ticker.go.set()
            elif message.get("type") == "log" and message.get("stream") == "stdout":
                got += latencies(message.get("text", ""), arrived)
            elif message.get("type") == "status" and message.get("status") not in ("queued", "running"):
                break
    ticker.go.set()
    return got


class _RecordingConnections:
    """Plays @connections for the service-level figure: notes when each log event would be sent."""

    def __init__(self) -> None:
        self.latencies: list[float] = []

    def send(self, _connection_id: str, message: dict[str, Any]) -> None:
        arrived = time.time()
        if message.get("type") == "log" and message.get("stream") == "stdout":
            self.latencies += latencies(str(message.get("text", "")), arrived)


def _service_level(endpoint: str, resources: Any, api_key: str, ticker: Ticker, url: str) -> list[float]:
    module = load_handler("worker", stack_environment(endpoint, resources, api_key))
    from jobgate.models import Job, Subscription, utcnow
    from ulid import ULID

    service = module._worker
    recorder = _RecordingConnections()
    service._publisher._connections = recorder
    events = service._publisher._events
    job = Job(
        job_id=str(ULID()),
        tenant="default",
        stage="acquire",
        command="api",
        args={"url": url, "stream": True},
        timeout_s=120,
        request_hash="bench",
        created_at=utcnow(),
    )
    service._store.create(job)
    events.put_connection("bench-conn", "default", utcnow())
    events.put_subscription(Subscription(job_id=job.job_id, connection_id="bench-conn"), utcnow())
    ticker.go.set()
    done = service.handle(job.job_id, remaining_s=lambda: 900.0, tenant=job.tenant)
    if done is None or done.status.value != "succeeded":
        raise RuntimeError(f"the ticker job did not succeed: {done}")
    return recorder.latencies


if __name__ == "__main__":
    raise SystemExit(run_bench(main, __doc__ or ""))
