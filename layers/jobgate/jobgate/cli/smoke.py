"""`jobgate smoke`: check a deployment end to end, as a frontend uses it, and keep every answer.

It lists the commands, uploads a small generated .npy straight to S3, runs a heatmap async, polls
it, watches it over the WebSocket, fetches its logs and outputs, and checks the error answers.
Every response is saved as JSON under `--out`; the first contract that does not hold is named
and the exit status is 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import struct
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from jobgate.cli import output
from jobgate.client._core import USER_AGENT, form_body, websocket_url
from jobgate.client.config import ConfigError, resolve_settings

PROBLEM = "application/problem+json"
PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance"}
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled"}
UNKNOWN_JOB = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
HEATMAP_ARGS = {"output": "map.png", "no_coastline": True, "no_borders": True, "no_gridlines": True}
PNG = b"\x89PNG\r\n\x1a\n"


class BrokenContract(Exception):
    """A step whose answer is not what the API promises; `why` says what differed."""

    def __init__(self, step: str, why: str) -> None:
        self.step = step
        self.why = why
        super().__init__(f"{step}: {why}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, help="folder for the saved responses (jobgate-smoke-<time>)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the job (180)")
    parser.add_argument(
        "--strict", action="store_true", help="a WebSocket that cannot be reached fails the check too"
    )


def cmd_smoke(args: argparse.Namespace) -> int:
    try:
        settings = resolve_settings(
            url=args.url, api_key=args.api_key, websocket_url=args.ws_url, profile=args.profile
        )
    except ConfigError as exc:
        output.error(str(exc))
        return output.EXIT_USAGE
    if not settings.api_key:
        output.error("smoke: no API key (--api-key or JOBGATE_API_KEY)")
        return output.EXIT_USAGE
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = args.out or Path(f"jobgate-smoke-{stamp}")
    smoke = Smoke(settings.url, settings.api_key, folder, timeout=args.timeout, strict=args.strict)
    smoke.websocket_override = settings.websocket_url
    return smoke.run(json_summary=args.json)


def make_npy(rows: int = 24, cols: int = 48) -> bytes:
    """A small 2-D float64 field in NumPy's .npy format, without needing NumPy."""
    header = f"{{'descr': '<f8', 'fortran_order': False, 'shape': ({rows}, {cols}), }}"
    pad = 64 - (10 + len(header) + 1) % 64
    header += " " * pad + "\n"
    values = [math.sin(x / 6.0) * math.cos(y / 5.0) for y in range(rows) for x in range(cols)]
    return (
        b"\x93NUMPY\x01\x00"
        + struct.pack("<H", len(header))
        + header.encode()
        + struct.pack(f"<{len(values)}d", *values)
    )


