"""Helpers for adapter tests: targets, recorded vendor responses, hand-built replies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from adapters.base import TargetConfig
from adapters.http import Failure, HttpReply

ROOT = Path(__file__).resolve().parents[2] / "adapters"
SYSTEM = "urn:fhir-writeback:write-id"
UID = "0b7f2a52-4f3e-4a55-9d0e-4e1f7c0a9a11"

BASES = {
    "generic": "http://hapi.example.org/fhir",
    "epic": "http://epic.example.org/api/FHIR/R4",
    "athena": "http://athena.example.org/fhir/r4",
    "veradigm": "http://veradigm.example.org/fhir/CP00101",
}


def target(vendor: str = "generic", **overrides: Any) -> TargetConfig:
    fields: dict[str, Any] = {
        "slug": f"{vendor}-test",
        "vendor": vendor,
        "base_url": BASES[vendor],
        "identifier_system": SYSTEM,
        "connect_timeout": 1.0,
        "read_timeout": 2.0,
    }
    fields.update(overrides)
    return TargetConfig(**fields)


def recorded_json(vendor: str, name: str) -> dict[str, Any]:
    return json.loads((ROOT / vendor / "fixtures" / f"{name}.json").read_text())


def recorded(vendor: str, name: str, **replace: Any) -> httpx.Response:
    """A recorded response from adapters/<vendor>/fixtures/<name>.json."""
    data = recorded_json(vendor, name)
    data.update(replace)
    body = data.get("body")
    content = (
        data["text"].encode() if "text" in data else (json.dumps(body).encode() if body is not None else b"")
    )
    return httpx.Response(data["status"], headers=data.get("headers") or {}, content=content)


def reply(
    status: int | None,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    method: str = "POST",
    request_headers: dict[str, str] | None = None,
    failure: Failure | None = None,
    text: str | None = None,
) -> HttpReply:
    if text is None:
        text = json.dumps(body) if body is not None else ""
    return HttpReply(
        method=method,
        url="http://example.org/fhir/Observation",
        exchanges=[],
        status=status,
        headers=httpx.Headers(headers or {}),
        text=text,
        request_headers=request_headers or {},
        failure=failure,
    )


def operation_outcome(text: str, code: str = "processing") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }
