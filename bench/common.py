"""What every benchmark shares: the local stack, the peers (moto, zyra's API server), stats and results.

A benchmark is a script that starts what it needs, measures jobgate and its peer in the same run
(interleaved where it can, so the shared machine's noise hits both), and writes its figures as JSON
for `bench/run.py`. Only loopback addresses are used; every loop is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from jobgate_local.testing import DevProcess, launch_dev

ROOT = Path(__file__).resolve().parents[1]
# The code the in-process handlers run: this checkout, or another one (bench/run.py runs bench 8 on the
# code it compares with too, from a worktree of it, with its layer first on PYTHONPATH).
CODE_ROOT = Path(os.environ.get("JOBGATE_BENCH_CODE_ROOT") or ROOT)
# The stack is that code's too: its template says how its functions are configured (the bootstrap
# key from the environment before, from a secret since), so the local stack runs what it ran.
TEMPLATE = CODE_ROOT / "template.yaml"
BENCH_API_KEY = "bench-api-key-0123456789abcdef"
# The job limits are per tenant and would refuse a benchmark's bursts (429): turned off (0) here.
# Loopback is allow-listed for the benches whose command fetches from a local server.
BENCH_PARAMS = {"RateLimitPerSecond": "0", "MaxActiveJobsPerTenant": "0", "EgressAllowList": "127.0.0.0/8"}
HEATMAP_FLAGS = {"no_coastline": True, "no_borders": True, "no_gridlines": True}
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled"}


# -- results --------------------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured figure, its peer's figure in the same run, and the target on their ratio."""

    label: str
    value: float | None
    unit: str
    peer_label: str = ""
    peer_value: float | None = None
    target: str = ""
    target_ratio: float | None = None  # the ratio must stay at or under this (or over, with higher_is_better)
    higher_is_better: bool = False
    target_max: float | None = None  # or: the value itself must stay at or under this
    measured: bool = True
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.peer_value:
            return None
        return self.value / self.peer_value

    @property
    def met(self) -> bool | None:
        if self.target_max is not None and self.value is not None:
            return self.value <= self.target_max
        if self.target_ratio is None or self.ratio is None:
            return None
        return self.ratio >= self.target_ratio if self.higher_is_better else self.ratio <= self.target_ratio

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}


@dataclass
class BenchResult:
    name: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "figures": [f.as_json() for f in self.figures],
            "notes": self.notes,
            "details": self.details,
            "duration_s": self.duration_s,
        }

    def print(self) -> None:
        print(f"\n== {self.title}")
        for fig in self.figures:
            print("   " + figure_line(fig))
        for note in self.notes:
            print(f"   - {note}")


def figure_line(fig: Figure) -> str:
    if not fig.measured or fig.value is None:
        return f"{fig.label}: not measured yet ({fig.note})"
    text = f"{fig.label}: {fmt(fig.value, fig.unit)}"
    if fig.peer_value is not None:
        text += f" | {fig.peer_label}: {fmt(fig.peer_value, fig.unit)}"
        text += f" | ratio {fig.ratio:.2f}x" if fig.ratio is not None else ""
    if fig.target:
        verdict = {True: "met", False: "MISSED", None: "-"}[fig.met]
        text += f" | target {fig.target}: {verdict}"
    return text


def fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "MB/s":
        return f"{value:.0f} MB/s"
    return f"{value:.2f} {unit}"


def bench_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", type=Path, help="write the result there (bench/run.py reads it)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, for a smoke run")
    parser.add_argument(
        "--baseline", type=Path, help="this bench's JSON from the code it is compared with (bench 8)"
    )
    return parser.parse_args(argv)


def run_bench(main: Callable[[argparse.Namespace], BenchResult], description: str) -> int:
    args = bench_args(description)
    started = time.monotonic()
    result = main(args)
    result.duration_s = round(time.monotonic() - started, 1)
    result.print()
    if args.json:
        args.json.write_text(json.dumps(result.as_json(), indent=2, default=str) + "\n")
    return 0


