"""Run every benchmark, one process each, and write bench/RESULTS.md (what `make bench` runs).

    python bench/run.py [--quick] [--only small_job,throughput] [--output bench/RESULTS.md]

Each benchmark starts what it needs (the local stack, moto, zyra's API server, fresh zyra processes)
and stops it; they run one after the other so they do not measure each other.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, fmt, machine_info
from layer import measure as measure_layer

BENCH_DIR = Path(__file__).resolve().parent
BENCHES = (
    "submit_overhead",
    "small_job",
    "throughput",
    "progress_latency",
    "cold_start",
    "bytes",
    "memory",
    "cost",
    "maps",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "RESULTS.md")
    parser.add_argument("--keep", type=Path, help="also keep each benchmark's JSON in this folder")
    parser.add_argument(
        "--baseline",
        default=(BENCH_DIR / "baseline" / "REF").read_text().strip(),
        help="the commit bench 8 compares with, run in this same run (default: bench/baseline/REF)",
    )
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(BENCHES)
    unknown = sorted(set(names) - set(BENCHES))
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(unknown)}")
    command = " ".join(["python", "bench/run.py", *(shlex.quote(a) for a in (argv or sys.argv[1:]))])
    before = machine_info()
    started = time.time()
    results: list[dict[str, Any]] = []
    failures: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="jobgate-bench-run-") as tmp:
        for name in names:
            out = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, str(BENCH_DIR / f"{name}.py"), "--json", str(out)]
            if args.quick:
                cmd.append("--quick")
            if name == "cost" and args.baseline:
                base = _baseline_cost(args.baseline, Path(tmp), args.quick)
                if base is not None:
                    cmd += ["--baseline", str(base)]
            print(f"\n>>> {name}", flush=True)
            done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for line in done.stdout.splitlines():
                if not line.startswith("{"):  # the in-process handlers' JSON logs stay out of the way
                    print(line, flush=True)
            if done.returncode != 0 or not out.exists():
                failures[name] = done.stdout[-3000:]
                print(f"!!! {name} failed (exit {done.returncode})", flush=True)
                continue
            results.append(json.loads(out.read_text()))
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                (args.keep / out.name).write_text(out.read_text())
    after = machine_info()
    try:
        layer: dict[str, Any] | None = measure_layer()
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"!!! the layer could not be measured: {exc}", flush=True)
        layer = None
    args.output.write_text(render(results, failures, before, after, command, started, args.quick, layer))
    print(f"\nwrote {args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output}")
    print(summary(results))
    return 1 if failures else 0


def _baseline_cost(ref: str, tmp: Path, quick: bool) -> Path | None:
    """Bench 8 on the code at `ref`, now, on this machine: its handlers and its template from a worktree
    of that commit (its layer first on PYTHONPATH), the local stack and the bench from this checkout.
    None when it cannot run."""
    tree = tmp / "baseline-tree"
    out = tmp / "cost-baseline.json"
    added = subprocess.run(
        ["git", "worktree", "add", "--detach", str(tree), ref], cwd=ROOT, capture_output=True, text=True
    )
    if added.returncode != 0:
        print(f"!!! cannot check out {ref} for bench 8's comparison: {added.stderr.strip()}", flush=True)
        return None
    try:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(tree / "layers" / "jobgate"), os.environ.get("PYTHONPATH")])
            ),
            "JOBGATE_BENCH_CODE_ROOT": str(tree),
        }
        cmd = [
            sys.executable,
            str(BENCH_DIR / "cost.py"),
            "--json",
            str(out),
            *(["--quick"] if quick else []),
        ]
        print(f"\n>>> cost (on {ref}, to compare with)", flush=True)
        done = subprocess.run(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        if done.returncode != 0 or not out.exists():
            print(f"!!! bench 8 on {ref} failed (exit {done.returncode}):\n{done.stdout[-2000:]}", flush=True)
            return None
        data = json.loads(out.read_text())
        data["commit"] = ref
        out.write_text(json.dumps(data))
        return out
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _figure_row(fig: dict[str, Any], before: dict[str, Any] | None) -> str:
    if not fig["measured"] or fig["value"] is None:
        return f"| {fig['label']} | not measured yet | | | | {fig['target'] or ''} | {fig['note']} | |"
    value = fmt(fig["value"], fig["unit"])
    peer = fmt(fig["peer_value"], fig["unit"]) if fig["peer_value"] is not None else ""
    ratio = f"{fig['ratio']:.2f}x" if fig["ratio"] is not None else ""
    verdict = {True: "met", False: "**missed**", None: ""}[fig["met"]]
    was = ""
    if before is not None and before.get("value") is not None:
        was = fmt(before["value"], before["unit"])
        if before.get("ratio") is not None:
            was += f" ({before['ratio']:.2f}x)"
    return (
        f"| {fig['label']} | {value} | {fig['peer_label']} | {peer} | {ratio} | {fig['target']} | {verdict} "
        f"| {was} |"
    )


def _before(name: str) -> list[dict[str, Any]]:
    """The figures of a bench as measured on main before this work (bench/baseline/, see its README)."""
    path = BENCH_DIR / "baseline" / f"{name}.json"
    if name == "cost" or not path.exists():  # bench 8 compares with main in its own run
        return []
    figures: list[dict[str, Any]] = json.loads(path.read_text())["figures"]
    return figures


def _matching(fig: dict[str, Any], before: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next(
        (b for b in before if b["label"] == fig["label"] and b.get("peer_label") == fig.get("peer_label")),
        None,
    )


def render(
    results: list[dict[str, Any]],
    failures: dict[str, str],
    before: dict[str, Any],
    after: dict[str, Any],
    command: str,
    started: float,
    quick: bool,
    layer: dict[str, Any] | None = None,
) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in before["versions"].items())
    lines = [
        "# jobgate benchmarks: latest run",
        "",
        "Written by `make bench` (`bench/run.py`); every figure below comes from that one run. Each",
        "benchmark is a script in `bench/` that starts what it needs (the local stack `jobgate dev`, moto,",
        "zyra's own API server, fresh `zyra` processes) on loopback and measures jobgate and its peer in",
        "the same run, taking turns, so the shared machine's noise falls on both. Figures are medians",
        "unless they say otherwise; ratios are jobgate / peer.",
        "",
        "## Machine and run",
        "",
        f"- Command: `{command}`{' (quick: fewer repetitions)' if quick else ''}",
        f"- When: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
        f"{(time.time() - started) / 60:.1f} min, commit {_commit()}",
        f"- CPU: {before['cpu']}, {before['cores']} cores, {before['memory_gb']} GB RAM, "
        f"Linux {before['kernel']}, Python {before['python']}",
        f"- Load average (1/5/15 min) before: {before['load_avg']}, after: {after['load_avg']} "
        "(a shared machine: other work ran alongside)",
        f"- Versions: {versions}",
        "",
        "## Where the time went before (profile)",
        "",
        "Profiled on main before this work, so that the cuts would be jobgate's and not moto's:",
        "`py-spy record -r 200 --subprocesses -f raw -o worker.raw -- python <40 heatmaps through the",
        "in-process worker handler on a local stack>` (py-spy from PyPI). Of the worker process's samples",
        "inside `WorkerService.handle`, jobgate's own Python was about 4%; the rest was botocore and",
        "urllib3 around 15 sequential AWS calls and the waits on them (UpdateItem about 10 ms each on moto,",
        "a new TCP connection per call: the local moto answers HTTP/1.0). The zygote's child spent 98% of",
        "its samples inside zyra (matplotlib's savefig, cartopy's draw): the fork and the imports cost",
        "nothing worth cutting. So the cuts are round trips and what each costs on AWS, below.",
        "",
        "## Figures",
        "",
        "The last column is the same figure on main before this work (bench/baseline/README.md: another",
        "run, another day; the verdicts rest on the ratios of this run only).",
        "",
        "| figure | jobgate | peer | peer figure | ratio | target | verdict | before (jobgate, ratio) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        before = _before(result["name"])
        lines.append(f"| **{result['title']}** | | | | | | | |")
        lines += [_figure_row(fig, _matching(fig, before)) for fig in result["figures"]]
    for name in failures:
        lines.append(f"| **{name}** | failed to run (see below) | | | | | | |")
    lines += ["", "## What the figures say", ""]
    for result in results:
        lines += [f"### {result['title']}", ""]
        lines += [f"- {note}" for note in result["notes"]]
        lines += [
            f"- Ran {result['duration_s']:.0f} s. Details: `{json.dumps(_short(result['details']))}`",
            "",
        ]
    for name, log in failures.items():
        lines += [f"### {name}: failed", "", "```", log.strip()[-2000:], "```", ""]
    lines += _layer_section(layer)
    lines += _soak_section(BENCH_DIR / "soak.json")
    return "\n".join(lines) + "\n"


def _layer_section(layer: dict[str, Any] | None) -> list[str]:
    """The zip functions' layer, measured in this run (bench/layer.py)."""
    lines = ["## The layer", ""]
    if layer is None:
        return [*lines, "Not measured in this run (pip could not install its requirements).", ""]
    largest = ", ".join(f"{name} {size:.1f} MB" for name, size in layer["largest"])
    lines += [
        "The zip functions' layer (`layers/jobgate`, its requirements for Python 3.12 x86_64 plus the",
        f"package, without bytecode) is **{layer['total_mb']:.1f} MB** unzipped: "
        f"{layer['dependencies_mb']:.1f} MB of dependencies and {layer['package_mb']:.1f} MB of jobgate.",
        f"Largest: {largest}. botocore {'is' if layer['botocore_shipped'] else 'is not'} in it "
        "(Lambda's runtime brings its own). X-Ray is Lambda's own active tracing (`Tracing: Active`),",
        "with no SDK in the layer: no segment of ours is recorded, so Powertools' `[tracer]` extra (the",
        f"X-Ray SDK and a second botocore) is not installed; with it the layer would be "
        f"{layer['with_tracer_mb']:.1f} MB.",
        "",
    ]
    return lines


