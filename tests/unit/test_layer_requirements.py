"""The layer ships what the package needs at run time (the layer's requirements.txt vs pyproject)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _names(lines: list[str]) -> set[str]:
    out = set()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            out.add(re.split(r"[\[<>=~! ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return out


def test_layer_requirements_cover_the_package_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _names(project["dependencies"]) - {"boto3"}  # boto3 comes with the Lambda runtime
    shipped = _names((ROOT / "layers/jobgate/requirements.txt").read_text().splitlines())
    assert declared <= shipped, f"missing from the layer: {sorted(declared - shipped)}"


def test_the_layer_ships_no_tracer_while_nothing_traces() -> None:
    """X-Ray is Lambda's own active tracing: Powertools' `[tracer]` extra (the X-Ray SDK, and a second
    botocore that would shadow the runtime's) stays out of the layer, and no code uses a Tracer."""
    requirements = (ROOT / "layers/jobgate/requirements.txt").read_text()
    assert "[tracer]" not in requirements and "aws-xray-sdk" not in requirements
    sources = [*ROOT.glob("layers/jobgate/jobgate/**/*.py"), *ROOT.glob("functions/*/app.py")]
    assert len(sources) > 50
    tracing = re.compile(r"\bTracer\b|aws_xray_sdk|aws_lambda_powertools\.tracing")
    assert [p.relative_to(ROOT) for p in sources if tracing.search(p.read_text())] == []
