"""The job record can never outgrow DynamoDB's 400 KB item, whatever the request and whatever the job wrote.

Sizes are counted by AWS's rules ("DynamoDB item sizes and formats" in the DynamoDB developer guide):
a name or string is its UTF-8 bytes, a number one byte per two significant digits plus one, a null or
boolean one byte, a list or map 3 bytes plus one per element. moto does not enforce the limit; these
tests do, on the exact item the store writes.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from jobgate.adapters.dynamo import (
    MAX_ITEM_BYTES,
    MAX_NEW_JOB_BYTES,
    _new_job_item,
    item_size,
    job_item,
)
from jobgate.commandsets.manifest import load_manifest_registry
from jobgate.errors import ValidationFailed
from jobgate.models import ERROR_MESSAGE_BYTES, LOG_TAIL_BYTES, Job, JobError, JobStatus, Output, tail, utcnow
from jobgate.services.jobs import manifest_key
from jobgate.services.outputs import INLINE_OUTPUTS, INLINE_OUTPUTS_BYTES, first_page
from jobgate.services.pipelines import MAX_STEPS
from jobgate.settings import Settings
from ulid import ULID

TTL = timedelta(days=30)
# Room kept under the limit for what a later change adds without thinking of this test.
MARGIN = 64 * 1024


def test_item_size_follows_aws_rules() -> None:
    assert item_size({"ab": {"S": "héllo"}}) == 2 + 6
    assert item_size({"n": {"N": "123456"}}) == 1 + 3 + 1
    assert item_size({"n": {"N": "-0.00120"}}) == 1 + 1 + 1  # leading and trailing zeros trimmed
    assert item_size({"f": {"BOOL": True}, "z": {"NULL": True}}) == (1 + 1) * 2
    assert item_size({"l": {"L": []}}) == 1 + 3
    assert item_size({"l": {"L": [{"S": "ab"}, {"N": "7"}]}}) == 1 + 3 + (2 + 1) + (2 + 1)
    assert item_size({"m": {"M": {"key": {"S": "v"}}}}) == 1 + 3 + (3 + 1 + 1)


def request_job(**fields: object) -> Job:
    now = utcnow()
    base: dict[str, object] = {
        "job_id": str(ULID()),
        "tenant": "t" * 64,  # TENANT_RE's longest
        "run_id": "r" * 128,
        "stage": "s" * 64,
        "command": "c" * 64,
        "timeout_s": 900,
        "request_hash": "f" * 64,
        "created_at": now,
        "max_attempts": 5,
        "retry_on_exit": True,
        "zip_outputs": True,
        "pipeline_id": str(ULID()),
        "step": "p" * 64,
    }
    base.update(fields)
    return Job.model_validate(base)


def largest_request_job() -> Job:
    """A job whose request takes exactly what the store accepts of a new job (MAX_NEW_JOB_BYTES)."""
    job = request_job(args={"pad": ""})
    room = MAX_NEW_JOB_BYTES - item_size(job_item(job, TTL))
    job = request_job(
        job_id=job.job_id, pipeline_id=job.pipeline_id, created_at=job.created_at, args={"pad": "x" * room}
    )
    assert item_size(_new_job_item(job, TTL)) == MAX_NEW_JOB_BYTES
    return job


def biggest_first_page() -> list[Output]:
    """The largest inline page of outputs, over names from one character to PATH_MAX."""
    pages = []
    for name_len in (1, 200, 600, 1000, 4096):
        outputs = [
            Output(
                name=f"{i:04d}" + "n" * name_len,
                size=10**15,
                media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                sha256="a" * 64,
            )
            for i in range(INLINE_OUTPUTS * 3)
        ]
        pages.append(first_page(outputs))
    return max(pages, key=lambda page: item_size({"outputs": job_item_outputs(page)}))


def job_item_outputs(page: list[Output]) -> dict[str, object]:
    return job_item(request_job(outputs=page), TTL)["outputs"]  # type: ignore[no-any-return]


def test_first_page_of_outputs_is_bounded_by_count_and_bytes() -> None:
    page = biggest_first_page()
    assert 0 < len(page) <= INLINE_OUTPUTS
    assert item_size({"outputs": job_item_outputs(page)}) <= INLINE_OUTPUTS_BYTES + len("outputs")


def test_log_tail_of_binary_output_stays_within_its_bytes() -> None:
    # Every undecodable byte becomes U+FFFD: 3 bytes in UTF-8, so a raw tail would triple.
    assert len(tail(bytes(range(128, 256)) * 1000).encode()) <= LOG_TAIL_BYTES
    assert len(tail("日本語".encode() * 10000).encode()) <= LOG_TAIL_BYTES


def test_error_message_is_clipped() -> None:
    error = JobError(type="input", message="é" * 100_000)
    assert len(error.message.encode()) <= ERROR_MESSAGE_BYTES


def test_worst_case_job_item_stays_under_dynamodbs_limit_with_margin() -> None:
    """Every field at its largest: the request as large as the store accepts, tails of binary output,
    the longest error, the largest first page of outputs, the manifest key, the zip, every counter
    and timestamp. (`links` are not stored: the API adds them to its answer.)"""
    request = largest_request_job()
    now = utcnow()
    finished = request.model_copy(
        update={
            "status": JobStatus.SUCCEEDED,
            "progress": 0.123456789,
            "exit_code": -2147483648,
            "stdout": tail(bytes(range(256)) * 1000),
            "stderr": tail(bytes(range(256)) * 1000),
            "error": JobError(type="t" * 64, message="é" * 100_000),
            "outputs": biggest_first_page(),
            "output_count": 10**9,
            "outputs_manifest": manifest_key(request.tenant, request.job_id, 99),
            "archive": Output(
                name=f"{request.job_id}.zip", size=10**15, media_type="application/zip", sha256="a" * 64
            ),
            "attempts": 99,
            "cancel_requested": True,
            "lease_until": 99_999_999_999_999,
            "event_seq": 10**12,
            "requeues": 99,
            "retry_of": str(ULID()),
            "retried_by": str(ULID()),
            "started_at": now,
            "finished_at": now,
            "queued_at": now,
            "enqueued_at": now,
        }
    )
    item = job_item(finished, TTL)
    item["watchers"] = {"N": str(10**9)}  # the event stream's subscriber count, kept on the job item
    size = item_size(item)
    assert size <= MAX_ITEM_BYTES - MARGIN, size


def test_new_job_larger_than_its_share_of_the_record_is_refused() -> None:
    job = request_job(args={"pad": "x" * MAX_NEW_JOB_BYTES})
    with pytest.raises(ValidationFailed, match="bytes on its record"):
        _new_job_item(job, TTL)


def test_largest_args_a_request_may_send_fit_a_new_job_record() -> None:
    """args at max_args_bytes (as JSON), every value an input (each adds an entry to `inputs`) under the
    longest input name any command has, and a pipeline step's `files` at their longest: accepted."""
    registry = load_manifest_registry()
    dest = max((p.dest for c in registry.contracts() for p in c.params if p.role == "input"), key=len)
    ref = "asset://" + str(ULID())
    count = Settings.model_fields["max_args_bytes"].default // (len(ref) + 3)
    args = {dest: [ref] * count}
    inputs = {f"{dest}[{i}]": ref.removeprefix("asset://") for i in range(count)}
    upstream = {f"files[{i}]": f"{ULID()}/" + "f" * 1024 for i in range(MAX_STEPS)}
    job = request_job(args=args, inputs=inputs, upstream=upstream)
    assert item_size(_new_job_item(job, TTL)) <= MAX_NEW_JOB_BYTES
