"""s3:// arguments name only buckets on the allow-list."""

from __future__ import annotations

from jobgate.services.egress import EgressPolicy


def test_s3_urls_only_for_allow_listed_buckets() -> None:
    policy = EgressPolicy(s3_buckets=["noaa-gfs-bdp-pds"])
    assert policy.url_problem("s3://noaa-gfs-bdp-pds/gfs.t00z.pgrb2.0p25.f000") is None
    problem = policy.url_problem("s3://someone-elses-bucket/secrets.csv")
    assert problem is not None and "someone-elses-bucket" in problem
    errors = policy.check_args({"url": "s3://jobgate-data/results/other-tenant/x"})
    assert errors[0]["loc"] == ["body", "args", "url"]
