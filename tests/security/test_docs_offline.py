"""The documentation pages need no network beyond the API: their scripts and styles come from the API."""

from __future__ import annotations

import re

import pytest

from tests.security.conftest import Api


@pytest.mark.parametrize(
    ("page", "script"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")]
)
def test_the_docs_pages_load_everything_from_the_api_itself(api: Api, page: str, script: str) -> None:
    answer = api.call("GET", page, None)
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/html")
    html = answer.body.decode()
    references = re.findall(r"""(?:src|href|spec-url)\s*=\s*['"]([^'"]+)['"]""", html)
    references += re.findall(r"""url:\s*['"]([^'"]+)['"]""", html)
    assert references, html
    assert not [ref for ref in references if "//" in ref], "a page refers to another host"
    assert "/openapi.json" in references
    assert any(ref.endswith(script) for ref in references)
    for ref in references:
        fetched = api.call("GET", ref, None)
        assert fetched.status == 200, ref
        assert len(fetched.body) > 0
    bundle = api.call("GET", next(r for r in references if r.endswith(script)), None)
    assert bundle.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert len(bundle.body) > 100_000