# -- statistics -----------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank: an observed value, never interpolated."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(np.ceil(q / 100.0 * len(ordered)))))
    return float(ordered[rank - 1])


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# -- machine --------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_gb = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    versions = {}
    for dist in ("zyra", "moto", "boto3", "fastapi", "mangum", "aws-lambda-powertools", "uvicorn"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[dist] = version(dist)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
    }


# -- data -----------------------------------------------------------------------------------------


def tiny_field(path: Path) -> Path:
    """The tiny 2-D field of README's curl example (40 x 80 floats)."""
    y, x = np.mgrid[0:40, 0:80]
    np.save(path, np.sin(x / 8) * np.cos(y / 6))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=2.0)
            return
        except httpx.TransportError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{url}: the server exited with {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout:.0f} s") from None
            time.sleep(0.1)


# -- the local stack ------------------------------------------------------------------------------


@contextlib.contextmanager
def dev_stack(
    *, workers: int = 2, params: dict[str, str] | None = None, extra_args: Sequence[str] = ()
) -> Iterator[DevProcess]:
    """`jobgate dev` as a user starts it (a subprocess on free ports), stopped with Ctrl-C after."""
    args: list[str] = ["--workers", str(workers), *extra_args]
    for key, value in {**BENCH_PARAMS, **(params or {})}.items():
        args += ["--param", f"{key}={value}"]
    with tempfile.TemporaryDirectory(prefix="jobgate-bench-") as tmp:
        dev = launch_dev(
            template=TEMPLATE,
            workdir=Path(tmp),
            args=args,
            env={**os.environ, "JOBGATE_DEV_API_KEY": BENCH_API_KEY},
            timeout=180,
        )
        try:
            yield dev
        finally:
            resume(function_pids(dev, "WorkerFunction"))
            if dev.process.poll() is None:
                dev.stop()


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds it used, its reaped children's included), for every process."""
    ticks = os.sysconf("SC_CLK_TCK")
    table: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            # After the command: state, ppid, ..., utime (12), stime, cutime, cstime (15), 0-based from state.
            cpu = sum(int(f) for f in fields[11:15]) / ticks
            table[int(entry.name)] = (int(fields[1]), cpu)
    return table


def cpu_by_part(dev: DevProcess) -> dict[str, float]:
    """CPU seconds used so far by each part of the local stack: moto, each function's sandboxes (with
    the zygote and the jobs they fork), and the stack's own process (gateways, SQS pollers)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)

    def tree(root: int) -> float:
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            total += table.get(pid, (0, 0.0))[1]
            todo += children.get(pid, [])
        return total

    parts: dict[str, float] = {}
    if dev.state.get("moto_pid"):
        parts["moto"] = tree(int(dev.state["moto_pid"]))
    for logical_id in dev.state.get("functions", {}):
        parts[logical_id] = sum(tree(pid) for pid in function_pids(dev, logical_id))
    own = table.get(int(dev.state["pid"]), (0, 0.0))[1]
    parts["stack (gateways, pollers)"] = own
    return parts


def api_client(dev: DevProcess, timeout: float = 60.0) -> httpx.Client:
    return httpx.Client(base_url=dev.http_url, headers={"X-API-Key": dev.api_key}, timeout=timeout)


def function_pids(dev: DevProcess, logical_id: str) -> list[int]:
    """The sandboxes of one function as the state file recorded them at start."""
    return [int(pid) for pid in dev.state["functions"].get(logical_id, {}).get("pids", [])]


def pause(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)


def resume(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def upload(api: httpx.Client, path: Path, media_type: str, timeout: float = 60.0) -> str:
    """Upload an input as a client does: a presigned upload straight to S3, then wait for AVAILABLE."""
    data = path.read_bytes()
    answer = api.post(
        "/v1/uploads", json={"filename": path.name, "media_type": media_type, "size": len(data)}
    )
    answer.raise_for_status()
    created = answer.json()
    target = created["upload"]
    if target["method"] == "POST":
        sent = httpx.post(target["url"], data=target["fields"], files={"file": (path.name, data, media_type)})
    else:
        sent = httpx.put(target["url"], content=data, headers=target.get("headers", {}))
    sent.raise_for_status()
    asset_id: str = created["asset_id"]
    deadline = time.monotonic() + timeout
    while api.get(f"/v1/assets/{asset_id}").json()["status"] != "AVAILABLE":
        if time.monotonic() > deadline:
            raise RuntimeError(f"asset {asset_id} never became AVAILABLE")
        time.sleep(0.1)
    return asset_id


def wait_terminal(
    api: httpx.Client, job_ids: Sequence[str], timeout: float, every_s: float = 0.25
) -> dict[str, dict[str, Any]]:
    """Wait until every job has ended; answer each job as last read (raises when time runs out).

    Reads the tenant's job list (newest first, 100 a page) rather than each job, so that waiting
    costs the stack little while it is being measured.
    """
    pending = set(job_ids)
    done: dict[str, dict[str, Any]] = {}
    oldest = min(job_ids)  # ULIDs sort by time: the list can stop at the oldest job waited for
    deadline = time.monotonic() + timeout
    while pending:
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            page = api.get("/v1/jobs", params=params).json()
            for job in page["items"]:
                if job["job_id"] in pending and job["status"] in TERMINAL:
                    done[job["job_id"]] = job
                    pending.discard(job["job_id"])
            cursor = page.get("next_cursor")
            if not cursor or not page["items"] or page["items"][-1]["job_id"] <= oldest:
                break
        if pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(pending)} jobs had not ended after {timeout:.0f} s")
            time.sleep(every_s)
    return done


# -- peers ----------------------------------------------------------------------------------------


def zyra_env(workdir: Path) -> dict[str, str]:
    """A clean environment for zyra's own processes: no API key (open server), Agg backend, no AWS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ZYRA_", "DATAVIZHUB_"))}
    env.update(MPLBACKEND="Agg", MPLCONFIGDIR=str(workdir / ".mpl"), HOME=str(workdir))
    return env


