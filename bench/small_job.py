"""Bench 2: a tiny `visualize heatmap` end to end, in sync mode, against zyra as a fresh process and zyra's
own API server (`POST /v1/cli/run`, sync), all on this machine in the same run, round-robin.

jobgate's figure includes every durable step it makes: the job written to DynamoDB, its id sent
through SQS, the claim, the input staged from S3, logs and the PNG uploaded to S3, the terminal state
written, and the sync poll that sees it. The anatomy below the figures comes from the job's own
timestamps and from the same worker handler run in this process with its AWS calls counted.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from common import (
    HEATMAP_FLAGS,
    BenchResult,
    Figure,
    PeerUnavailable,
    api_client,
    dev_stack,
    median,
    run_bench,
    tiny_field,
    upload,
    wait_terminal,
    zyra_api_server,
    zyra_async_run,
    zyra_env,
    zyra_heatmap_args,
    zyra_process_argv,
    zyra_rq_server,
)
from inproc import counting_calls, load_handler, stack_environment

SYNC_FELL_BACK: list[str] = []  # sync submits that answered 202 (the job outran wait_s)


def main(args: argparse.Namespace) -> BenchResult:
    rounds = 5 if args.quick else 15
    process_rounds = 3 if args.quick else 7
    result = BenchResult("small_job", "2. Small job end to end: sync heatmap vs a fresh zyra and zyra's API")
    with tempfile.TemporaryDirectory(prefix="bench-small-") as tmp_name:
        tmp = Path(tmp_name)
        field = tiny_field(tmp / "field.npy")
        with (
            dev_stack() as dev,
            api_client(dev) as api,
            zyra_api_server(tmp) as zyra_url,
            contextlib.ExitStack() as peers,
        ):
            rq_url, rq_skipped = _optional_rq(peers, tmp)
            asset_id = upload(api, field, "application/x-npy")
            body = {
                "stage": "visualize",
                "command": "heatmap",
                "mode": "sync",
                "wait_s": 25,
                "args": {"input": f"asset://{asset_id}", "output": "map.png", **HEATMAP_FLAGS},
            }
            ours: list[float] = []
            peer_api: list[float] = []
            peer_proc: list[float] = []
            peer_rq: list[float] = []
            rq = peers.enter_context(httpx.Client(base_url=rq_url, timeout=60)) if rq_url else None
            jobs: list[dict[str, Any]] = []
            zyra_stderr: list[str] = []
            with httpx.Client(base_url=zyra_url, timeout=60) as zyra:
                sync_job = _jobgate_sync(api, body)
                zyra_call = _zyra_sync(zyra, field, tmp)
                for _ in range(3):  # warm: API sandboxes, both workers, zyra's server
                    sync_job()
                    zyra_call()
                    if rq is not None:
                        _zyra_rq(rq, field, tmp)
                for i in range(rounds):
                    started = time.perf_counter()
                    job = sync_job()
                    ours.append(time.perf_counter() - started)
                    jobs.append(job)
                    started = time.perf_counter()
                    zyra_stderr.append(zyra_call())
                    peer_api.append(time.perf_counter() - started)
                    if rq is not None:
                        peer_rq.append(_zyra_rq(rq, field, tmp))
                    if i < process_rounds:
                        peer_proc.append(_fresh_process(field, tmp, i))
            anatomy = _worker_anatomy(dev.aws_endpoint_url, dev.resources, dev.api_key, asset_id, rounds=5)

    total = median(ours)
    result.figures += [
        Figure(
            "jobgate sync heatmap (median)",
            total,
            "s",
            peer_label="(a) fresh `zyra` process",
            peer_value=median(peer_proc),
            target="<= 0.20x (a)",
            target_ratio=0.20,
        ),
        Figure(
            "jobgate sync heatmap (median)",
            total,
            "s",
            peer_label="(b) zyra API server, sync",
            peer_value=median(peer_api),
            target="<= 2.0x (b)",
            target_ratio=2.0,
        ),
        Figure(
            "jobgate sync heatmap (median)",
            total,
            "s",
            peer_label="(c) zyra API production mode (RQ + Redis), async submit -> done",
            peer_value=median(peer_rq) if peer_rq else None,
            measured=bool(peer_rq),
            note=rq_skipped,
        ),
    ]
    stages = _stages(jobs, ours)
    empty_stderr = sum(1 for s in zyra_stderr if not s.strip())
    result.details = {
        "rounds": rounds,
        "process_rounds": process_rounds,
        "jobgate_stderr_intact": all("map.png" in job["stderr"] for job in jobs),
        "sync_answers_past_wait_s": len(SYNC_FELL_BACK),
        "zyra_api_empty_stderr": f"{empty_stderr} of {len(zyra_stderr)}",
        **stages,
        **anatomy,
    }
    result.notes += _explain(total, stages, anatomy, empty_stderr, len(zyra_stderr))
    result.notes += _misses(result.figures, anatomy, stages)
    return result


def _misses(figures: list[Figure], anatomy: Mapping[str, Any], stages: Mapping[str, float]) -> list[str]:
    """By how much each target is missed, and what bounds it, from this run's own numbers."""
    notes = []
    ms = 1000.0
    fork = anatomy["worker_fork_to_exit_s"]
    before = stages["created_to_started_s"]  # the job written, its message sent, received, the claim
    around = max(0.0, stages["started_to_finished_s"] - fork)  # input fetched, PNG put, end written
    outside = stages["outside_the_record_s"]  # HTTP both ways, the API's checks, the sync read
    durable = before + around + outside
    vs_process, vs_api = figures[:2]
    if vs_process.met is False and vs_process.ratio is not None and vs_process.peer_value:
        budget = 0.20 * vs_process.peer_value
        notes.append(
            f"(a) missed by {vs_process.ratio - 0.20:.2f}x: {vs_process.ratio:.2f}x a fresh process where "
            f"0.20x ({budget * ms:.0f} ms) is asked. The forked heatmap takes {fork * ms:.0f} ms of it; what "
            f"makes the job durable takes the other {durable * ms:.0f} ms (the job written, sent and claimed "
            f"{before * ms:.0f} ms; its input fetched, its PNG put and its end written {around * ms:.0f} ms; "
            f"the HTTP hops, the API's checks and the sync read that sees the end {outside * ms:.0f} ms). To "
            f"fit, those ten-odd steps (8 AWS calls, the queue hop, 2 HTTP hops) would have to take "
            f"{max(0.0, budget - fork) * ms:.0f} ms in all, a few ms each: less than a moto call costs here."
        )
    if vs_api.met is False and vs_api.ratio is not None and vs_api.peer_value:
        budget = 2.0 * vs_api.peer_value
        notes.append(
            f"(b) missed by {vs_api.ratio - 2.0:.2f}x. zyra's server runs the heatmap in its own process "
            f"with no durable step: {vs_api.peer_value * ms:.0f} ms is the heatmap itself. The same heatmap "
            f"forked from jobgate's warm zygote takes {fork * ms:.0f} ms fork to exit "
            f"({fork / vs_api.peer_value:.1f}x zyra's whole answer), which leaves "
            f"{max(0.0, budget - fork) * ms:.0f} ms of the 2.0x ({budget * ms:.0f} ms) for recording, "
            f"queueing and claiming the job and putting its output in S3, which took {durable * ms:.0f} ms: "
            "out of reach for a job that is recorded, queued, claimed and whose output lands in S3."
        )
    return notes


