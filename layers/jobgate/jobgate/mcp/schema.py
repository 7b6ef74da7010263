"""A command's contract as an MCP tool: its name and the JSON schema of its arguments.

The schema says what the API's contract check (jobgate.services.registry.check_args) accepts, keyed
by each param's `dest` as a job's `args` are; the check itself stays the API's, and what it refuses
comes back as the tool's error.
"""

from __future__ import annotations

import re
from typing import Any

from jobgate.client.models import CommandContract, Param

# Names MCP clients accept for a tool: some clients allow no dots and at most 64 characters.
TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

_JSON_TYPES = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean"}

# What a file argument takes, by its role, said once for the model reading the schema.
_ROLE_NOTES = {
    "input": (
        "A file: 'asset://<asset_id>' (from the jobgate_upload tool or an earlier upload) or "
        "'job://<job_id>/<output name>' (an output of an earlier job)."
    ),
    "output": "A relative path the command writes; the file is returned as an output link.",
    "output_dir": "A relative folder the command writes into; its files are returned as output links.",
    "path": "A relative path inside the job's work folder.",
}


def tool_name(stage: str, command: str) -> str:
    """`visualize_heatmap`, `process_api-json`: the stage and the command, joined by `_`."""
    return f"{stage}_{command}"


def tool_description(contract: CommandContract) -> str:
    summary = contract.summary or f"{contract.stage} {contract.command}"
    return (
        f"{summary}. Runs `{contract.stage} {contract.command}` as a jobgate job and answers its stdout, "
        "stderr, exit code, status and output links once it has ended."
    )


def input_schema(contract: CommandContract) -> dict[str, Any]:
    """The JSON schema (draft 2020-12) of a command tool's arguments."""
    properties = {param.dest: param_schema(param) for param in contract.params}
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    required = [p.dest for p in contract.params if p.required and p.kind != "flag"]
    if required:
        schema["required"] = required
    return schema


def param_schema(param: Param) -> dict[str, Any]:
    """One param: a flag is a boolean; a `multiple` param an array of its values, sized by `nargs`."""
    if param.kind == "flag":
        return _described({"type": "boolean"}, param)
    value = _value_schema(param)
    if not param.multiple:
        if param.default is not None:
            value["default"] = param.default
        return _described(value, param)
    array: dict[str, Any] = {"type": "array", "items": value}
    if isinstance(param.nargs, int):
        array["minItems"] = array["maxItems"] = param.nargs
    elif param.nargs == "+":
        array["minItems"] = 1
    if isinstance(param.default, list):
        array["default"] = param.default
    return _described(array, param)


def _value_schema(param: Param) -> dict[str, Any]:
    value: dict[str, Any] = {"type": _JSON_TYPES.get(param.type, "string")}
    if param.choices is not None:
        value["enum"] = list(param.choices)
    minimum = getattr(param, "minimum", None)
    maximum = getattr(param, "maximum", None)
    if minimum is not None:
        value["minimum"] = minimum
    if maximum is not None:
        value["maximum"] = maximum
    if param.role == "input":
        value["pattern"] = r"^(asset|job)://"
    return value


def _described(schema: dict[str, Any], param: Param) -> dict[str, Any]:
    parts = [param.help.strip()] if param.help.strip() else []
    note = _ROLE_NOTES.get(param.role)
    if note:
        parts.append(note)
    if param.media_types:
        parts.append("Media types: " + ", ".join(param.media_types) + ".")
    if parts:
        schema["description"] = " ".join(parts)
    return schema


_NULLABLE_TEXT = {"type": ["string", "null"]}
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "The file's path relative to the job's work folder."},
        "size": {"type": "integer"},
        "media_type": {"type": "string"},
        "url": {**_NULLABLE_TEXT, "description": "A presigned GET URL, valid for a limited time."},
    },
    "required": ["name", "size", "media_type", "url"],
}

JOB_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "job_id": {"type": "string"},
        "stage": {"type": "string"},
        "command": {"type": "string"},
        # No enum: a pipeline's step may be `blocked`, and a newer API may add statuses.
        "status": {
            "type": "string",
            "description": "queued, running, succeeded, failed, timed_out, cancelled...",
        },
        "progress": {"type": "number", "minimum": 0, "maximum": 1},
        "exit_code": {"type": ["integer", "null"]},
        "finish_reason": _NULLABLE_TEXT,
        "error": {
            "type": ["object", "null"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
        "output_count": {"type": "integer"},
    },
    "required": ["job_id", "stage", "command", "status", "progress", "exit_code", "error", "output_count"],
}

# What a command tool answers once its job has ended (its structuredContent).
RESULT_SCHEMA: dict[str, Any] = {
    **JOB_SCHEMA,
    "properties": {
        **JOB_SCHEMA["properties"],
        "stdout": {"type": "string", "description": "The tail of the job's stdout."},
        "stdout_truncated": {"type": "boolean"},
        "stderr": {"type": "string", "description": "The tail of the job's stderr."},
        "stderr_truncated": {"type": "boolean"},
        "outputs": {"type": "array", "items": OUTPUT_SCHEMA},
        "outputs_truncated": {"type": "boolean"},
    },
    "required": [*JOB_SCHEMA["required"], "stdout", "stderr", "outputs"],
}
