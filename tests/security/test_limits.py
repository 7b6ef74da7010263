"""Rate limits and quotas: a token bucket per key, active jobs per tenant, upload bytes per day."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from cfnlint.decode import decode
from jobgate.adapters import aws as aws_clients
from jobgate.adapters.limits import LimitStore
from jobgate.errors import TooManyRequests
from jobgate.services.limits import RateLimiter

from tests.security.conftest import Api, assert_problem, create_key
from tests.support.aws import TEMPLATE, Resources

JOB = {"stage": "visualize", "command": "heatmap", "args": {"output": "map.png"}}


class FrozenClock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


def _limited_api(api_with: Callable[..., Api], clock: FrozenClock) -> Api:
    """The API with a 10/s bucket of 10 tokens per key, on a clock the test moves."""
    api = api_with(rate_limit_per_s="10", rate_limit_burst="10")
    services = api.services
    services.rate_limiter = RateLimiter(services.limits, rate_per_s=10, burst=10, clock=clock)
    return api


def test_the_eleventh_request_in_a_10_per_second_bucket_is_a_429_with_retry_after(
    api_with: Callable[..., Api],
) -> None:
    clock = FrozenClock()
    api = _limited_api(api_with, clock)
    key = create_key("acme")
    for i in range(10):
        assert api.call("GET", "/v1/jobs", key).status == 200, i
    refused = api.call("GET", "/v1/jobs", key)
    problem = assert_problem(refused, 429, "rate-limited")
    assert refused.headers["retry-after"] == "1"
    assert problem["retry_after"] == 1

    other = create_key("globex")  # a bucket per key: another caller is not slowed down
    assert api.call("GET", "/v1/jobs", other).status == 200

    clock.now += 0.1  # one token back after a tenth of a second
    assert api.call("GET", "/v1/jobs", key).status == 200
    assert api.call("GET", "/v1/jobs", key).status == 429


def test_a_refused_request_changes_nothing(api_with: Callable[..., Api]) -> None:
    clock = FrozenClock()
    api = _limited_api(api_with, clock)
    key = create_key("acme")
    for _ in range(10):
        api.call("GET", "/v1/jobs", key)
    assert_problem(api.call("POST", "/v1/jobs", key, body=JOB), 429, "rate-limited")
    assert api.queued_messages() == 0
    clock.now += 1
    assert api.call("GET", "/v1/jobs", key).json()["items"] == []


def test_containers_share_the_bucket_and_never_spend_a_token_twice(resources: Resources) -> None:
    # Two Lambda containers, each with its own remembered state of the same bucket: their stale
    # views lose the conditional write, re-read what it answers, and the bucket gives out exactly 10.
    clock = FrozenClock()
    store = LimitStore(aws_clients.dynamodb(), resources.table_name)
    containers = [RateLimiter(store, rate_per_s=10, burst=10, clock=clock) for _ in range(2)]
    granted = 0
    for turn in range(30):
        try:
            containers[turn % 2].take("key:acme:k1")
            granted += 1
        except TooManyRequests:
            pass
    assert granted == 10


def test_too_many_active_jobs_is_a_429_and_queues_nothing(api_with: Callable[..., Api]) -> None:
    api = api_with(max_active_jobs="2")
    acme, globex = create_key("acme"), create_key("globex")
    first = api.call("POST", "/v1/jobs", acme, body=JOB).json()["job_id"]
    assert api.call("POST", "/v1/jobs", acme, body=JOB).status == 202

    refused = api.call("POST", "/v1/jobs", acme, body=JOB)
    problem = assert_problem(refused, 429, "concurrency-limit")
    assert int(refused.headers["retry-after"]) > 0
    assert problem["limit"] == 2
    assert api.queued_messages() == 2

    assert api.call("POST", "/v1/jobs", globex, body=JOB).status == 202  # per tenant
    assert api.call("DELETE", f"/v1/jobs/{first}", acme).status == 200  # one ends...
    assert api.call("POST", "/v1/jobs", acme, body=JOB).status == 202  # ...and there is room again


def test_upload_bytes_per_day_is_a_quota_per_tenant(api_with: Callable[..., Api]) -> None:
    api = api_with(upload_bytes_per_day="1000")
    acme, globex = create_key("acme"), create_key("globex")

    def upload(key: str, size: int) -> tuple[int, dict[str, str], dict[str, object]]:
        answer = api.call(
            "POST",
            "/v1/uploads",
            key,
            body={"filename": "f.npy", "media_type": "application/x-npy", "size": size},
        )
        return answer.status, answer.headers, answer.json()

    assert upload(acme, 600)[0] == 201
    status, headers, problem = upload(acme, 600)
    assert status == 429 and problem["type"] == "urn:jobgate:problem:upload-quota"
    assert headers["content-type"].startswith("application/problem+json")
    now = datetime.now(UTC)
    seconds_to_midnight = 86400 - (now.hour * 3600 + now.minute * 60 + now.second)
    assert abs(int(headers["retry-after"]) - seconds_to_midnight) <= 5
    assert problem["used"] == 600

    assert upload(acme, 400)[0] == 201  # exactly the quota
    assert upload(acme, 1)[0] == 429
    assert upload(globex, 1000)[0] == 201
    assets = api.call("GET", "/v1/assets", acme).json()["items"]
    assert len(assets) == 2  # nothing was recorded for the refused uploads


@pytest.mark.parametrize("api_name", ["HttpApi", "JwtStage"])
def test_the_http_apis_are_throttled_from_parameters(api_name: str) -> None:
    template, problems = decode(str(TEMPLATE))
    assert template is not None, problems
    settings = template["Resources"][api_name]["Properties"]["DefaultRouteSettings"]
    assert settings == {
        "ThrottlingBurstLimit": {"Ref": "ApiThrottleBurstLimit"},
        "ThrottlingRateLimit": {"Ref": "ApiThrottleRateLimit"},
    }
    params = template["Parameters"]
    assert params["ApiThrottleRateLimit"]["Default"] == 100
    assert params["ApiThrottleBurstLimit"]["Default"] == 200
    env = template["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert env["JOBGATE_RATE_LIMIT_PER_S"] == {"Ref": "RateLimitPerSecond"}
    assert env["JOBGATE_MAX_ACTIVE_JOBS"] == {"Ref": "MaxActiveJobsPerTenant"}
    assert env["JOBGATE_UPLOAD_BYTES_PER_DAY"] == {"Ref": "UploadBytesPerDay"}


def test_simultaneous_requests_within_the_burst_are_all_granted(resources: Resources) -> None:
    # Sixteen requests with one key at once, each in a container of its own (a page that loads its
    # parts in parallel, an agent listing a deployment's commands): the bucket holds 20 tokens, so
    # every one is granted; none is refused for having raced the others to the bucket's item.
    store = LimitStore(aws_clients.dynamodb(), resources.table_name)
    clock = FrozenClock()  # no token comes back while the test runs
    containers = [RateLimiter(store, rate_per_s=10, burst=20, clock=clock) for _ in range(16)]
    start = threading.Barrier(len(containers))

    def take(limiter: RateLimiter) -> str:
        start.wait()
        try:
            limiter.take("key:acme:burst")
        except TooManyRequests as exc:
            return exc.detail
        return "granted"

    with ThreadPoolExecutor(len(containers)) as pool:
        answers = list(pool.map(take, containers))
    assert answers == ["granted"] * len(containers)
    with pytest.raises(TooManyRequests):  # and the bucket did count them: 4 tokens are left, not 20
        for _ in range(5):
            containers[0].take("key:acme:burst")