# The peers' server processes by base URL, for the benches that read their CPU time.
PEER_PIDS: dict[str, list[int]] = {}


def cpu_of(pids: Sequence[int]) -> float:
    """CPU seconds used so far by these processes and all their descendants."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, list(pids)
    while todo:
        pid = todo.pop()
        total += table.get(pid, (0, 0.0))[1]
        todo += children.get(pid, [])
    return total


@contextlib.contextmanager
def zyra_api_server(workdir: Path) -> Iterator[str]:
    """zyra's own API server (`uvicorn zyra.api.server:app`) on a free loopback port; its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "zyra.api.server:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=workdir,
        env=zyra_env(workdir),
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "zyra-api.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    PEER_PIDS[url] = [proc.pid]
    try:
        wait_http(f"{url}/docs", timeout=120, proc=proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class PeerUnavailable(RuntimeError):
    """A peer this machine cannot run; the benchmark reports it as skipped, with why."""


def rq_peer_missing() -> str | None:
    """Why zyra's production mode (RQ workers on Redis) cannot run here, or None when it can."""
    import importlib.util
    import shutil

    if shutil.which("redis-server") is None:
        return "no `redis-server` on PATH (Debian: apt-get install redis-server; `make bench` does, as root)"
    if importlib.util.find_spec("rq") is None or not Path(sys.executable).with_name("rq").exists():
        return "the `rq` package is not installed (`make bench` installs `rq<2`, which zyra's API works with)"
    return None


@contextlib.contextmanager
def zyra_rq_server(workdir: Path, workers: int = 2) -> Iterator[str]:
    """zyra's API in its production mode: async jobs on `workers` RQ workers over a private Redis.

    Raises PeerUnavailable when Redis or rq is missing. Redis runs on a free loopback port with no
    persistence; everything started here is stopped on the way out.
    """
    missing = rq_peer_missing()
    if missing:
        raise PeerUnavailable(missing)
    redis_port = free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    env = {**zyra_env(workdir), "ZYRA_USE_REDIS": "1", "ZYRA_REDIS_URL": redis_url, "REDIS_URL": redis_url}
    procs: list[subprocess.Popen[bytes]] = []
    log = (workdir / "zyra-rq.log").open("wb")
    try:
        procs.append(
            subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(workdir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        _wait_port(redis_port, procs[0])
        rq = str(Path(sys.executable).with_name("rq"))
        for _ in range(workers):
            procs.append(
                subprocess.Popen(
                    [rq, "worker", "zyra", "--url", redis_url],
                    cwd=workdir,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        port = free_port()
        api = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "zyra.api.server:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(api)
        url = f"http://127.0.0.1:{port}"
        PEER_PIDS[url] = [proc.pid for proc in procs]
        wait_http(f"{url}/docs", timeout=120, proc=api)
        yield url
    finally:
        for proc in reversed(procs):  # the API, the workers, then Redis: nobody loses its server first
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"port {port}: the server exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s")
        time.sleep(0.05)


def zyra_async_run(
    zyra: httpx.Client, request: dict[str, Any], timeout: float = 120.0, every_s: float = 0.02
) -> dict[str, Any]:
    """One async job on zyra's API, from submit to its end, polled every `every_s`; the last status."""
    answer = zyra.post("/v1/cli/run", json={**request, "mode": "async"}).json()
    job_id = answer["job_id"]
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = zyra.get(f"/v1/jobs/{job_id}").json()
        if status.get("status") in ("succeeded", "failed", "canceled"):
            return status
        if time.monotonic() > deadline:
            raise RuntimeError(f"zyra's job {job_id} did not end within {timeout:.0f} s")
        time.sleep(every_s)


def zyra_heatmap_args(input_path: Path, output: Path) -> dict[str, Any]:
    """The same heatmap request for zyra's API (`args` keyed by dest, as jobgate's)."""
    return {"input": str(input_path), "output": str(output), **HEATMAP_FLAGS}


def zyra_process_argv(input_path: Path, output: Path) -> list[str]:
    zyra = Path(sys.executable).with_name("zyra")
    return [
        str(zyra),
        "visualize",
        "heatmap",
        "--input",
        str(input_path),
        "--output",
        str(output),
        "--no-coastline",
        "--no-borders",
        "--no-gridlines",
    ]


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto server of its own, for the benches that need AWS but not the whole stack."""
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/moto-api/", proc=proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def aws_env(endpoint_url: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }


def boto_client(service: str, endpoint_url: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client(
        service,  # type: ignore[call-overload]
        endpoint_url=endpoint_url,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 0}),
    )


def nagle_penalty(rounds: int = 30) -> dict[str, float]:
    """A control for the HTTP figures: one trivial ASGI app behind uvicorn on a listening socket made
    with ``proto=0`` (as ``jobgate_local.procs.reserve_port`` makes it) and one made with
    ``IPPROTO_TCP``. asyncio only sets TCP_NODELAY on accepted sockets whose ``proto`` is
    IPPROTO_TCP, so the first answers each POST after the peer's delayed ACK (~40 ms on Linux).
    """
    import asyncio
    import threading

    import uvicorn

    async def app(scope: dict[str, Any], _receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})

    medians: dict[str, float] = {}
    for label, proto in (("proto_0_s", 0), ("ipproto_tcp_s", socket.IPPROTO_TCP)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off"))
        thread = threading.Thread(target=asyncio.run, args=(server.serve(sockets=[sock]),), daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        wait_http(url, timeout=10)
        with httpx.Client() as client:
            for _ in range(5):
                client.post(url, content=b"{}")
            medians[label] = median([timed(partial(client.post, url, content=b"{}")) for _ in range(rounds)])
        server.should_exit = True
        thread.join(5)
        sock.close()
    return medians


def local_gateways_set_nodelay() -> bool:
    """Whether the local stack's listening sockets (jobgate_local.procs.reserve_port) say they are TCP,
    so that asyncio sets TCP_NODELAY on their connections (see :func:`nagle_penalty`)."""
    from jobgate_local.procs import reserve_port

    sock = reserve_port("127.0.0.1", 0, "bench probe")
    try:
        return bool(sock.proto == socket.IPPROTO_TCP)
    finally:
        sock.close()
