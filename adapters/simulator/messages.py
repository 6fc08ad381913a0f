"""The request the HTTP plumbing hands to the simulator, and the answer it writes back."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

JSON = "application/json; charset=utf-8"
FHIR_JSON = "application/fhir+json; charset=utf-8"


class BadRequest(Exception):
    """The request body cannot be read as the format the endpoint takes."""


@dataclass
class Request:
    method: str
    path: str  # percent-decoded, without the query string
    target: str  # the request target as sent (path and query string)
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes = b""
    # Set by the fault injector: a concurrent edit lands just before this If-Match request is applied.
    stale_version: bool = False
    # Set by a transaction for an entry that may create: the id decided before any entry is written, so
    # the other entries' references to it can be resolved first.
    assigned_id: str = ""

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def param(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0] if values else default

    @property
    def content_type(self) -> str:
        return self.header("content-type").split(";")[0].strip().lower()

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}")

    def form(self) -> dict[str, str]:
        """Form fields (application/x-www-form-urlencoded); the last value wins, as in athena's gateway."""
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"the form body is not UTF-8: {exc}")
        return {key: values[-1] for key, values in parse_qs(text, keep_blank_values=True).items()}


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the socket without any answer
    stall: float = 0.0  # seconds to hold the answer back (the client times out, the write stands)
    fault: str = ""  # the fault that shaped this answer, for the request log


def json_response(
    status: int, payload: Any, *, content_type: str = JSON, headers: dict[str, str] | None = None
) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, body, {"Content-Type": content_type, **(headers or {})})


def fhir_response(status: int, payload: Any, *, headers: dict[str, str] | None = None) -> Response:
    return json_response(status, payload, content_type=FHIR_JSON, headers=headers)


def text_response(status: int, text: str, *, headers: dict[str, str] | None = None) -> Response:
    return Response(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8", **(headers or {})})
