"""Runs by their own id, a light status to poll, outputs inline once a job ends (409 before), dry runs,
`job://` inputs, partial success and the event long poll: the API handler as its role, and the worker (as
its role) running a small file-writing command set through its zygote."""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import boto3
import httpx
import pytest
import yaml
from jobgate.services.registry import Registry
from jobgate.services.worker import WorkerService
from jobgate.services.zygote import Zygote
from jobgate.settings import Settings
from jobgate.wiring import ApiServices, build_worker, build_zygote

from tests.integration.conftest import API_KEY
from tests.security.conftest import create_key
from tests.support.aws import Resources
from tests.support.commands import Files, private_work_root
from tests.support.lambdas import HttpAnswer, call_api
from tests.support.strict import as_function
from tests.unit.test_asyncapi import DOC_PATH, payload_validator
from tests.unit.test_asyncapi import EVENTS as EVENT_SCHEMAS

pytestmark = pytest.mark.timeout(120)
PROBLEM = "application/problem+json"
ANSWER = b'{"answer": 42}\n'


@dataclass
class Stack:
    """The API function, and a worker that runs `files write` jobs when asked."""

    api: ModuleType
    worker: WorkerService
    resources: Resources

    @property
    def services(self) -> ApiServices:
        services: ApiServices = self.api._asgi.app.state.services
        return services

    def call(self, method: str, path: str, *, key: str = API_KEY, **kwargs: Any) -> HttpAnswer:
        headers = {"X-API-Key": key, **(kwargs.pop("headers", None) or {})}
        return call_api(self.api, method, path, headers=headers, **kwargs)

    def submit(self, *, key: str = API_KEY, **args: Any) -> HttpAnswer:
        extra = {k: args.pop(k) for k in ("run_id", "dry_run", "retry_on_exit") if k in args}
        body = {"stage": "files", "command": "write", "args": args, **extra}
        return self.call("POST", "/v1/jobs", key=key, body=body)

    def work(self, job_id: str) -> None:
        """Run the job as WorkerFunction would (its own role)."""
        with as_function("worker"):
            self.worker.handle(job_id, remaining_s=lambda: 120.0)

    def run(self, job_id: str) -> dict[str, Any]:
        """Run the job, and answer it as the API does."""
        self.work(job_id)
        answer: dict[str, Any] = self.call("GET", f"/v1/jobs/{job_id}").json()
        return answer

    def submitted_and_run(self, **args: Any) -> dict[str, Any]:
        submitted = self.submit(**args)
        assert submitted.status == 202, submitted.body
        return self.run(submitted.json()["job_id"])


