"""JobStore against moto: every transition conditional, run ids unique per tenant."""

from __future__ import annotations

from datetime import timedelta

import pytest
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.dynamo import JobStore
from jobgate.errors import InvalidTransition, NotFound, RunIdConflict
from jobgate.models import Job, JobError, JobResult, JobStatus, utcnow
from ulid import ULID

from tests.support.aws import Resources


@pytest.fixture
def store(resources: Resources) -> JobStore:
    return JobStore(aws_clients.dynamodb(), resources.table_name, timedelta(days=1))


def new_job(tenant: str = "acme", run_id: str | None = None, request_hash: str = "h1") -> Job:
    return Job(
        job_id=str(ULID()),
        tenant=tenant,
        run_id=run_id,
        stage="visualize",
        command="heatmap",
        args={"output": "x.png"},
        timeout_s=60,
        request_hash=request_hash,
        created_at=utcnow(),
    )


def succeeded() -> JobResult:
    return JobResult(status=JobStatus.SUCCEEDED, exit_code=0, stdout_tail="", stderr_tail="")


def test_same_run_id_same_request_returns_existing_job(store: JobStore) -> None:
    first, created = store.create(new_job(run_id="r1"))
    again, created_again = store.create(new_job(run_id="r1"))
    assert created and not created_again
    assert again.job_id == first.job_id


def test_same_run_id_other_request_is_a_conflict(store: JobStore) -> None:
    store.create(new_job(run_id="r1"))
    with pytest.raises(RunIdConflict):
        store.create(new_job(run_id="r1", request_hash="h2"))


def test_run_id_is_unique_per_tenant_only(store: JobStore) -> None:
    a, _ = store.create(new_job(tenant="a", run_id="r1"))
    b, created = store.create(new_job(tenant="b", run_id="r1"))
    assert created and a.job_id != b.job_id


def test_another_tenants_job_is_not_found(store: JobStore) -> None:
    job, _ = store.create(new_job(tenant="a"))
    with pytest.raises(NotFound):
        store.get(job.job_id, tenant="b")


def test_two_claims_of_one_read_cannot_both_win(store: JobStore) -> None:
    job, _ = store.create(new_job())
    now = utcnow()
    claimed = store.claim(job, now=now, lease_until=now + timedelta(seconds=30))
    assert claimed.status == JobStatus.RUNNING and claimed.attempts == 1
    with pytest.raises(InvalidTransition):
        store.claim(job, now=now, lease_until=now + timedelta(seconds=30))


def test_live_lease_cannot_be_taken_over_but_expired_can(store: JobStore) -> None:
    job, _ = store.create(new_job())
    now = utcnow()
    running = store.claim(job, now=now, lease_until=now + timedelta(seconds=30))
    with pytest.raises(InvalidTransition):
        store.claim(running, now=now, lease_until=now + timedelta(seconds=30))
    later = now + timedelta(seconds=31)
    taken = store.claim(running, now=later, lease_until=later + timedelta(seconds=30))
    assert taken.attempts == 2


def test_stale_attempt_cannot_finish_or_heartbeat(store: JobStore) -> None:
    job, _ = store.create(new_job())
    now = utcnow()
    first = store.claim(job, now=now, lease_until=now - timedelta(seconds=1))
    second = store.claim(first, now=now, lease_until=now + timedelta(seconds=30))
    with pytest.raises(InvalidTransition):
        store.heartbeat(job.job_id, attempt=1, lease_until=now + timedelta(seconds=30))
    with pytest.raises(InvalidTransition):
        store.finish(second, attempt=1, result=succeeded(), now=now)
    done = store.finish(second, attempt=2, result=succeeded(), now=now)
    assert done.status == JobStatus.SUCCEEDED


def test_terminal_state_never_changes(store: JobStore) -> None:
    job, _ = store.create(new_job())
    now = utcnow()
    running = store.claim(job, now=now, lease_until=now + timedelta(seconds=30))
    done = store.finish(running, attempt=1, result=succeeded(), now=now)
    with pytest.raises(InvalidTransition):
        store.finish(done, attempt=1, result=succeeded(), now=now)
    with pytest.raises(InvalidTransition):
        store.cancel(done, now=now)
    with pytest.raises(InvalidTransition):
        store.fail_unfinished(done, error=JobError(type="x", message="y"), now=now)
    assert store.get(job.job_id).status == JobStatus.SUCCEEDED


def test_cancel_queued_is_immediate_and_running_is_flagged(store: JobStore) -> None:
    queued, _ = store.create(new_job())
    assert store.cancel(queued, now=utcnow()).status == JobStatus.CANCELLED
    job, _ = store.create(new_job())
    now = utcnow()
    running = store.claim(job, now=now, lease_until=now + timedelta(seconds=30))
    flagged = store.cancel(running, now=now)
    assert flagged.status == JobStatus.RUNNING and flagged.cancel_requested
    beat = store.heartbeat(job.job_id, attempt=1, lease_until=now + timedelta(seconds=30))
    assert beat.cancel_requested


def test_list_pages_newest_first_and_filters_by_status(store: JobStore) -> None:
    jobs = [store.create(new_job())[0] for _ in range(5)]
    store.create(new_job(tenant="other"))
    page = store.list_jobs("acme", status=None, limit=3, cursor=None)
    assert [j.job_id for j in page.items] == [j.job_id for j in jobs[::-1][:3]]
    rest = store.list_jobs("acme", status=None, limit=3, cursor=page.next_cursor)
    assert [j.job_id for j in rest.items] == [j.job_id for j in jobs[::-1][3:]]
    store.cancel(jobs[1], now=utcnow())
    cancelled = store.list_jobs("acme", status=JobStatus.CANCELLED, limit=10, cursor=None)
    assert [j.job_id for j in cancelled.items] == [jobs[1].job_id]
    queued = store.list_jobs("acme", status=JobStatus.QUEUED, limit=10, cursor=None)
    assert jobs[1].job_id not in {j.job_id for j in queued.items} and len(queued.items) == 4
