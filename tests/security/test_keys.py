"""API keys: issued once, kept only as hashes, refused at once when revoked or expired; JWT tenants."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import boto3
from cfnlint.decode import decode
from jobgate.models import utcnow
from jobgate.services.keys import hash_key

from tests.security.conftest import BOOTSTRAP_KEY, Api, admin, assert_problem, create_key
from tests.support.aws import TEMPLATE
from tests.support.lambdas import HttpAnswer, http_event

JOB = {"stage": "visualize", "command": "heatmap", "args": {"output": "map.png"}}


def _scan_table(api: Api) -> str:
    items = boto3.client("dynamodb").scan(TableName=api.resources.table_name)["Items"]
    return json.dumps(items)


def test_a_created_key_is_printed_once_and_stored_only_as_its_hash(api: Api) -> None:
    code, out, _ = admin("create", "--tenant", "acme", "--name", "n8n")
    assert code == 0
    key = next(line.split()[1] for line in out.splitlines() if line.startswith("api_key "))
    assert key.startswith("jg_") and len(key) > 40

    stored = _scan_table(api)
    assert key not in stored
    assert hash_key(key) in stored  # found by its hash

    code, listed, _ = admin("list", "--tenant", "acme")
    assert code == 0 and "n8n" in listed and "active" in listed
    assert key not in listed and hash_key(key) not in listed
    code, listed_json, _ = admin("list", "--tenant", "acme", "--json")
    (record,) = json.loads(listed_json)
    assert record["tenant"] == "acme" and record["state"] == "active"
    assert "key_hash" not in record and key not in listed_json


def test_a_tenant_key_acts_for_its_tenant_only(api: Api) -> None:
    key = create_key("acme")
    submitted = api.call("POST", "/v1/jobs", key, body=JOB)
    assert submitted.status == 202, submitted.body
    job_id = submitted.json()["job_id"]

    assert [j["job_id"] for j in api.call("GET", "/v1/jobs", key).json()["items"]] == [job_id]
    # The bootstrap key is tenant "default": it does not see acme's job.
    assert api.call("GET", "/v1/jobs", BOOTSTRAP_KEY).json()["items"] == []


def test_a_revoked_key_is_refused_on_its_next_request(api: Api) -> None:
    key = create_key("acme")
    assert api.call("GET", "/v1/jobs", key).status == 200
    (record,) = json.loads(admin("list", "--tenant", "acme", "--json")[1])

    code, out, _ = admin("revoke", "--tenant", "acme", record["key_id"])
    assert code == 0 and record["key_id"] in out

    refused = assert_problem(api.call("GET", "/v1/jobs", key), 401, "unauthorized")
    assert "revoked" in refused["detail"]
    # The WebSocket's $connect asks the same question of the same table.
    assert api.services.tenant_for_key(key) is None
    (after,) = json.loads(admin("list", "--tenant", "acme", "--json")[1])
    assert after["state"] == "revoked"


def test_an_expired_key_is_refused(api: Api) -> None:
    past = (utcnow() - timedelta(minutes=1)).isoformat()
    expired = create_key("acme", "--expires-at", past)
    refused = assert_problem(api.call("GET", "/v1/jobs", expired), 401, "unauthorized")
    assert "expired" in refused["detail"]

    still_valid = create_key("acme", "--expires-in-days", "1")
    assert api.call("GET", "/v1/jobs", still_valid).status == 200


def test_missing_unknown_and_oversized_keys_are_401_problems(api: Api) -> None:
    missing = api.call("GET", "/v1/jobs", None)
    assert_problem(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"] == "ApiKey"
    assert_problem(api.call("GET", "/v1/jobs", "jg_" + "x" * 43), 401, "unauthorized")
    assert_problem(api.call("GET", "/v1/jobs", BOOTSTRAP_KEY + "x"), 401, "unauthorized")
    assert_problem(api.call("GET", "/v1/jobs", "k" * 5000), 401, "unauthorized")


def test_the_cli_refuses_bad_tenant_names_and_unknown_keys(api: Api) -> None:
    for tenant in ("a/b", "TENANT#x", "", "-x", "a" * 65):
        code, out, err = admin("create", "--tenant", tenant)
        assert code == 2, (tenant, out)
        assert "api_key" not in out
    assert "KEY#" not in _scan_table(api)
    code, _, err = admin("revoke", "--tenant", "acme", "01JD7Q9A1B2C3D4E5F6G7H8J9K")
    assert code == 2 and "no key" in err


def test_revoking_is_scoped_to_the_keys_tenant(api: Api) -> None:
    key = create_key("acme")
    (record,) = json.loads(admin("list", "--tenant", "acme", "--json")[1])
    code, _, _ = admin("revoke", "--tenant", "globex", record["key_id"])
    assert code == 2
    assert api.call("GET", "/v1/jobs", key).status == 200


# -- JWT: claims that API Gateway's JWT authorizer validated --------------------------------------


def _jwt_call(api: Api, path: str, claims: dict[str, Any]) -> HttpAnswer:
    event = http_event("GET", path)
    event["requestContext"]["authorizer"] = {"jwt": {"claims": claims, "scopes": None}}
    return api.send(event)


def test_a_validated_jwt_acts_for_the_tenant_its_claim_names(api: Api) -> None:
    key = create_key("acme")
    job_id = api.call("POST", "/v1/jobs", key, body=JOB).json()["job_id"]

    seen = _jwt_call(api, "/v1/jobs", {"sub": "user-1", "tenant": "acme", "iss": "https://idp.example"})
    assert seen.status == 200
    assert [j["job_id"] for j in seen.json()["items"]] == [job_id]
    other = _jwt_call(api, "/v1/jobs", {"sub": "user-2", "tenant": "globex"})
    assert other.status == 200 and other.json()["items"] == []


def test_a_jwt_without_a_valid_tenant_claim_is_refused(api: Api) -> None:
    for claims in ({"sub": "user-1"}, {"sub": "u", "tenant": "../acme"}, {"sub": "u", "tenant": ["acme"]}):
        answer = _jwt_call(api, "/v1/jobs", claims)
        assert_problem(answer, 401, "unauthorized")


def test_the_tenant_claim_is_a_setting(api_with: Any) -> None:
    api = api_with(jwt_tenant_claim="custom:org")
    assert _jwt_call(api, "/v1/jobs", {"sub": "u", "tenant": "acme"}).status == 401
    assert _jwt_call(api, "/v1/jobs", {"sub": "u", "custom:org": "acme"}).status == 200


def test_the_template_puts_a_jwt_authorizer_in_front_of_the_jwt_api() -> None:
    template, problems = decode(str(TEMPLATE))
    assert template is not None, problems
    resources = template["Resources"]
    authorizer = resources["JwtAuthorizer"]["Properties"]
    assert authorizer["AuthorizerType"] == "JWT"
    assert authorizer["JwtConfiguration"] == {
        "Issuer": {"Ref": "JwtIssuer"},
        "Audience": [{"Ref": "JwtAudience"}],
    }
    route = resources["JwtRoute"]["Properties"]
    assert route["AuthorizationType"] == "JWT" and route["AuthorizerId"] == {"Ref": "JwtAuthorizer"}
    for name in (
        "JwtHttpApi",
        "JwtAuthorizer",
        "JwtIntegration",
        "JwtRoute",
        "JwtStage",
        "JwtInvokePermission",
    ):
        assert resources[name]["Condition"] == "JwtEnabled", name
    env = resources["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert env["JOBGATE_JWT_TENANT_CLAIM"] == {"Ref": "JwtTenantClaim"}
    # Deployed without an issuer, nothing of it exists and API keys are the only way in.
    assert template["Conditions"]["JwtEnabled"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "JwtIssuer"}, ""]}]}
    assert template["Parameters"]["JwtIssuer"]["Default"] == ""
