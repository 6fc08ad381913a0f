"""What the request log (`GET /_sim/requests`) may keep: secrets are replaced before an entry is stored.

The simulator stands in for a real EHR, so it must not become the place where credentials leak: bearer
tokens are left out, and password-, token- and secret-like header, JSON and form values are replaced.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

REDACTED = "[redacted]"
_SECRET_WORDS = ("authorization", "cookie", "token", "secret", "password", "passwd", "assertion", "api-key")


def is_secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Request headers without the bearer token, other secret-like values replaced."""
    return {k: (REDACTED if is_secret(k) else v) for k, v in headers.items() if k.lower() != "authorization"}


def _redact_json(value: Any, extra: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {
            k: REDACTED if (is_secret(str(k)) or k in extra) else _redact_json(v, extra)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact_json(v, extra) for v in value]
    return value


def redact_body(body: bytes, content_type: str, extra: Iterable[str] = ()) -> str:
    """The body as logged: JSON and form fields with secret-like names (and `extra` names) replaced."""
    text = body.decode("utf-8", "replace")
    keys = frozenset(extra)
    if not text.strip():
        return text
    if content_type == "application/x-www-form-urlencoded":
        pairs = parse_qsl(text, keep_blank_values=True)
        return urlencode([(k, REDACTED if (is_secret(k) or k in keys) else v) for k, v in pairs])
    try:
        parsed = json.loads(text)
    except ValueError:
        return text
    return json.dumps(_redact_json(parsed, keys), separators=(",", ":"), ensure_ascii=False)
