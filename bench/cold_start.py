"""Bench 5: each function's cold start (its handler module's import, timed inside a fresh interpreter, as
Lambda's init is) against the floor of bare `fastapi` + `mangum` + `boto3` imports with one client.

The interpreter's own start and exit are not part of a cold start and are not counted. The worker's
cold start includes its zygote importing zyra and warming it with one real heatmap; what that buys is
measured too: a job forked from the warm zygote against the same command as a fresh `zyra` process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, BenchResult, Figure, median, run_bench, tiny_field, zyra_env, zyra_process_argv

# Each probe runs in a fresh interpreter and prints {"seconds": <init time>, ...} as its last line.
_FLOOR_FASTAPI = """
import time, json
t = time.perf_counter()
import boto3, fastapi, mangum
boto3.client("dynamodb")
print(json.dumps({"seconds": time.perf_counter() - t}))
"""

_FLOOR_POWERTOOLS = """
import time, json
t = time.perf_counter()
import boto3
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
APIGatewayHttpResolver()
boto3.client("dynamodb")
print(json.dumps({"seconds": time.perf_counter() - t}))
"""

_HANDLER = """
import importlib.util, json, sys, time
t = time.perf_counter()
spec = importlib.util.spec_from_file_location("app", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
init = time.perf_counter() - t
out = {"seconds": init, "modules": len(sys.modules)}
if len(sys.argv) > 2:  # the worker: what a job forked from its warm zygote costs
    import os, tempfile
    from pathlib import Path
    from jobgate.services.executor import Watch
    times = []
    for i in range(5):
        work = Path(tempfile.mkdtemp())
        work.chmod(0o755)  # the job's user may not be this process's
        (work / "x.npy").write_bytes(Path(sys.argv[2]).read_bytes())
        argv = ["visualize", "heatmap", "--input=x.npy", "--output=m.png", "--no-coastline",
                "--no-borders", "--no-gridlines"]
        env = {"PATH": os.environ["PATH"], "HOME": str(work), "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(work)}
        r = module._zygote.run("zyra", argv, workdir=work, env=env, stdout_path=work / "o",
                               stderr_path=work / "e", watch=Watch(timeout_s=60))
        assert r.exit_code == 0 and (work / "m.png").exists(), (work / "e").read_text()
        times.append(r.duration_s)
    out["fork_job_s"] = sorted(times)[len(times) // 2]
print(json.dumps(out))
"""

FUNCTIONS = ("api", "worker", "assets", "deadletter", "ws", "sweeper")


def _env() -> dict[str, str]:
    """What the handlers need to pass their settings; nothing is called at import, so no AWS is needed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "JOBGATE_", "POWERTOOLS_"))}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        AWS_ENDPOINT_URL="http://127.0.0.1:9",  # nothing listens: an import that calls AWS would fail
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        JOBGATE_TABLE_NAME="jobs",
        JOBGATE_QUEUE_URL="http://127.0.0.1:9/123456789012/jobs",
        JOBGATE_BUCKET_NAME="bucket",
        JOBGATE_API_KEY="bench-api-key-0123456789abcdef",
        POWERTOOLS_SERVICE_NAME="jobgate",
        POWERTOOLS_TRACE_DISABLED="true",
        POWERTOOLS_LOG_LEVEL="WARNING",
        MPLBACKEND="Agg",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def _probe(code: str, *args: str, cwd: Path | None = None) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"probe failed ({done.returncode}):\n{done.stderr[-2000:]}")
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def _import_self_times(code: str, *args: str, cwd: Path | None = None) -> dict[str, float]:
    """Seconds of import spent in each top-level package's own modules (``-X importtime`` self times)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, *args],
        env=_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, _, name = line.split(":", 1)[1].split("|")
        parts = name.strip().split(".")
        top = ".".join(parts[:3]) if parts[0] == "jobgate" else parts[0]  # our own modules, one by one
        out[top] = out.get(top, 0.0) + int(own) / 1e6
    return out


def main(args: argparse.Namespace) -> BenchResult:
    rounds = 2 if args.quick else 9
    result = BenchResult("cold_start", "5. Cold start: each handler's init vs bare fastapi+mangum+boto3")
    samples: dict[str, list[float]] = {name: [] for name in ("floor", "floor_powertools", *FUNCTIONS)}
    fork_job: list[float] = []
    fresh: list[float] = []
    modules: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp_name:
        tmp = Path(tmp_name)
        field = tiny_field(tmp / "field.npy")
        present = [f for f in FUNCTIONS if (ROOT / "functions" / f / "app.py").exists()]
        for _ in range(rounds):  # round-robin, so the machine's noise spreads over all of them
            samples["floor"].append(_probe(_FLOOR_FASTAPI)["seconds"])
            samples["floor_powertools"].append(_probe(_FLOOR_POWERTOOLS)["seconds"])
            for name in present:
                app = ROOT / "functions" / name / "app.py"
                extra = (str(field),) if name == "worker" else ()
                got = _probe(_HANDLER, str(app), *extra, cwd=app.parent)
                samples[name].append(got["seconds"])
                modules[name] = got["modules"]
                if name == "worker":
                    fork_job.append(got["fork_job_s"])
            started = time.perf_counter()
            subprocess.run(
                zyra_process_argv(field, tmp / "fresh.png"),
                env=zyra_env(tmp),
                check=True,
                capture_output=True,
            )
            fresh.append(time.perf_counter() - started)

    floor = median(samples["floor"])
    result.figures.append(
        Figure(
            "ApiFunction init",
            median(samples["api"]),
            "s",
            peer_label="floor: import fastapi+mangum+boto3, one client",
            peer_value=floor,
            target="<= 1.1x the floor",
            target_ratio=1.1,
        )
    )
    for name in present:
        if name == "api":
            continue
        result.figures.append(
            Figure(f"{name} init", median(samples[name]), "s", peer_label="the same floor", peer_value=floor)
        )
    result.figures.append(
        Figure(
            "Powertools resolver + boto3 floor",
            median(samples["floor_powertools"]),
            "s",
            peer_label="fastapi floor",
            peer_value=floor,
        )
    )
    worker_init = median(samples["worker"]) if samples["worker"] else 0.0
    per_job_saved = median(fresh) - median(fork_job) if fork_job else 0.0
    result.details = {
        "rounds": rounds,
        "medians_s": {k: median(v) for k, v in samples.items() if v},
        "modules_loaded": modules,
        "worker_fork_job_s": median(fork_job) if fork_job else None,
        "fresh_zyra_process_s": median(fresh),
    }
    if fork_job:
        result.notes.append(
            f"The worker's cold start ({worker_init:.2f} s: jobgate, zyra's stages and one warming heatmap) "
            f"buys a job forked from the warm zygote in {median(fork_job) * 1000:.0f} ms (fork to exit) "
            f"instead of {median(fresh):.2f} s for a fresh `zyra` process: {per_job_saved:.2f} s saved per "
            f"job, so the init has paid for itself by job {int(worker_init / per_job_saved) + 1} of a "
            "container's life."
        )
    api_ratio = median(samples["api"]) / floor
    if api_ratio > 1.1:
        app = ROOT / "functions" / "api" / "app.py"
        theirs = _import_self_times(_FLOOR_FASTAPI)
        ours = _import_self_times(_HANDLER, str(app), cwd=app.parent)
        ranked = sorted(((t - theirs.get(n, 0.0), n) for n, t in ours.items()), reverse=True)
        heavier = [(t, n) for t, n in ranked if t > 0.005]
        result.details["api_imports_beyond_floor_s"] = {n: round(t, 3) for t, n in heavier}
        listed = ", ".join(f"{n} {t * 1000:.0f} ms" for t, n in heavier[:8])
        result.notes.append(
            f"ApiFunction init is {api_ratio:.2f}x the floor (missed by {api_ratio - 1.1:.2f}x). What it "
            f"imports beyond fastapi+mangum+boto3 (-X importtime, own time by package): {listed}. "
            "Every one of them is imported at module level by the handler's import chain; the ones a "
            "request does not need could be imported lazily."
        )
    return result


if __name__ == "__main__":
    raise SystemExit(run_bench(main, __doc__ or ""))
