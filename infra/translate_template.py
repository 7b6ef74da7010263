"""Lint what CloudFormation deploys from template.yaml: its SAM translation.

Some of what AWS refuses at deploy time exists only once SAM has made the event source mappings,
permissions and roles (cfn-lint reads template.yaml's SAM resources as they are written, without
translating them): an SQS event source whose queue hides messages for less than its function's
timeout (E3505) is one. So `make validate` translates the template (as the local stack does, code
folders standing in as S3 URIs, parameters at their defaults), writes the translation as JSON, and
lints it with cfn-lint. Errors and warnings fail; a finding accepted on purpose goes in ACCEPTED with
its reason.

    python infra/translate_template.py [--template template.yaml] --output .aws-sam/validate/template.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cfnlint.api import ManualArgs, lint
from jobgate_local.template import TemplateError, load_template

ROOT = Path(__file__).resolve().parents[1]
REGION = "us-east-1"
# Parameters without a default; the translation does not depend on their values.
REQUIRED_PARAMETERS = {"ApiKey": "placeholder-api-key-0123456789"}
# (rule id, logical id) -> why the finding is accepted. Empty: nothing is.
ACCEPTED: dict[tuple[str, str], str] = {}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", type=Path, default=ROOT / "template.yaml")
    parser.add_argument("--output", type=Path, required=True, help="where the translation is written")
    args = parser.parse_args(argv)
    try:
        template = load_template(args.template, REQUIRED_PARAMETERS)
    except TemplateError as exc:
        print(f"cannot translate {args.template}: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(template.cfn, indent=2) + "\n"
    args.output.write_text(text)
    failed = 0
    for match in lint(text, config=ManualArgs(regions=[REGION])):
        path = [str(part) for part in match.path]
        logical_id = path[1] if len(path) > 1 and path[0] == "Resources" else ""
        accepted = ACCEPTED.get((match.rule.id, logical_id))
        where = f"{args.output}:{match.linenumber} {'/'.join(path)}"
        verdict = f"accepted: {accepted}" if accepted else match.rule.severity
        print(f"{match.rule.id} [{verdict}] {match.message}\n    {where}")  # noqa: T201
        if not accepted and match.rule.severity in ("error", "warning"):
            failed += 1
    if failed:
        print(f"{failed} finding(s) in the SAM translation of {args.template}", file=sys.stderr)  # noqa: T201
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