def _optional_rq(peers: contextlib.ExitStack, tmp: Path) -> tuple[str | None, str]:
    """zyra's production mode if this machine can run it: its URL, or None and why not."""
    try:
        (tmp / "rq").mkdir(exist_ok=True)
        return peers.enter_context(zyra_rq_server(tmp / "rq", workers=2)), ""
    except PeerUnavailable as exc:
        print(f"   skipping zyra's production mode (RQ + Redis): {exc}", flush=True)
        return None, f"skipped: {exc}"


def _zyra_rq(rq: httpx.Client, field: Path, tmp: Path) -> float:
    """One heatmap on zyra's production mode, as a client runs it: async submit, poll until done."""
    out = tmp / f"zyra-rq-{time.monotonic_ns()}.png"
    request = {"stage": "visualize", "command": "heatmap", "args": zyra_heatmap_args(field, out)}
    started = time.perf_counter()
    status = zyra_async_run(rq, request, every_s=0.02)
    elapsed = time.perf_counter() - started
    if status.get("status") != "succeeded" or status.get("exit_code") not in (0, None) or not out.exists():
        raise RuntimeError(f"zyra's production mode failed the heatmap: {status}")
    return elapsed


def _jobgate_sync(api: httpx.Client, body: Mapping[str, Any]) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        answer = api.post("/v1/jobs", json=body)
        job: dict[str, Any] = answer.json()
        if answer.status_code == 202:  # past wait_s: a client then follows the job (counted in the time)
            SYNC_FELL_BACK.append(job["job_id"])
            job = wait_terminal(api, [job["job_id"]], timeout=300, every_s=0.05)[job["job_id"]]
        elif answer.status_code != 200:
            raise RuntimeError(f"sync heatmap answered {answer.status_code}: {answer.text[:500]}")
        if job["status"] != "succeeded":
            raise RuntimeError(f"sync heatmap ended {job['status']}: {job.get('error')}")
        return job

    return run


def _zyra_sync(zyra: httpx.Client, field: Path, tmp: Path) -> Callable[[], str]:
    count = [0]

    def run() -> str:
        count[0] += 1
        out = tmp / f"zyra-api-{count[0]}.png"
        request = {
            "stage": "visualize",
            "command": "heatmap",
            "mode": "sync",
            "args": zyra_heatmap_args(field, out),
        }
        answer = zyra.post("/v1/cli/run", json=request).json()
        if answer.get("exit_code") != 0 or not out.exists():
            raise RuntimeError(f"zyra's API failed the heatmap: {answer}")
        return str(answer.get("stderr") or "")

    return run


def _fresh_process(field: Path, tmp: Path, index: int) -> float:
    out = tmp / f"zyra-process-{index}.png"
    started = time.perf_counter()
    subprocess.run(
        zyra_process_argv(field, out), env=zyra_env(tmp), check=True, capture_output=True, timeout=120
    )
    elapsed = time.perf_counter() - started
    if not out.exists():
        raise RuntimeError("the zyra process wrote no PNG")
    return elapsed


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def _stages(jobs: list[dict[str, Any]], totals: list[float]) -> dict[str, float]:
    """Where a sync job's time goes, from the job's own timestamps (one clock: this machine's)."""
    queue_wait = [_ts(j["started_at"]) - _ts(j["created_at"]) for j in jobs]
    run = [_ts(j["finished_at"]) - _ts(j["started_at"]) for j in jobs]
    recorded = [_ts(j["finished_at"]) - _ts(j["created_at"]) for j in jobs]
    return {
        "created_to_started_s": median(queue_wait),
        "started_to_finished_s": median(run),
        "outside_the_record_s": median([t - r for t, r in zip(totals, recorded, strict=True)]),
    }


def _worker_anatomy(
    endpoint: str, resources: Mapping[str, str], api_key: str, asset_id: str, rounds: int
) -> dict[str, Any]:
    """The worker handler in this process, on the same moto: its AWS calls and its command's time."""
    started = time.perf_counter()
    module = load_handler("worker", stack_environment(endpoint, resources, api_key))
    cold_start = time.perf_counter() - started
    service = module._worker
    store = service._store
    from jobgate.services.executor import ForkRunner

    # Without the zygote, each job's child is forked from the worker itself, warmed as the zygote is.
    registry = service._registry
    registry.command_set(registry.get("visualize", "heatmap").command_set).warm()

    # With the zygote (as deployed: exec'd clean, imports warm, one child forked ahead) and without it
    # (each job's child forked from the worker itself, imports as warm), taking turns.
    runners = {"zygote": service._runner, "fork": ForkRunner(service._guarded_target)}
    exec_times: dict[str, list[float]] = {mode: [] for mode in runners}
    handle_times: dict[str, list[float]] = {mode: [] for mode in runners}

    def timed(mode: str, runner: Any) -> Any:
        real_run = runner.run

        def run(*args: Any, **kwargs: Any) -> Any:
            begun = time.perf_counter()
            try:
                return real_run(*args, **kwargs)
            finally:
                exec_times[mode].append(time.perf_counter() - begun)

        return run

    for mode, runner in runners.items():
        runner.run = timed(mode, runner)
    # The jobs are recorded first, as the API records them: only the worker's own calls are counted.
    jobs = {(i, mode): _anatomy_job(store, asset_id) for i in range(rounds + 1) for mode in runners}
    try:
        with counting_calls() as log:
            for i in range(rounds + 1):
                for mode, runner in runners.items():
                    job = jobs[(i, mode)]
                    service._runner = runner
                    begun = time.perf_counter()
                    done = service.handle(job.job_id, remaining_s=lambda: 900.0, tenant=job.tenant)
                    handle_times[mode].append(time.perf_counter() - begun)
                    if done is None or done.status.value != "succeeded":
                        raise RuntimeError(f"in-process worker did not succeed: {done}")
                if i == 0:  # the first jobs pay for lazy set-up; not counted
                    log.reset()
                    for times in (*exec_times.values(), *handle_times.values()):
                        times.clear()
    finally:
        service._runner = runners["zygote"]
        for runner in runners.values():
            del runner.run  # the instance attribute goes; the class's method is back
    jobs = 2 * rounds
    return {
        "worker_cold_start_s": cold_start,
        "worker_handle_s": median(handle_times["zygote"]),
        "worker_fork_to_exit_s": median(exec_times["zygote"]),
        "worker_handle_without_zygote_s": median(handle_times["fork"]),
        "worker_fork_to_exit_without_zygote_s": median(exec_times["fork"]),
        "worker_aws_calls_per_job": log.total_calls / jobs,
        "worker_aws_seconds_per_job": log.total_seconds / jobs,
        "worker_calls_per_job": {name: count / jobs for name, count in sorted(log.calls.items())},
    }


def _anatomy_job(store: Any, asset_id: str) -> Any:
    """A heatmap job recorded as the API records it (where its input's file is, too), for the
    in-process worker."""
    from jobgate.models import InputObject, Job, utcnow
    from ulid import ULID

    asset = store.get_asset(asset_id, tenant="default")
    job = Job(
        job_id=str(ULID()),
        tenant="default",
        stage="visualize",
        command="heatmap",
        args={"input": f"asset://{asset_id}", "output": "map.png", **HEATMAP_FLAGS},
        inputs={"input": asset_id},
        input_objects={asset_id: InputObject(key=asset.key, size=asset.size)},
        timeout_s=60,
        request_hash="bench",
        created_at=utcnow(),
    )
    store.create(job)
    return job


def _explain(
    total: float, stages: Mapping[str, float], anatomy: Mapping[str, Any], empty: int, calls: int
) -> list[str]:
    ms = 1000.0
    handle = anatomy["worker_handle_s"]
    aws = anatomy["worker_aws_seconds_per_job"]
    fork = anatomy["worker_fork_to_exit_s"]
    calls_text = ", ".join(f"{n} x{c:g}" for n, c in anatomy["worker_calls_per_job"].items())
    return [
        f"Where jobgate's {total * ms:.0f} ms go (medians): created -> started (the job written, its "
        f"SendMessage, the SQS poller's receive, the invoke, the claim) "
        f"{stages['created_to_started_s'] * ms:.0f} ms; started -> finished (input fetched, the forked "
        f"heatmap, the PNG put, the end written with the job's events) "
        f"{stages['started_to_finished_s'] * ms:.0f} ms; outside the record (HTTP gateway both ways, the "
        f"API's checks before created_at, the sync read that sees the end: reads 25 ms apart, growing by "
        f"a quarter) {stages['outside_the_record_s'] * ms:.0f} ms.",
        f"The worker in-process takes {handle * ms:.0f} ms a job: the forked heatmap {fork * ms:.0f} ms "
        f"(fork to exit), {anatomy['worker_aws_calls_per_job']:g} AWS calls {aws * ms:.0f} ms "
        f"({calls_text}), the rest Python around them.",
        f"The zygote: fork to exit {fork * ms:.0f} ms with it, "
        f"{anatomy['worker_fork_to_exit_without_zygote_s'] * ms:.0f} ms forking each job from the worker "
        f"itself (imports as warm; its child would hold the worker's credentials); the job's whole path "
        f"{handle * ms:.0f} ms against {anatomy['worker_handle_without_zygote_s'] * ms:.0f} ms.",
        f"zyra's API server answered an empty stderr {empty} of {calls} times (it keeps logging into the "
        "first request's buffer); jobgate's stderr carried zyra's `INFO: map.png` line every time.",
    ]


if __name__ == "__main__":
    raise SystemExit(run_bench(main, __doc__ or ""))