@pytest.fixture
def stack(api_fn: ModuleType, stack_env: Resources, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    root = private_work_root(monkeypatch)  # a job runs as another user: a folder it may enter
    files = Registry.from_command_sets([Files()])
    services: ApiServices = api_fn._asgi.app.state.services
    # The API checks requests against its manifest; here it also knows the test's command set.
    services.registry = Registry([*services.registry.contracts(), *files.contracts()])
    settings = Settings(warm_command_sets=False)  # type: ignore[call-arg]  # the rest from JOBGATE_*
    zygote: Zygote = build_zygote(settings, files)
    try:
        yield Stack(api_fn, build_worker(settings, files, runner=zygote), stack_env)
    finally:
        zygote.close()
        shutil.rmtree(root, ignore_errors=True)


def problem(answer: HttpAnswer, status: int, slug: str) -> dict[str, Any]:
    assert answer.status == status, answer.body
    assert answer.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = answer.json()
    assert body["type"] == f"urn:jobgate:problem:{slug}", body
    return body


# -- runs and the light status ----------------------------------------------------------------------


def test_a_run_is_found_by_the_run_id_its_client_gave(stack: Stack) -> None:
    submitted = stack.submit(output="answer.json", run_id="answers-2026-05-01")
    assert submitted.status == 202, submitted.body
    job = submitted.json()
    assert job["run_id"] == "answers-2026-05-01"
    assert job["status_url"] == f"/v1/jobs/{job['job_id']}/status"
    assert job["output_url"] == f"/v1/jobs/{job['job_id']}/outputs/answer.json"  # what its args declare
    assert job["links"]["run"] == "/v1/runs/answers-2026-05-01"
    assert job["finish_reason"] is None and job["partial"] is False

    polled = stack.call("GET", "/v1/runs/answers-2026-05-01")
    assert polled.status == 200, polled.body
    light = polled.json()
    assert light["job_id"] == job["job_id"] and light["status"] == "queued"
    assert not {"stdout", "stderr", "args", "outputs"} & light.keys()  # no log tails to poll every 2 s
    assert light["links"] == {
        "self": f"/v1/jobs/{job['job_id']}/status",
        "run": "/v1/runs/answers-2026-05-01",
        "job": f"/v1/jobs/{job['job_id']}",
        "outputs": f"/v1/jobs/{job['job_id']}/outputs",
        "events": f"/v1/jobs/{job['job_id']}/events",
        "websocket": None,
    }

    stack.run(job["job_id"])
    ended = stack.call("GET", job["status_url"]).json()
    assert ended == {**ended, "status": "succeeded", "finish_reason": "exit_0", "partial": False}
    assert ended["output_count"] == 1 and ended["progress"] == 1.0
    assert ended["started_at"] and ended["finished_at"]
    assert stack.call("GET", "/v1/runs/answers-2026-05-01").json() == ended


def test_a_job_submitted_without_run_id_gets_one_made_by_the_server(stack: Stack) -> None:
    job = stack.submit(output="answer.json").json()
    assert job["run_id"] == f"run_{job['job_id']}"
    assert stack.call("GET", f"/v1/runs/run_{job['job_id']}").json()["job_id"] == job["job_id"]
    # It is the job's own: listed and read back the same, and reserving nothing a client could take.
    assert stack.call("GET", f"/v1/jobs/{job['job_id']}").json()["run_id"] == job["run_id"]
    named = stack.submit(output="other.json", run_id="mine").json()
    problem(stack.call("GET", f"/v1/runs/run_{named['job_id']}"), 404, "not-found")


def test_unknown_and_other_tenants_runs_are_not_found(stack: Stack) -> None:
    problem(stack.call("GET", "/v1/runs/never-submitted"), 404, "not-found")
    problem(stack.call("GET", "/v1/runs/run_01JD7Q9A1B2C3D4E5F6G7H8J9K"), 404, "not-found")
    problem(stack.call("GET", "/v1/jobs/01JD7Q9A1B2C3D4E5F6G7H8J9K/status"), 404, "not-found")
    mine = stack.submit(output="a.json", run_id="shared-name").json()
    other = create_key("globex")
    problem(stack.call("GET", "/v1/runs/shared-name", key=other), 404, "not-found")
    problem(stack.call("GET", f"/v1/runs/{mine['run_id']}", key=other), 404, "not-found")
    problem(stack.call("GET", f"/v1/jobs/{mine['job_id']}/status", key=other), 404, "not-found")


def test_a_partial_success_exit_code_ends_succeeded_and_partial(stack: Stack) -> None:
    partial = stack.submitted_and_run(output="answer.json", exit=3)  # the contract names 3
    assert partial["status"] == "succeeded" and partial["exit_code"] == 3
    assert partial["partial"] is True and partial["finish_reason"] == "exit_nonzero"
    assert partial["error"] is None and partial["output_count"] == 1

    failed = stack.submitted_and_run(output="answer.json", exit=4)
    assert failed["status"] == "failed" and failed["exit_code"] == 4
    assert failed["partial"] is False and failed["finish_reason"] == "exit_nonzero"
    assert failed["error"]["type"] == "exit"


# -- outputs ---------------------------------------------------------------------------------------


def test_outputs_answer_409_until_the_job_ends_then_the_content_inline(stack: Stack) -> None:
    job = stack.submit(output="answer.json").json()
    base = f"/v1/jobs/{job['job_id']}"
    early = problem(stack.call("GET", f"{base}/outputs/answer.json"), 409, "job-not-ended")
    assert early["job_status"] == "queued" and early["status_url"] == f"{base}/status"
    problem(stack.call("GET", f"{base}/outputs"), 409, "job-not-ended")
    problem(stack.call("GET", f"{base}/download"), 409, "job-not-ended")

    stack.run(job["job_id"])
    got = stack.call("GET", f"{base}/outputs/answer.json")
    assert got.status == 200, got.body
    assert got.body == ANSWER
    assert got.headers["content-type"] == "application/json"
    assert got.headers["content-length"] == str(len(ANSWER))
    assert got.headers["etag"] == f'"{hashlib.sha256(ANSWER).hexdigest()}"'
    same = stack.call("GET", f"{base}/outputs/answer.json", headers={"If-None-Match": got.headers["etag"]})
    assert same.status == 304 and same.body == b""
    problem(stack.call("GET", f"{base}/outputs/nothing.json"), 404, "not-found")

    status = stack.call("GET", f"{base}/status").json()
    assert status["output_url"] == f"{base}/outputs/answer.json"
    boto3.client("s3").delete_object(
        Bucket=stack.resources.bucket_name, Key=f"results/default/{job['job_id']}/a1/answer.json"
    )
    problem(stack.call("GET", f"{base}/outputs/answer.json"), 410, "gone")


def test_an_output_over_a_mebibyte_redirects_to_storage(stack: Stack) -> None:
    size = 1024 * 1024 + 1
    job = stack.submitted_and_run(output="big/data.txt", size=size)
    got = stack.call("GET", f"/v1/jobs/{job['job_id']}/outputs/big/data.txt")
    assert got.status == 307, got.body
    fetched = httpx.get(got.headers["location"])
    assert fetched.status_code == 200 and len(fetched.content) == size


# -- dry runs --------------------------------------------------------------------------------------


def test_a_dry_run_answers_what_would_run_and_writes_nothing(
    stack: Stack, make_asset: Any, tmp_path: Any
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("a line\n")
    asset = make_asset(notes, "text/plain")
    answer = stack.submit(input=f"asset://{asset}", output="copy.txt", dry_run=True, run_id="dry-1")
    assert answer.status == 200, answer.body
    dry = answer.json()
    assert dry["valid"] is True and dry["warnings"] == []
    assert dry["argv"] == ["files", "write", f"--input=inputs/{asset}/notes.txt", "--output=copy.txt"]
    assert dry["inputs"] == [
        {
            "arg": "input",
            "ref": f"asset://{asset}",
            "source": "asset",
            "media_type": "text/plain",
            "size": 7,
            "path": f"inputs/{asset}/notes.txt",
        }
    ]
    assert dry["timeout_s"] > 0
    # Nothing written, nothing queued: no job, no run_id reserved, no message.
    assert stack.call("GET", "/v1/jobs").json()["items"] == []
    problem(stack.call("GET", "/v1/runs/dry-1"), 404, "not-found")
    queued = boto3.client("sqs").get_queue_attributes(
        QueueUrl=stack.resources.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert queued["Attributes"]["ApproximateNumberOfMessages"] == "0"
    # The run_id is free, and the real submit runs what the dry run said.
    real = stack.submit(input=f"asset://{asset}", output="copy.txt", run_id="dry-1")
    assert real.status == 202
    assert stack.run(real.json()["job_id"])["status"] == "succeeded"


def test_a_bad_dry_run_is_refused_with_the_problem_a_submit_gets(stack: Stack) -> None:
    for args in ({"output": "a.json", "colour": "red"}, {"input": "asset://01JD7Q9A1B2C3D4E5F6G7H8J9K"}):
        dry, real = stack.submit(**args, dry_run=True), stack.submit(**args)
        assert dry.status == real.status and dry.status in (404, 422)
        assert {k: v for k, v in dry.json().items() if k != "instance"} == {
            k: v for k, v in real.json().items() if k != "instance"
        }
    stack.submit(output="a.json", run_id="taken")
    conflict = problem(stack.submit(output="b.json", run_id="taken", dry_run=True), 409, "run-id-conflict")
    assert "job_id" in conflict
    again = stack.submit(output="a.json", run_id="taken", dry_run=True).json()
    assert again["warnings"] == [
        f"run_id 'taken' names job {conflict['job_id']} already: a submit answers that job."
    ]


# -- job:// inputs ---------------------------------------------------------------------------------


def test_a_jobs_output_is_the_input_of_the_next_job(stack: Stack) -> None:
    upstream = stack.submitted_and_run(output="answer.json")
    ref = f"job://{upstream['job_id']}/answer.json"
    dry = stack.submit(input=ref, output="copy.json", dry_run=True).json()
    assert dry["inputs"][0] == {
        "arg": "input",
        "ref": ref,
        "source": "job",
        "media_type": "application/json",
        "size": len(ANSWER),
        "path": f"inputs/{upstream['job_id']}/answer.json",
    }
    downstream = stack.submitted_and_run(input=ref, output="copy.json")
    assert downstream["status"] == "succeeded", downstream
    copied = stack.call("GET", f"/v1/jobs/{downstream['job_id']}/outputs/copy.json")
    assert copied.body == ANSWER + b"copied\n"
    # A job that read another's output is retried like any other job.
    retried = stack.call("POST", f"/v1/jobs/{downstream['job_id']}/retry")
    assert retried.status == 202, retried.body


def test_job_inputs_are_checked_before_anything_is_queued(stack: Stack) -> None:
    done = stack.submitted_and_run(output="answer.json")
    binary = stack.submitted_and_run(output="blob.bin", size=64)
    waiting = stack.submit(output="later.json").json()
    unknown = "01JD7Q9A1B2C3D4E5F6G7H8J9K"
    cases = [
        (f"job://{unknown}/answer.json", 404, "not-found"),
        (f"job://{done['job_id']}/missing.json", 404, "not-found"),
        (f"job://{waiting['job_id']}/later.json", 409, "job-not-succeeded"),
        (f"job://{binary['job_id']}/blob.bin", 422, "media-type"),
        (f"job://{done['job_id']}/../secret", 422, "validation"),
        ("job://not-an-id/answer.json", 422, "validation"),
    ]
    for ref, status, slug in cases:
        problem(stack.submit(input=ref, output="copy.json"), status, slug)
    other = create_key("globex")
    problem(
        stack.submit(input=f"job://{done['job_id']}/answer.json", output="c.json", key=other),
        404,
        "not-found",
    )
    jobs = stack.call("GET", "/v1/jobs").json()["items"]
    assert len(jobs) == 3  # only the three upstream jobs: nothing refused was written


# -- the event long poll ---------------------------------------------------------------------------


def test_the_event_long_poll_follows_a_job_to_its_end(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    job = stack.submit(output="answer.json").json()
    events = f"/v1/jobs/{job['job_id']}/events"
    first = stack.call("GET", events, query={"after_seq": "0"}).json()
    assert first == {"events": [], "next_after_seq": 0, "done": False}

    # The job runs while the request waits (the worker runs elsewhere on Lambda; here the wait drives it).
    services = stack.services
    monkeypatch.setattr(services.jobs, "_sleep", lambda _s: stack.work(job["job_id"]))
    waited = stack.call("GET", events, query={"after_seq": "0", "wait_s": "20"}).json()
    seqs = [e["seq"] for e in waited["events"]]
    assert seqs == list(range(1, len(seqs) + 1)) and waited["next_after_seq"] == seqs[-1]
    types = [e["type"] for e in waited["events"]]
    assert types[0] == "status" and types[-1] == "status"
    assert waited["events"][-1]["status"] == "succeeded" and waited["done"] is True
    assert any(e["type"] == "log" and "wrote answer.json" in e["text"] for e in waited["events"])
    documented = yaml.safe_load(DOC_PATH.read_text())
    for event in waited["events"]:  # the same messages as the WebSocket's, as documented
        payload_validator(documented, EVENT_SCHEMAS[event["type"]]).validate(event)

    after = stack.call("GET", events, query={"after_seq": str(seqs[-1]), "wait_s": "20"}).json()
    assert after == {"events": [], "next_after_seq": seqs[-1], "done": True}
    middle = stack.call("GET", events, query={"after_seq": str(seqs[-2])}).json()
    assert [e["seq"] for e in middle["events"]] == [seqs[-1]] and middle["done"] is True
    latest = stack.call("GET", events).json()  # no after_seq: from now on
    assert latest == {"events": [], "next_after_seq": seqs[-1], "done": True}


def test_the_event_long_poll_waits_as_long_as_asked_and_no_longer(stack: Stack) -> None:
    job = stack.submit(output="answer.json").json()
    started = time.monotonic()
    answer = stack.call("GET", f"/v1/jobs/{job['job_id']}/events", query={"after_seq": "0", "wait_s": "1"})
    took = time.monotonic() - started
    assert answer.json() == {"events": [], "next_after_seq": 0, "done": False}
    assert 0.9 <= took < 5
    for bad in ("21", "-1", "soon"):
        problem(
            stack.call("GET", f"/v1/jobs/{job['job_id']}/events", query={"wait_s": bad}), 422, "validation"
        )
    problem(
        stack.call("GET", f"/v1/jobs/{job['job_id']}/events", query={"after_seq": "-1"}), 422, "validation"
    )
    problem(stack.call("GET", "/v1/jobs/01JD7Q9A1B2C3D4E5F6G7H8J9K/events"), 404, "not-found")


# -- asset labels ----------------------------------------------------------------------------------


def upload(stack: Stack, name: str, labels: dict[str, str] | None = None) -> HttpAnswer:
    body: dict[str, Any] = {"filename": name, "media_type": "text/plain", "size": 10}
    if labels is not None:
        body["labels"] = labels
    return stack.call("POST", "/v1/uploads", body=body)


def test_assets_carry_labels_and_are_listed_by_them(stack: Stack) -> None:
    atlas = upload(stack, "a.txt", {"project": "atlas", "kind": "field"}).json()
    assert atlas["asset"]["labels"] == {"project": "atlas", "kind": "field"}
    upload(stack, "b.txt", {"project": "borealis", "kind": "field"})
    upload(stack, "c.txt")
    got = stack.call("GET", f"/v1/assets/{atlas['asset_id']}").json()
    assert got["labels"] == {"project": "atlas", "kind": "field"}

    def listed(*labels: str) -> list[str]:
        answer = stack.call("GET", "/v1/assets", query=[("label", label) for label in labels])
        assert answer.status == 200, answer.body
        return sorted(a["filename"] for a in answer.json()["items"])

    assert listed("project:atlas") == ["a.txt"]
    assert listed("kind:field") == ["a.txt", "b.txt"]
    assert listed("kind:field", "project:borealis") == ["b.txt"]
    assert listed("kind:none") == []
    assert listed() == ["a.txt", "b.txt", "c.txt"]


def test_bad_labels_are_refused(stack: Stack) -> None:
    too_many = {f"k{i}": "v" for i in range(11)}
    for labels in (too_many, {"Upper": "v"}, {"k": "x" * 129}, {"": "v"}, {"k": "line\nbreak"}):
        problem(upload(stack, "a.txt", labels), 422, "validation")
    assert upload(stack, "a.txt", {f"k{i}": "v" * 128 for i in range(10)}).status == 201
    for bad in ("no-colon", ":value", "UP:x"):
        problem(stack.call("GET", "/v1/assets", query={"label": bad}), 422, "validation")


def test_a_pipeline_step_reads_an_earlier_jobs_output(stack: Stack) -> None:
    upstream = stack.submitted_and_run(output="answer.json")
    steps = [
        {
            "name": "copy",
            "stage": "files",
            "command": "write",
            "args": {"input": f"job://{upstream['job_id']}/answer.json", "output": "copy.json"},
        },
        {
            "name": "again",
            "stage": "files",
            "command": "write",
            "args": {"input": "step://copy/copy.json", "output": "again.json"},
        },
    ]
    submitted = stack.call("POST", "/v1/pipelines", body={"steps": steps})
    assert submitted.status == 201, submitted.body
    jobs = {s["name"]: s["job"] for s in submitted.json()["steps"]}
    assert (
        jobs["copy"]["status"] == "queued" and jobs["again"]["status"] == "blocked"
    )  # job:// waits for nothing
    stack.work(jobs["copy"]["job_id"])
    stack.work(jobs["again"]["job_id"])
    again = stack.call("GET", f"/v1/jobs/{jobs['again']['job_id']}/outputs/again.json")
    assert again.status == 200, again.body
    assert again.body == ANSWER + b"copied\ncopied\n"
    waiting = stack.submit(output="late.json").json()
    late = [{**steps[0], "args": {"input": f"job://{waiting['job_id']}/late.json", "output": "c.json"}}]
    problem(stack.call("POST", "/v1/pipelines", body={"steps": late}), 409, "job-not-succeeded")