class Smoke:
    """The checks, in the order a frontend meets them; each answer saved as it comes."""

    def __init__(self, url: str, api_key: str, folder: Path, *, timeout: float, strict: bool) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.folder = folder
        self.timeout = timeout
        self.strict = strict
        self.websocket_override: str | None = None
        self.warnings: list[str] = []
        self.passed: list[str] = []
        self._count = 0
        self._step = ""
        headers = {"User-Agent": USER_AGENT}
        self.api = httpx.Client(base_url=self.url, headers={**headers, "X-API-Key": api_key}, timeout=60)
        self.anonymous = httpx.Client(base_url=self.url, headers=headers, timeout=60)
        self.storage = httpx.Client(headers=headers, timeout=120)
        self.state: dict[str, Any] = {}

    # -- the run ------------------------------------------------------------------------------

    def steps(self) -> list[tuple[str, Callable[[], None]]]:
        return [
            ("liveness", self.liveness),
            ("readiness", self.readiness),
            ("a request without the key is a 401 problem", self.unauthorized),
            ("the command registry lists visualize heatmap", self.registry),
            ("the heatmap contract names its input file", self.contract),
            ("an unknown job is a 404 problem", self.unknown_job),
            ("an invalid job is a 422 problem naming the field", self.invalid_job),
            ("an upload ticket", self.upload_ticket),
            ("the file goes straight to storage", self.upload_file),
            ("the asset becomes AVAILABLE", self.asset_available),
            ("an async job is accepted", self.submit),
            ("the same run_id answers the same job", self.resubmit),
            ("polling sees the job succeed", self.poll),
            ("the WebSocket streams the job's events", self.websocket),
            ("the logs", self.logs),
            ("the outputs, downloaded with their presigned URLs", self.outputs),
            ("the download redirect", self.download),
            ("the job list pages", self.job_list),
            ("cancelling a finished job is a 409 problem", self.cancel_finished),
        ]

    def run(self, *, json_summary: bool = False) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        failure: BrokenContract | None = None
        try:
            for name, step in self.steps():
                self._step = name
                warned = len(self.warnings)
                try:
                    step()
                except BrokenContract as exc:
                    failure = exc
                    break
                except httpx.HTTPError as exc:
                    failure = BrokenContract(name, f"{type(exc).__name__}: {exc}")
                    break
                if len(self.warnings) > warned:
                    mark = "!"  # not checked, and the warning says why
                else:
                    mark = "✓"
                    self.passed.append(name)
                if not json_summary:
                    sys.stdout.write(f"{mark} {name}\n")
                    sys.stdout.flush()
        finally:
            self.close()
        summary = {
            "url": self.url,
            "ok": failure is None,
            "passed": self.passed,
            "warnings": self.warnings,
            "broken": None if failure is None else {"step": failure.step, "why": failure.why},
            "responses": str(self.folder),
        }
        (self.folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if json_summary:
            output.print_json(summary)
        for warning in self.warnings:
            output.note(f"! {warning}")
        if failure is not None:
            output.error(
                f"smoke: broken contract: {failure.step}: {failure.why} (responses in {self.folder})"
            )
            return output.EXIT_FAILED
        if not json_summary:
            unchecked = f", {len(self.warnings)} not checked" if self.warnings else ""
            sys.stdout.write(
                f"smoke: {len(self.passed)} checks passed{unchecked} against {self.url}; "
                f"responses in {self.folder}\n"
            )
        return output.EXIT_OK

    def close(self) -> None:
        for client in (self.api, self.anonymous, self.storage):
            client.close()

    # -- recording and checking ---------------------------------------------------------------

    def fail(self, why: str) -> BrokenContract:
        return BrokenContract(self._step, why)

    def save(self, response: httpx.Response | None = None, **extra: Any) -> None:
        self._count += 1
        doc: dict[str, Any] = {"step": self._step}
        if response is not None:
            doc["request"] = _request_doc(response.request)
            doc["response"] = _response_doc(response)
        doc.update(extra)
        slug = re.sub(r"[^a-z0-9]+", "-", self._step.lower()).strip("-")[:60]
        path = self.folder / f"{self._count:02d}-{slug}.json"
        path.write_text(json.dumps(doc, indent=2, default=str) + "\n")

    def call(
        self,
        method: str,
        path: str,
        *,
        expect: Iterable[int],
        client: httpx.Client | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One request, saved; a 429 is waited out; any other status than expected breaks the step."""
        expected = set(expect)
        for _ in range(6):
            response = (client or self.api).request(method, path, **kwargs)
            self.save(response)
            if response.status_code != 429 or 429 in expected:
                break
            time.sleep(min(10.0, float(response.headers.get("retry-after") or 1)))
        if response.status_code not in expected:
            raise self.fail(
                f"{method} {path} answered {response.status_code}, expected {sorted(expected)}: "
                f"{response.text[:300].strip()}"
            )
        return response

    def json_of(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise self.fail(
                f"{response.request.method} {response.request.url.path} did not answer JSON"
            ) from None

    def problem(self, response: httpx.Response, status: int) -> dict[str, Any]:
        kind = response.headers.get("content-type", "")
        if not kind.startswith(PROBLEM):
            raise self.fail(f"a {status} answered {kind or 'no content type'}, not {PROBLEM}")
        body = self.json_of(response)
        missing = PROBLEM_FIELDS - set(body)
        if missing:
            raise self.fail(f"the problem lacks {sorted(missing)}")
        if body["status"] != status:
            raise self.fail(f"the problem says status {body['status']}, the answer {status}")
        return dict(body)

    def require(self, condition: bool, why: str) -> None:
        if not condition:
            raise self.fail(why)

    # -- the steps ----------------------------------------------------------------------------

    def liveness(self) -> None:
        body = self.json_of(self.call("GET", "/health/live", expect=[200]))
        self.require(body.get("status") == "ok", f"status is {body.get('status')!r}, not 'ok'")

    def readiness(self) -> None:
        body = self.json_of(self.call("GET", "/health/ready", expect=[200]))
        bad = {k: v for k, v in (body.get("checks") or {}).items() if v != "ok"}
        self.require(not bad, f"dependencies not ready: {bad}")

    def unauthorized(self) -> None:
        response = self.call("GET", "/v1/commands", expect=[401], client=self.anonymous)
        self.problem(response, 401)

    def registry(self) -> None:
        body = self.json_of(self.call("GET", "/v1/commands", expect=[200]))
        self.require(isinstance(body.get("items"), list), "no items list")
        stages = body.get("stages") or {}
        self.require("heatmap" in stages.get("visualize", []), "visualize heatmap is not listed")

    def contract(self) -> None:
        body = self.json_of(self.call("GET", "/v1/commands/visualize/heatmap", expect=[200]))
        params = {p.get("dest"): p for p in body.get("params", [])}
        self.require("input" in params, "no 'input' param")
        self.require(params["input"].get("role") == "input", "'input' is not an input file")
        self.require("application/x-npy" in params["input"].get("media_types", []), "'input' refuses .npy")

    def unknown_job(self) -> None:
        self.problem(self.call("GET", f"/v1/jobs/{UNKNOWN_JOB}", expect=[404]), 404)

    def invalid_job(self) -> None:
        body = {"stage": "visualize", "command": "heatmap", "args": {"no_such_argument": 1}}
        problem = self.problem(self.call("POST", "/v1/jobs", json=body, expect=[422]), 422)
        names = [e.get("loc", [])[-1:] for e in problem.get("errors", [])]
        self.require(["no_such_argument"] in names, f"errors do not name the field: {problem.get('errors')}")

    def upload_ticket(self) -> None:
        data = make_npy()
        self.state["npy"] = data
        declared = {"filename": "smoke.npy", "media_type": "application/x-npy", "size": len(data)}
        ticket = self.json_of(self.call("POST", "/v1/uploads", json=declared, expect=[201]))
        for key in ("asset_id", "upload", "expires_at"):
            self.require(key in ticket, f"the ticket has no '{key}'")
        self.require(ticket["upload"].get("method") in ("POST", "MULTIPART"), "unknown upload method")
        self.state["ticket"] = ticket

    def upload_file(self) -> None:
        plan, data = self.state["ticket"]["upload"], self.state["npy"]
        if plan["method"] == "POST":
            form = form_body(plan["fields"], "smoke.npy", "application/x-npy", len(data))
            response = self.storage.post(
                plan["url"], content=form.head + data + form.tail, headers={"Content-Type": form.content_type}
            )
            self.save(response)
            self.require(response.status_code in (200, 201, 204), f"storage answered {response.status_code}")
            return
        parts = []
        for part in plan["parts"]:
            start = (part["part_number"] - 1) * plan["part_size"]
            response = self.storage.put(part["url"], content=data[start : start + part["size"]])
            self.save(response)
            self.require(response.status_code == 200, f"part {part['part_number']}: {response.status_code}")
            parts.append({"part_number": part["part_number"], "etag": response.headers.get("etag", "")})
        self.call("POST", plan["complete_url"], json={"parts": parts}, expect=[200])

    def asset_available(self) -> None:
        asset_id = self.state["ticket"]["asset_id"]
        deadline = time.monotonic() + 30
        while True:
            asset = self.json_of(self.call("GET", f"/v1/assets/{asset_id}", expect=[200]))
            if asset.get("status") != "PENDING" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.require(
            asset.get("status") == "AVAILABLE", f"asset is {asset.get('status')}: {asset.get('reason')}"
        )
        self.require(asset.get("size") == len(self.state["npy"]), "the asset's size is not the file's")

    def submit(self) -> None:
        self.state["request"] = {
            "stage": "visualize",
            "command": "heatmap",
            "args": {"input": f"asset://{self.state['ticket']['asset_id']}", **HEATMAP_ARGS},
            "run_id": f"smoke-{uuid.uuid4().hex}",
        }
        response = self.call("POST", "/v1/jobs", json=self.state["request"], expect=[200, 202])
        job = self.json_of(response)
        self.require(bool(job.get("job_id")), "no job_id")
        self.require(
            response.headers.get("location", "").endswith(f"/v1/jobs/{job['job_id']}"),
            "the Location header does not point at the job",
        )
        for key in ("status", "links", "args", "created_at", "exit_code", "outputs"):
            self.require(key in job, f"the job has no '{key}'")
        self.state["job"] = job

    def resubmit(self) -> None:
        again = self.json_of(self.call("POST", "/v1/jobs", json=self.state["request"], expect=[200, 202]))
        self.require(again.get("job_id") == self.state["job"]["job_id"], "a second job was created")

    def poll(self) -> None:
        job_id = self.state["job"]["job_id"]
        deadline = time.monotonic() + self.timeout
        while True:
            job = self.json_of(self.call("GET", f"/v1/jobs/{job_id}", expect=[200]))
            if job.get("status") in TERMINAL:
                break
            self.require(time.monotonic() < deadline, f"still {job.get('status')} after {self.timeout:.0f} s")
            time.sleep(1.0)
        tail = str(job.get("stderr", ""))[-300:]
        self.require(
            job["status"] == "succeeded",
            f"the job {job['status']} (exit {job.get('exit_code')}): {job.get('error')} {tail}",
        )
        self.require(job.get("exit_code") == 0, f"exit code {job.get('exit_code')}")
        names = [o.get("name") for o in job.get("outputs", [])]
        self.require(names == ["map.png"], f"outputs are {names}, expected ['map.png']")
        self.state["job"] = job

    def websocket(self) -> None:
        job = self.state["job"]
        url = self.websocket_override or (job.get("links") or {}).get("websocket")
        if not url:
            self.save(skipped="the job has no websocket link")
            self.warnings.append("the WebSocket was not checked: jobs have no websocket link")
            return
        try:
            messages = self._subscribe(url, job["job_id"])
        except (OSError, TimeoutError, ValueError) as exc:
            self.save(url=url, error=f"{type(exc).__name__}: {exc}")
            why = f"cannot use the WebSocket at {url}: {type(exc).__name__}: {exc}"
            if self.strict:
                raise self.fail(why) from None
            self.warnings.append(why + " (clients fall back to polling)")
            return
        except _WebSocketFailure as exc:
            self.save(url=url, messages=exc.messages)
            raise self.fail(str(exc)) from None
        self.save(url=url, messages=messages)

    def _subscribe(self, url: str, job_id: str) -> list[Any]:
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import connect

        messages: list[Any] = []
        try:
            with connect(websocket_url(url, self.api_key), open_timeout=10, close_timeout=2) as socket:
                socket.send(json.dumps({"action": "subscribe", "job_id": job_id, "after_seq": 0}))
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    message = json.loads(socket.recv(timeout=max(0.1, deadline - time.monotonic())))
                    messages.append(message)
                    if message.get("type") == "error":
                        raise _WebSocketFailure(f"the WebSocket answered an error: {message}", messages)
                    if message.get("type") == "status" and message.get("status") in TERMINAL:
                        break
        except WebSocketException as exc:
            raise OSError(f"{type(exc).__name__}: {exc}") from exc
        _check_events(messages, job_id)
        return messages

    def logs(self) -> None:
        job_id = self.state["job"]["job_id"]
        for stream in ("stdout", "stderr"):
            response = self.call(
                "GET", f"/v1/jobs/{job_id}/logs", params={"stream": stream}, expect=[200, 307]
            )
            if response.status_code == 200:
                kind = response.headers.get("content-type", "")
                self.require(kind.startswith("text/plain"), f"the {stream} log answered {kind}")

    def outputs(self) -> None:
        job_id = self.state["job"]["job_id"]
        items = self.json_of(self.call("GET", f"/v1/jobs/{job_id}/outputs", expect=[200])).get("items", [])
        self.require(len(items) == 1 and items[0].get("url"), f"expected one output with a url: {items}")
        item = items[0]
        response = self.storage.get(item["url"])
        self.save(response)
        self.require(response.status_code == 200, f"the presigned GET answered {response.status_code}")
        data = response.content
        self.require(len(data) == item.get("size"), f"{len(data)} bytes, the output says {item.get('size')}")
        if item.get("sha256"):
            self.require(hashlib.sha256(data).hexdigest() == item["sha256"], "the sha256 does not match")
        self.require(data.startswith(PNG), "map.png is not a PNG")
        self.state["png"] = data

    def download(self) -> None:
        job_id = self.state["job"]["job_id"]
        response = self.call("GET", f"/v1/jobs/{job_id}/download", expect=[307])
        location = response.headers.get("location")
        self.require(bool(location), "the 307 has no Location")
        fetched = self.storage.get(str(location))
        self.save(fetched)
        self.require(fetched.status_code == 200, f"the redirect target answered {fetched.status_code}")
        self.require(fetched.content == self.state["png"], "the download differs from the output")

    def job_list(self) -> None:
        page = self.json_of(self.call("GET", "/v1/jobs", params={"limit": 1}, expect=[200]))
        self.require(isinstance(page.get("items"), list) and "next_cursor" in page, "not a page")
        self.require(len(page["items"]) <= 1, "the page is longer than its limit")
        if page["next_cursor"]:
            params = {"limit": 1, "cursor": page["next_cursor"]}
            second = self.json_of(self.call("GET", "/v1/jobs", params=params, expect=[200]))
            self.require(isinstance(second.get("items"), list), "the second page is not a page")
            first_ids = {j["job_id"] for j in page["items"]}
            self.require(not first_ids & {j["job_id"] for j in second["items"]}, "the pages overlap")

    def cancel_finished(self) -> None:
        job_id = self.state["job"]["job_id"]
        self.problem(self.call("DELETE", f"/v1/jobs/{job_id}", expect=[409]), 409)


class _WebSocketFailure(Exception):
    def __init__(self, why: str, messages: list[Any]) -> None:
        self.messages = messages
        super().__init__(why)


def _check_events(messages: list[Any], job_id: str) -> None:
    if not messages or messages[0].get("type") != "snapshot":
        raise _WebSocketFailure("the first message is not a snapshot", messages)
    if (messages[0].get("job") or {}).get("job_id") != job_id:
        raise _WebSocketFailure("the snapshot is of another job", messages)
    last = messages[-1]
    if last.get("type") != "status" or last.get("status") not in TERMINAL:
        raise _WebSocketFailure("no final status event within 30 s", messages)
    seqs = [m.get("seq") for m in messages[1:]]
    if any(not isinstance(s, int) for s in seqs) or seqs != sorted(set(seqs)):
        raise _WebSocketFailure(f"events are not numbered in order: {seqs}", messages)


def _request_doc(request: httpx.Request) -> dict[str, Any]:
    # The API key stays out of the saved files; presigned URLs are kept (they expire).
    url = request.url.copy_remove_param("api_key")
    doc: dict[str, Any] = {"method": request.method, "url": str(url)}
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            doc["body"] = json.loads(request.content)
        except ValueError:
            pass
    elif request.headers.get("content-length"):
        doc["body_bytes"] = int(request.headers["content-length"])
    return doc


def _response_doc(response: httpx.Response) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "status": response.status_code,
        "headers": {k: v for k, v in response.headers.items() if k.lower() not in ("set-cookie",)},
    }
    kind = response.headers.get("content-type", "")
    if "json" in kind:
        try:
            doc["body"] = response.json()
            return doc
        except ValueError:
            pass
    if kind.startswith("text/") or "xml" in kind or not response.content:
        doc["body"] = response.text
    else:
        doc["body_bytes"] = len(response.content)
        doc["body_sha256"] = hashlib.sha256(response.content).hexdigest()
    return doc
