"""Tools for the `jobgate dev` of this checkout while it runs: its environment for a shell, a handler run on
one event (`jobgate invoke`), and sample events naming what exists in it (`jobgate events new`).

Each reads the state `jobgate dev` writes (`.jobgate/dev.json`, found from any folder inside the checkout)
and the environment of each function (`.jobgate/env-vars.json`, the file `sam local invoke --env-vars`
takes).
"""

from __future__ import annotations

import json
import shlex
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from jobgate.devstate import find_state_file, read_state

from .functions import FunctionConfig, FunctionPool
from .stack import env_vars_file

# The ids, key and names the sample events in events/ carry; `jobgate events new` puts the running
# stack's in their place (events/README.md lists them).
SAMPLE_JOB_ID = "01JD7Q9A1B2C3D4E5F6G7H8J9K"
SAMPLE_ASSET_ID = "01JD7Q8W6S3N2K1M0P9R8T7V6X"
SAMPLE_API_KEY = "local-dev-key-0123456789abcdef"
SAMPLE_BUCKET = "jobgate-data-sample"
SAMPLE_QUEUE_ARNS = {
    "JobsQueue": "arn:aws:sqs:us-east-1:123456789012:jobgate-JobsQueue",
    "JobsDeadLetterQueue": "arn:aws:sqs:us-east-1:123456789012:jobgate-JobsDeadLetterQueue",
    "UploadEventsQueue": "arn:aws:sqs:us-east-1:123456789012:jobgate-UploadEventsQueue",
}


class ToolError(Exception):
    """One line for the user: what is missing, and what to do."""


def running_stack() -> tuple[Path, dict[str, Any]]:
    path = find_state_file()
    state = read_state(path)
    if path is None or not state:
        raise ToolError("no `jobgate dev` runs in this checkout: start it with `make dev` (or `jobgate dev`)")
    return path, state


# -- jobgate dev env ------------------------------------------------------------------------------


def shell_environment(state: Mapping[str, Any]) -> dict[str, str]:
    """What a shell needs to reach the stack: the API for curl, the CLI and the SDK, the local AWS for
    boto3 and the AWS CLI (as the stack's admin identity), the table for `jobgate keys`."""
    env = {
        "JOBGATE_URL": str(state["http_url"]),
        "JOBGATE_API_KEY": str(state["api_key"]),
        "JOBGATE_WS_URL": str(state.get("websocket_url") or ""),
        "AWS_ENDPOINT_URL": str(state["aws_endpoint_url"]),
        "AWS_DEFAULT_REGION": str(state["region"]),
        "AWS_ACCESS_KEY_ID": str(state["aws_access_key_id"]),
        "AWS_SECRET_ACCESS_KEY": str(state["aws_secret_access_key"]),
        "AWS_SESSION_TOKEN": str(state["aws_session_token"]),
    }
    resources = state.get("resources") or {}
    if "JobsTable" in resources:
        env["JOBGATE_TABLE_NAME"] = str(resources["JobsTable"])
    return {k: v for k, v in env.items() if v}


def print_environment(out: TextIO) -> int:
    _, state = running_stack()
    for name, value in shell_environment(state).items():
        out.write(f"export {name}={shlex.quote(value)}\n")
    return 0


# -- jobgate invoke -------------------------------------------------------------------------------


def function_config(state: Mapping[str, Any], state_file: Path, function: str) -> FunctionConfig:
    functions: Mapping[str, Any] = state.get("functions") or {}
    logical_id = next(
        (
            lid
            for lid, f in functions.items()
            if function in (lid, f.get("name"), lid.removesuffix("Function"))
        ),
        None,
    )
    if logical_id is None:
        raise ToolError(f"no function '{function}' in the stack (functions: {', '.join(sorted(functions))})")
    described = functions[logical_id]
    environments = read_state(env_vars_file(state_file))
    return FunctionConfig(
        logical_id=logical_id,
        function_name=str(described["name"]),
        code_dir=Path(described["code_dir"]),
        handler=str(described["handler"]),
        timeout_s=float(described["timeout_s"]),
        memory_mb=int(described["memory_mb"]),
        environment=dict(environments.get(logical_id) or {}),
        region=str(state["region"]),
    )


def invoke(function: str, event_file: Path, out: TextIO, err: TextIO) -> int:
    """Run the function's handler on one event, in a sandbox of its own, against the running stack's AWS,
    as its role: its answer on stdout; a function error on stderr and exit status 1."""
    state_file, state = running_stack()
    try:
        event = json.loads(event_file.read_text())
    except (OSError, ValueError) as exc:
        raise ToolError(f"cannot read the event {event_file}: {exc}") from exc
    config = function_config(state, state_file, function)
    aws = {k: v for k, v in config.environment.items() if k.startswith("AWS_")}
    pool = FunctionPool(config, 1, aws_env=aws)
    pool.start()
    try:
        result = pool.invoke(event)
    finally:
        pool.stop()
    if result.error is not None:
        err.write(
            f"jobgate invoke: {config.logical_id} failed: {result.error.error_type}: {result.error.message}\n"
        )
        return 1
    out.write(json.dumps(result.payload, indent=2) + "\n")
    return 0


# -- jobgate events new ---------------------------------------------------------------------------


def samples_folder(state: Mapping[str, Any]) -> Path:
    return Path(str(state["template"])).resolve().parent / "events"


def _api(state: Mapping[str, Any], path: str) -> Any:
    request = urllib.request.Request(
        f"{state['http_url']}{path}", headers={"X-API-Key": str(state["api_key"])}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def _newest(state: Mapping[str, Any], path: str, what: str) -> str | None:
    try:
        items = _api(state, path)["items"]
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        raise ToolError(f"cannot list the stack's {what}s: {exc}") from exc
    if not items:
        return None
    return str(items[0]["job_id" if what == "job" else "asset_id"])


def new_event(name: str, out_file: Path | None, out: TextIO) -> int:
    """A copy of the sample event `events/NAME.json` naming the running stack's newest job and asset, its
    dev key, bucket and queues: written to `out_file` (default events/local/NAME.json), or `-` for stdout."""
    _, state = running_stack()
    folder = samples_folder(state)
    sample = folder / f"{name.removesuffix('.json')}.json"
    if not sample.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.json")))
        raise ToolError(f"no sample event '{name}' (samples: {known})")
    text = sample.read_text()
    resources: Mapping[str, str] = state.get("resources") or {}
    replacements = {SAMPLE_API_KEY: str(state["api_key"])}
    if "DataBucket" in resources:
        replacements[SAMPLE_BUCKET] = str(resources["DataBucket"])
    for logical_id, sample_arn in SAMPLE_QUEUE_ARNS.items():
        if logical_id in resources:
            queue_name = str(resources[logical_id]).rstrip("/").rsplit("/", 1)[-1]
            replacements[sample_arn] = f"arn:aws:sqs:{state['region']}:123456789012:{queue_name}"
    for placeholder, what, path in (
        (SAMPLE_JOB_ID, "job", "/v1/jobs?limit=1"),
        (SAMPLE_ASSET_ID, "asset", "/v1/assets?limit=1&status=AVAILABLE"),
    ):
        if placeholder in text:
            found = _newest(state, path, what)
            if found is None:
                raise ToolError(
                    f"the sample '{sample.stem}' names a {what}, and the stack has none yet: "
                    "run one first (jobgate run visualize heatmap --input field.npy --output map.png ...)"
                )
            replacements[placeholder] = found
    for placeholder, value in replacements.items():
        text = text.replace(placeholder, value)
    json.loads(text)  # still an event
    if out_file is not None and str(out_file) == "-":
        out.write(text)
        return 0
    target = out_file or folder / "local" / sample.name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    out.write(f"{target}\n")
    return 0


def main_tool(run: Any, *args: Any) -> int:
    try:
        code: int = run(*args)
        return code
    except ToolError as exc:
        sys.stderr.write(f"jobgate: {exc}\n")
        return 1
