"""Bench 7: the worker parent's memory over 200 heatmap jobs, against zyra's heatmap called in-process.

The worker sandboxes of the local stack are the parents that fork one child per job; their resident
set size is read from /proc after every batch of 20 jobs. The peer is what the same command does to a
process that runs it in-process, as zyra's own API server does: 20 calls, RSS after the first and
after the last (it never closes its matplotlib figure).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import (
    HEATMAP_FLAGS,
    BenchResult,
    Figure,
    api_client,
    dev_stack,
    function_pids,
    run_bench,
    tiny_field,
    upload,
    wait_terminal,
    zyra_env,
)

BATCH = 20
FLAT_MB = 5.0  # growth at or under this over the whole run counts as flat (sampling noise is ~1 MB)

_IN_PROCESS = """
import json, sys
from pathlib import Path
from zyra.cli import main

def rss_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

field, out = sys.argv[1], Path(sys.argv[2])
samples = []
for i in range(20):
    code = main(["visualize", "heatmap", "--input", field, "--output", str(out / f"m{i}.png"),
                 "--no-coastline", "--no-borders", "--no-gridlines"])
    assert code in (0, None), code
    samples.append(rss_mb())
import matplotlib.pyplot as plt
print(json.dumps({"rss_mb": samples, "open_figures": len(plt.get_fignums())}))
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def main(args: argparse.Namespace) -> BenchResult:
    jobs = 40 if args.quick else 200
    result = BenchResult("memory", f"7. Memory: the worker parent's RSS over {jobs} jobs")
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp_name:
        tmp = Path(tmp_name)
        field = tiny_field(tmp / "field.npy")
        done = subprocess.run(
            [sys.executable, "-c", _IN_PROCESS, str(field), str(tmp)],
            env=zyra_env(tmp),
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp,
        )
        if done.returncode != 0:
            raise RuntimeError(f"in-process zyra failed:\n{done.stderr[-2000:]}")
        peer = json.loads(done.stdout.strip().splitlines()[-1])
        with dev_stack(workers=2) as dev, api_client(dev) as api:
            workers = function_pids(dev, "WorkerFunction")
            asset_id = upload(api, field, "application/x-npy")
            body = {
                "stage": "visualize",
                "command": "heatmap",
                "args": {"input": f"asset://{asset_id}", "output": "map.png", **HEATMAP_FLAGS},
            }
            samples: list[list[float]] = []  # per batch, one RSS per worker
            for _ in range(jobs // BATCH):
                ids = [api.post("/v1/jobs", json=body).json()["job_id"] for _ in range(BATCH)]
                finished = wait_terminal(api, ids, timeout=600)
                failed = [j for j in finished.values() if j["status"] != "succeeded"]
                if failed:
                    raise RuntimeError(f"jobs failed: {failed[:2]}")
                samples.append([rss_mb(pid) for pid in workers])
    # The first batch warms the parent's caches (boto3 models, pydantic, zyra's first call): the
    # growth is counted from the end of the first batch.
    growth = [samples[-1][w] - samples[0][w] for w in range(len(workers))]
    peer_growth = peer["rss_mb"][-1] - peer["rss_mb"][0]
    result.figures.append(
        Figure(
            f"worker parent RSS growth, jobs {BATCH}..{jobs} (largest of 2)",
            max(growth),
            "MB",
            peer_label="zyra heatmap in-process, calls 1..20",
            peer_value=peer_growth,
            target=f"flat (<= {FLAT_MB:g} MB)",
            target_max=FLAT_MB,
        )
    )
    result.details = {
        "jobs": jobs,
        "worker_rss_mb_per_batch": [[round(v, 1) for v in row] for row in samples],
        "zyra_in_process_rss_mb": [round(v, 1) for v in peer["rss_mb"]],
        "zyra_open_figures_after_20": peer["open_figures"],
    }
    result.notes.append(
        f"Worker parents' RSS after each batch of {BATCH}: "
        + "; ".join(f"{', '.join(f'{v:.0f}' for v in row)} MB" for row in samples)
        + f". zyra in-process: {peer['rss_mb'][0]:.0f} -> {peer['rss_mb'][-1]:.0f} MB over 20 calls, "
        f"{peer['open_figures']} matplotlib figures left open. Each jobgate job runs in a forked child, "
        "so what the command leaks goes with the child."
    )
    return result


if __name__ == "__main__":
    raise SystemExit(run_bench(main, __doc__ or ""))