def _soak_section(path: Path) -> list[str]:
    """The last `make soak` (bench/soak.json, written by tests/reliability/test_soak.py), as it ran."""
    if not path.exists():
        return ["## Reliability: the soak", "", "No `make soak` report yet (bench/soak.json).", ""]
    soak = json.loads(path.read_text())
    right = soak["jobs"] - soak["wrong"]
    faults = ", ".join(f"{kind} {n}" for kind, n in sorted(soak["faults_injected"].items()))
    lines = [
        "## Reliability: the soak",
        "",
        f"`make soak` ({soak.get('when', '?')}, commit {soak.get('commit', '?')}; a run of its own):",
        f"{soak['jobs']} jobs from {soak['clients']} concurrent clients against the local stack, every AWS",
        f"call of the functions failing at rate {soak['fault_rate']} the ways AWS fails, and",
        f"{soak['workers_killed']} workers killed mid-job (SIGKILL). Each job is then checked: its status,",
        "the list it is under, exactly one terminal event in its log, its outputs and their sha256 read",
        "back from S3.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| jobs right | {right} of {soak['jobs']} |",
        f"| jobs by kind | {', '.join(f'{k} {n}' for k, n in soak.get('kinds', {}).items())} |",
        f"| wall time | {soak['seconds']:.0f} s |",
        f"| faults injected | {faults} |",
        f"| workers killed mid-job | {soak['workers_killed']} |",
        f"| jobs by attempts | {', '.join(f'{a}: {n}' for a, n in soak['attempts'].items())} |",
        f"| outputs read back and sha256-checked | {soak['outputs_checked']} |",
        f"| client retries (HTTP 5xx/429 answered to the client) | {sum(soak['client_retries'].values())} |",
        "",
    ]
    lines += [f"- wrong: `{w[:300]}`" for w in soak.get("wrong_examples", [])]
    return lines


def _short(details: dict[str, Any]) -> dict[str, Any]:
    """Details with floats rounded to 4 significant digits, for reading (a price per request stays)."""

    def round_all(value: Any) -> Any:
        if isinstance(value, float):
            return float(f"{value:.4g}")
        if isinstance(value, dict):
            return {k: round_all(v) for k, v in value.items()}
        if isinstance(value, list):
            return [round_all(v) for v in value]
        return value

    rounded: dict[str, Any] = round_all(details)
    return rounded


def summary(results: list[dict[str, Any]]) -> str:
    rows = []
    for result in results:
        for fig in result["figures"]:
            if fig["target"]:
                state = {True: "met", False: "MISSED", None: "not measured"}[fig["met"]]
                ratio = f"{fig['ratio']:.2f}x" if fig["ratio"] is not None else "-"
                rows.append(f"  {state:<12} {ratio:>7}  {fig['label']} (target {fig['target']})")
    return "\n".join(["targets:", *rows])


if __name__ == "__main__":
    raise SystemExit(main())
