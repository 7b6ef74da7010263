"""The web console as the API serves it: the page and its files from the package, each answer with a
Content-Security-Policy naming exactly what the page reaches (the API, the WebSocket API, the bucket's
presigned URLs), no file of the folder but the console's own, and files that need nothing the policy
refuses (no inline script or style, no markup built from strings, every import served)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from jobgate.adapters import aws
from jobgate.adapters.blobs import BlobStore
from jobgate.api import console
from jobgate.api.app import create_app
from jobgate.services.registry import Registry
from jobgate.settings import Settings
from jobgate.wiring import ApiServices

WS_URL = "wss://abc123.execute-api.eu-west-1.amazonaws.com/v1"
BUCKET = "jobgate-data-test"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    settings = Settings.model_construct(
        table_name="-", queue_url="-", bucket_name=BUCKET, websocket_url=WS_URL, cors_origins=()
    )
    with TestClient(create_app(ApiServices(settings, Registry([])))) as client:
        yield client


def directives(policy: str) -> dict[str, list[str]]:
    parsed = {}
    for part in policy.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


def test_the_page_answers_with_a_policy_naming_the_api_the_websocket_and_the_bucket(api: TestClient) -> None:
    page = api.get("/console")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = directives(page.headers["content-security-policy"])
    blobs = BlobStore(aws.s3(), BUCKET)
    upload_url = blobs.presign_post("uploads/x", media_type="text/csv", size=1, expires_s=60)["url"]
    download_url = blobs.presign_get("results/x.png", expires_s=60)
    bucket_origins = {re.match(r"https://[^/]+", url).group(0) for url in (upload_url, download_url)}  # type: ignore[union-attr]
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
    ws_origin = "wss://abc123.execute-api.eu-west-1.amazonaws.com"
    assert set(policy["connect-src"]) == {"'self'", ws_origin, *bucket_origins}
    assert bucket_origins <= set(policy["img-src"]) and bucket_origins <= set(policy["media-src"])
    assert policy["frame-ancestors"] == ["'none'"] and policy["base-uri"] == ["'none'"]
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-content-type-options"] == "nosniff"


def test_the_console_files_are_served_with_their_types_and_the_same_policy(api: TestClient) -> None:
    page = api.get("/console")
    for name, media_type in (("app.js", "text/javascript"), ("console.css", "text/css")):
        answer = api.get(f"/console/assets/{name}")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith(media_type)
        assert answer.headers["content-security-policy"] == page.headers["content-security-policy"]


@pytest.mark.parametrize("name", ["index.html", "..%2F..%2Fsettings.py", "missing.js", "__init__.py"])
def test_nothing_but_the_console_files_is_served(api: TestClient, name: str) -> None:
    assert api.get(f"/console/assets/{name}").status_code == 404


def test_without_a_websocket_url_the_policy_names_none() -> None:
    policy = directives(console.content_security_policy(None, ["https://b.s3.amazonaws.com"]))
    assert policy["connect-src"] == ["'self'", "https://b.s3.amazonaws.com"]


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inline_scripts = 0
        self.styles = 0
        self.handlers: list[str] = []
        self.labels: set[str] = set()
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        self.handlers += [name for name in names if name.startswith("on")]
        self.styles += tag == "style" or "style" in names
        self._in_script = tag == "script" and "src" not in names

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1


def test_the_page_holds_nothing_the_policy_refuses_and_its_landmarks() -> None:
    html = (console.ASSETS / "index.html").read_text()
    markup = _Markup()
    markup.feed(html)
    assert (markup.inline_scripts, markup.styles, markup.handlers) == (0, 0, [])
    landmarks = ("<header>", '<main id="main"', '<nav aria-label="Console"', 'aria-live="polite"')
    for landmark in landmarks:
        assert landmark in html


def test_every_module_the_scripts_import_is_served_and_none_writes_markup_from_strings() -> None:
    scripts = {path.name: path.read_text() for path in console.ASSETS.glob("*.js")}
    assert "app.js" in scripts
    for name, source in scripts.items():
        for imported in re.findall(r'from "\./([^"]+)"', source):
            assert imported in scripts, f"{name} imports {imported}, which is not served"
        for refused in ("innerHTML", "outerHTML", "insertAdjacentHTML", "eval(", "Function(", ".write("):
            assert refused not in source, f"{name} uses {refused}"
    served = {p.name for p in Path(console.ASSETS).iterdir()} - {"index.html"}
    assert served == set(console._SERVED)
