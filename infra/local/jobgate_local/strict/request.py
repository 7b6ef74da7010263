"""One HTTP request to the local AWS, read once so every check sees the same bytes moto will."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import parse_qs, unquote

from werkzeug.datastructures import Headers
from werkzeug.wsgi import get_input_stream


@dataclass
class StrictRequest:
    method: str
    raw_path: str  # as the client sent it: still percent-encoded, without the query
    raw_query: str
    headers: Headers
    body: bytes
    environ: dict[str, Any] = field(repr=False)

    @classmethod
    def read(cls, environ: dict[str, Any]) -> StrictRequest:
        """Read the whole body (moto reads it whole too) and put it back for moto to read again."""
        body = get_input_stream(environ).read()
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("wsgi.input_terminated", None)
        raw_uri = str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "/"))
        if "://" in raw_uri:  # an absolute-form request target
            raw_uri = "/" + raw_uri.split("://", 1)[1].partition("/")[2]
        raw_path, _, raw_query = raw_uri.partition("?")
        headers = Headers(
            [(k[5:].replace("_", "-").title(), str(v)) for k, v in environ.items() if k.startswith("HTTP_")]
        )
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = str(environ["CONTENT_TYPE"])
        headers["Content-Length"] = str(len(body))
        return cls(str(environ["REQUEST_METHOD"]).upper(), raw_path, raw_query, headers, body, environ)

    @property
    def path(self) -> str:
        return unquote(self.raw_path)

    @cached_property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.raw_query, keep_blank_values=True)

    def query_value(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def host(self) -> str:
        return self.header("Host") or str(self.environ.get("SERVER_NAME", "localhost"))

    @cached_property
    def json(self) -> Mapping[str, Any]:
        """The body as JSON (DynamoDB, SQS's JSON protocol); {} when it is not."""
        try:
            value = json.loads(self.body or b"{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    @cached_property
    def form(self) -> dict[str, list[str]]:
        """An urlencoded body (the query protocol), with the query string's parameters under it."""
        params = dict(self.query)
        content_type = (self.header("Content-Type") or "").lower()
        if content_type.startswith("application/x-www-form-urlencoded"):
            for name, values in parse_qs(
                self.body.decode("utf-8", "replace"), keep_blank_values=True
            ).items():
                params[name] = values
        return params

    def form_value(self, name: str) -> str | None:
        values = self.form.get(name)
        return values[0] if values else None
