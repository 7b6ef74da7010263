"""docs/api.md, written from the API's own OpenAPI schema: `python -m jobgate.cli.apidoc [--check]`.

`--check` (CI's `make docs-check`) fails when docs/api.md is not what would be written, and when
docs/deploy.md leaves a parameter of template.yaml unexplained.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path("docs/api.md")
DEPLOY_DOC = Path("docs/deploy.md")
TEMPLATE = Path("template.yaml")
METHODS = ("get", "post", "put", "patch", "delete")


def openapi_schema() -> dict[str, Any]:
    """The schema the deployed API serves at /openapi.json; building it touches no AWS service."""
    from jobgate.api.app import create_app
    from jobgate.services.registry import Registry
    from jobgate.settings import Settings
    from jobgate.wiring import ApiServices

    # Defaults only: what this machine's environment says must not change the document.
    settings = Settings.model_construct(table_name="-", queue_url="-", bucket_name="-")
    schema: dict[str, Any] = create_app(ApiServices(settings, Registry([]))).openapi()
    return schema


def render(schema: dict[str, Any]) -> str:
    info = schema.get("info", {})
    lines = [
        f"# {info.get('title', 'API')} HTTP API (v{info.get('version', '?')})",
        "",
        "<!-- Generated from the OpenAPI schema by `make docs` (python -m jobgate.cli.apidoc). "
        "Do not edit: CI fails when this file is stale. -->",
        "",
    ]
    if info.get("summary"):
        lines += [info["summary"], ""]
    lines += _auth(schema)
    operations = _operations(schema)
    tags = sorted({tag for _, _, op in operations for tag in op.get("tags", ["other"])}, key=_tag_order)
    lines += ["## Operations", ""]
    for tag in tags:
        ops = [(m, p, op) for m, p, op in operations if tag in op.get("tags", ["other"])]
        lines.append(
            f"- **{tag}**: " + ", ".join(f"[`{m.upper()} {p}`](#{_anchor(m, p)})" for m, p, _ in ops)
        )
    lines.append("")
    for tag in tags:
        lines += [f"## {tag}", ""]
        for method, path, op in operations:
            if tag in op.get("tags", ["other"]):
                lines += _operation(method, path, op)
    lines += ["## Schemas", ""]
    for name, spec in sorted(schema.get("components", {}).get("schemas", {}).items()):
        lines += _schema(name, spec)
    return "\n".join(lines).rstrip() + "\n"


def _tag_order(tag: str) -> tuple[int, str]:
    order = ["health", "commands", "jobs", "uploads", "assets"]
    return (order.index(tag) if tag in order else len(order), tag)


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path, item in schema.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                found.append((method, path, item[method]))
    return found


def _anchor(method: str, path: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", f"{method} {path}".lower()).replace(" ", "-")


def _auth(schema: dict[str, Any]) -> list[str]:
    schemes = schema.get("components", {}).get("securitySchemes", {})
    if not schemes:
        return []
    lines = ["Authentication:", ""]
    for name, spec in sorted(schemes.items()):
        where = (
            f"`{spec.get('name')}` {spec.get('in', '')}".strip() if spec.get("in") else spec.get("scheme", "")
        )
        lines.append(
            f"- `{name}` ({spec.get('type')}: {where}) {_one_line(spec.get('description', ''))}".rstrip()
        )
    return [*lines, ""]


def _operation(method: str, path: str, op: dict[str, Any]) -> list[str]:
    lines = [f"### {method.upper()} {path}", ""]
    if op.get("summary"):
        lines += [f"**{op['summary']}**", ""]
    if op.get("description"):
        lines += [op["description"].strip(), ""]
    params = op.get("parameters", [])
    if params:
        lines += ["| parameter | in | type | required | description |", "|---|---|---|---|---|"]
        for p in params:
            kind = _type(p.get("schema", {}))
            required = "yes" if p.get("required") else ""
            text = f"{p.get('description', '')} {_constraints(p.get('schema', {}))}".strip()
            lines.append(f"| `{p['name']}` | {p['in']} | {kind} | {required} | {_cell(text)} |")
        lines.append("")
    body = op.get("requestBody")
    if body:
        for media, content in sorted(body.get("content", {}).items()):
            lines += [f"Request body ({media}): {_type(content.get('schema', {}))}", ""]
    lines += ["| status | meaning | body |", "|---|---|---|"]
    for status, response in sorted(op.get("responses", {}).items()):
        content = response.get("content", {})
        bodies = ", ".join(f"{_type(c.get('schema', {}))} ({m})" for m, c in sorted(content.items()) if c)
        lines.append(f"| {status} | {_cell(response.get('description', ''))} | {bodies} |")
    return [*lines, ""]


def _schema(name: str, spec: dict[str, Any]) -> list[str]:
    lines = [f'<a id="schema-{name.lower()}"></a>', "", f"### {name}", ""]
    if spec.get("description"):
        lines += [_one_line(spec["description"]), ""]
    if "enum" in spec:
        return [*lines, "One of " + ", ".join(f"`{v}`" for v in spec["enum"]) + ".", ""]
    props = spec.get("properties", {})
    if not props:
        return [*lines, f"Type: {_type(spec)}.", ""]
    required = set(spec.get("required", []))
    lines += ["| field | type | required | description |", "|---|---|---|---|"]
    for field, prop in props.items():
        text = prop.get("description") or prop.get("title", "")
        if prop.get("title") == field.replace("_", " ").title():
            text = prop.get("description", "")
        text = f"{text} {_constraints(prop)}".strip()
        lines.append(f"| `{field}` | {_type(prop)} | {'yes' if field in required else ''} | {_cell(text)} |")
    return [*lines, ""]


def _type(spec: dict[str, Any]) -> str:
    if "$ref" in spec:
        name = spec["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#schema-{name.lower()})"
    for key in ("anyOf", "oneOf"):
        if key in spec:
            kinds = [_type(s) for s in spec[key]]
            return " \\| ".join(dict.fromkeys(kinds))
    if "enum" in spec:
        return " \\| ".join(f"`{v}`" for v in spec["enum"])
    kind = spec.get("type", "any")
    if kind == "array":
        return f"array of {_type(spec.get('items', {}))}"
    if kind == "object" and isinstance(spec.get("additionalProperties"), dict):
        return f"object of {_type(spec['additionalProperties'])}"
    if spec.get("format"):
        return f"{kind} ({spec['format']})"
    return str(kind)


_LIMITS = [
    ("minLength", "at least {} characters"),
    ("maxLength", "at most {} characters"),
    ("minimum", ">= {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "<= {}"),
    ("exclusiveMaximum", "< {}"),
    ("minItems", "at least {} items"),
    ("maxItems", "at most {} items"),
    ("pattern", "matches `{}`"),
]


def _constraints(spec: dict[str, Any]) -> str:
    """A field's limits and default, in words: `<= 100; default 20`."""
    found = [spec, *[s for s in spec.get("anyOf", []) if s.get("type") != "null"]]
    words = [text.format(s[key]) for s in found for key, text in _LIMITS if key in s]
    if spec.get("default") is not None:
        words.append(f"default `{json.dumps(spec['default'])}`")
    return ("(" + "; ".join(words) + ")") if words else ""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cell(text: str) -> str:
    return _one_line(text).replace("|", "\\|")


def template_parameters(template: str) -> list[str]:
    """The names under the template's top-level `Parameters:` section."""
    names: list[str] = []
    inside = False
    for line in template.splitlines():
        if re.match(r"^\S", line):
            inside = line.rstrip() == "Parameters:"
            continue
        found = re.match(r"^  ([A-Za-z0-9]+):\s*$", line)
        if inside and found:
            names.append(found.group(1))
    return names


def undocumented_parameters(template: Path = TEMPLATE, doc: Path = DEPLOY_DOC) -> list[str]:
    if not template.exists():
        return []
    text = doc.read_text() if doc.exists() else ""
    return [name for name in template_parameters(template.read_text()) if f"`{name}`" not in text]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobgate.cli.apidoc", description=__doc__)
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH)
    parser.add_argument(
        "--check", action="store_true", help="fail when the file is not what would be written"
    )
    args = parser.parse_args(argv)
    text = render(openapi_schema())
    if args.check:
        current = args.path.read_text() if args.path.exists() else ""
        if current != text:
            sys.stderr.write(
                f"{args.path} is stale: the API changed. Run `make docs` and commit the result.\n"
            )
            return 1
        return 0
    args.path.parent.mkdir(parents=True, exist_ok=True)
    args.path.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
