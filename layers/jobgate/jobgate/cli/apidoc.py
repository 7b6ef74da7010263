"""docs/api.md, written from the API's own OpenAPI schema: `python -m jobgate.cli.apidoc [--check]`.

`--check` (CI's `make docs-check`) fails when docs/api.md is not what would be written, and when
docs/deploy.md leaves a parameter of template.yaml unexplained. The WebSocket section is written from
docs/asyncapi.yaml, the protocol's AsyncAPI document.
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
ASYNCAPI_DOC = Path("docs/asyncapi.yaml")
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


def asyncapi_document(path: Path = ASYNCAPI_DOC) -> dict[str, Any] | None:
    if not path.exists():
        return None
    import yaml

    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


WSCAT_EXAMPLE = """\
```bash
# npm install -g wscat; with `make dev`, the WebSocket API is on port 8001
wscat -c "ws://127.0.0.1:8001/?api_key=$KEY"
> {"action": "subscribe", "job_id": "01JD7Q9A1B2C3D4E5F6G7H8J9K", "after_seq": 0}
< {"type":"snapshot","job_id":"01JD7Q9A1B2C3D4E5F6G7H8J9K","seq":0,"job":{"status":"queued",...}}
< {"type":"status","job_id":"01JD7Q9A1B2C3D4E5F6G7H8J9K","seq":1,"status":"running"}
< {"type":"log","job_id":"01JD7Q9A1B2C3D4E5F6G7H8J9K","seq":2,"stream":"stderr","text":"INFO: map.png\\n"}
< {"type":"progress","job_id":"01JD7Q9A1B2C3D4E5F6G7H8J9K","seq":3,"progress":0.9}
< {"type":"status","job_id":"01JD7Q9A1B2C3D4E5F6G7H8J9K","seq":4,"status":"succeeded","exit_code":0}
```

Without a WebSocket (curl, n8n's HTTP node, serverless frontends), read the same numbered events with a
long poll: `GET /v1/jobs/{job_id}/events?after_seq=0&wait_s=20` answers as soon as there are events after
`after_seq` (or the job has ended, or `wait_s` has passed) with `{events, next_after_seq, done}`; send
`next_after_seq` as the next `after_seq` until `done`."""


def _websocket(doc: dict[str, Any]) -> list[str]:
    """The WebSocket section: how to connect, what to send, what comes back, from the AsyncAPI document."""
    info = doc.get("info", {})
    lines = [
        "## WebSocket",
        "",
        f"_{info.get('title', 'WebSocket API')}: docs/asyncapi.yaml (AsyncAPI "
        f"{doc.get('asyncapi', '?')}) describes it in full._",
        "",
    ]
    if info.get("description"):
        lines += [_one_line(info["description"].split("\n\n")[0]), ""]
    for name, server in sorted(doc.get("servers", {}).items()):
        where = f"{server.get('protocol')}://{server.get('host')}{server.get('pathname', '')}"
        lines.append(f"- `{name}`: `{where}` — {_one_line(server.get('description', ''))}")
    lines.append("")
    for channel in doc.get("channels", {}).values():
        if channel.get("description"):
            lines += [_one_line(channel["description"]), ""]
    lines += ["| operation | direction | messages | what |", "|---|---|---|---|"]
    for op_name, op in doc.get("operations", {}).items():
        messages = ", ".join(f"`{m['$ref'].rsplit('/', 1)[-1]}`" for m in op.get("messages", []))
        direction = "client → server" if op.get("action") == "send" else "server → client"
        lines.append(f"| {op_name} | {direction} | {messages} | {_cell(op.get('summary', ''))} |")
    lines += ["", WSCAT_EXAMPLE, ""]
    schemas = doc.get("components", {}).get("schemas", {})
    lines += ["Messages and their payloads:", ""]
    for message in doc.get("components", {}).get("messages", {}).values():
        payload = _type(_ws_refs(message.get("payload", {})))
        lines.append(f"- `{message.get('name')}` ({_cell(message.get('title', ''))}): {payload}")
    lines.append("")
    for name, spec in schemas.items():
        lines += _schema(f"ws-{name}", _ws_refs(spec), title=name)
    return lines


_WS_REF = "#/ws/"


def _ws_refs(node: Any) -> Any:
    """The AsyncAPI document's schema refs, aimed at their own anchors (its names repeat the HTTP API's)."""
    if isinstance(node, dict):
        return {
            k: (v.replace("#/components/schemas/", _WS_REF) if k == "$ref" else _ws_refs(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_ws_refs(v) for v in node]
    return node


def render(schema: dict[str, Any], asyncapi: dict[str, Any] | None = None) -> str:
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
    if asyncapi is not None:
        lines += _websocket(asyncapi)
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


def _schema(name: str, spec: dict[str, Any], *, title: str | None = None) -> list[str]:
    lines = [f'<a id="schema-{name.lower()}"></a>', "", f"### {title or name}", ""]
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
        prefix = "ws-" if spec["$ref"].startswith(_WS_REF) else ""
        return f"[{name}](#schema-{prefix}{name.lower()})"
    if "const" in spec:
        return f"`{spec['const']}`"
    if isinstance(spec.get("type"), list):
        return " \\| ".join(str(t) for t in spec["type"])
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
    text = render(openapi_schema(), asyncapi_document())
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
