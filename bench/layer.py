"""The zip functions' layer as `sam build` would make it: its requirements installed for Lambda's
platform (Python 3.12, x86_64 manylinux wheels) plus the jobgate package, measured on disk.

    python bench/layer.py [--json out.json]

bench/run.py puts the figures in RESULTS.md's text. Lambda limits a function and its layers to 250 MB
unzipped; a smaller layer also loads faster at cold start.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LAYER = ROOT / "layers" / "jobgate"
PLATFORM = ["--platform", "manylinux2014_x86_64", "--python-version", "3.12", "--implementation", "cp"]
MB = 1024 * 1024


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and "__pycache__" not in f.parts)


def _install(requirements: Path, target: Path) -> None:
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-compile", "--no-warn-conflicts"]
    options = ["--only-binary=:all:", *PLATFORM, "--target", str(target), "-r", str(requirements)]
    subprocess.run([*pip, *options], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def measure(requirements: Path = LAYER / "requirements.txt") -> dict[str, Any]:
    """The layer's size in MB, its five largest top-level folders, and what it would weigh with
    Powertools' `[tracer]` extra (the X-Ray SDK, which brings botocore)."""
    package = _size(LAYER / "jobgate")
    with tempfile.TemporaryDirectory(prefix="jobgate-layer-") as tmp:
        target = Path(tmp) / "python"
        _install(requirements, target)
        dependencies = _size(target)
        # Lambda's runtime has its own boto3 and botocore: one in the layer would shadow it.
        botocore = (target / "botocore").is_dir()
        folders = [p for p in target.iterdir() if p.is_dir() and not p.name.endswith("-info")]
        largest = sorted(((p.name, _size(p)) for p in folders), key=lambda item: -item[1])[:5]
        traced = Path(tmp) / "requirements-tracer.txt"
        text = requirements.read_text()
        traced.write_text(text.replace("aws-lambda-powertools>", "aws-lambda-powertools[tracer]>"))
        _install(traced, Path(tmp) / "traced")
        with_tracer = _size(Path(tmp) / "traced")
    return {
        "total_mb": round((dependencies + package) / MB, 1),
        "dependencies_mb": round(dependencies / MB, 1),
        "package_mb": round(package / MB, 1),
        "largest": [(name, round(size / MB, 1)) for name, size in largest],
        "botocore_shipped": botocore,
        "with_tracer_mb": round((with_tracer + package) / MB, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = measure()
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
