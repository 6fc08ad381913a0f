"""The one response classifier: every answer (or missing answer) becomes one of the five outcome classes.

    committed  2xx (with the id and version from Location / ETag / meta where the vendor gives them)
    conflict   412; 409 on a versioned request (someone changed the resource since our base version)
    retryable  408, 423, 425, 429, 503 (with Retry-After), other 5xx, connect errors: nothing landed
    ambiguous  timeout or connection lost after the request was sent: it may have landed; a 5xx to a
               create (see below)
    terminal   400/422 (OperationOutcome kept), 401 after one token refresh, 403, 404/405, other 4xx;
               a redirect (never followed), except a non-307/308 one to a write, which is ambiguous

One refinement of the 5xx rule: a 5xx to a create (POST) is *ambiguous*, not retryable, unless the
tenant's conditional create support is confirmed (`conditional_trusted`) and the POST carried
If-None-Exist. A gateway or server error after the body was received may follow a commit, and a
conformant R4 server may ignore If-None-Exist (it is optional), so resending could make a second chart
entry; the worker checks by read first. Only 429 and 503 with Retry-After mean "not processed, come back
later" and stay retryable for a create.

Vendor dialects map their quirks into the same classes:
  athena v1  `{"success": false, "errormessage": ...}` in a 2xx -> terminal with that message;
             403 with the rate-limit headers (or Retry-After) -> retryable, retry_after from the headers;
             `{"error", "detailedmessage"}` bodies become the message.
  Unity      `[{"Error": ...}]` (or a string containing "error:") in an HTTP 200 -> terminal, except
             texts that say the call was not processed (deadlock, busy, try again) -> retryable, and
             texts that say it timed out -> ambiguous.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

import httpx

from adapters.base import Outcome
from adapters.http import HttpReply, operation_outcome_summary


class Dialect(StrEnum):
    FHIR = "fhir"
    ATHENA_V1 = "athena_v1"
    UNITY = "unity"


@dataclass
class Classification:
    outcome: Outcome
    message: str = ""
    retry_after: float | None = None
    resource_id: str = ""
    version: str = ""
    resource: dict[str, Any] | None = None

    @property
    def committed(self) -> bool:
        return self.outcome is Outcome.COMMITTED


# --- network failures -------------------------------------------------------------------------------


# --- header parsing ----------------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from now: either delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def etag_version(etag: str | None) -> str:
    """'W/"3"' -> '3'."""
    if not etag:
        return ""
    etag = etag.strip()
    if etag.startswith(("W/", "w/")):
        etag = etag[2:]
    return etag.strip('"')


_LOCATION = re.compile(
    r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/(?P<vid>[^/?#]+))?/?$"
)


def parse_location(location: str | None) -> tuple[str, str, str]:
    """'.../Observation/123/_history/2' -> ('Observation', '123', '2'); relative 'Type/id' too."""
    if not location:
        return "", "", ""
    path = location.split("?", 1)[0]
    match = _LOCATION.search(path)
    if not match:
        return "", "", ""
    return match["type"], match["id"], match["vid"] or ""


def resource_version(resource: dict[str, Any] | None) -> str:
    if not isinstance(resource, dict):
        return ""
    return str((resource.get("meta") or {}).get("versionId") or "")


def stored_in_answer(reply: HttpReply, resource_type: str) -> tuple[dict[str, Any] | None, str]:
    """The resource a 200/201 answer to a FHIR write (POST, PUT, PATCH) says the server stored, when the
    body names exactly what was written: a `resource_type` whose id is the one the answer gives (the
    `Location` of a create, the URL of an update) and, when `ETag` or `Location` gives a version, whose
    `meta.versionId` is that version. Otherwise (None, why not): the worker then reads the resource back.

    Only the answer's own headers are trusted to name the resource; a body is taken as the stored
    representation only where they agree, so a server that answers with something else (an
    OperationOutcome, the request echoed, another resource) is never mistaken for the chart."""
    if reply.status not in (200, 201) or reply.method.upper() not in ("POST", "PUT", "PATCH"):
        return None, f"not a 200/201 answer to a write ({reply.method} {reply.status})"
    body = reply.body
    if not isinstance(body, dict) or not body:
        return None, "the answer has no resource in its body"
    found = body.get("resourceType")
    if found != resource_type:
        return None, f"the answer's body is {found or 'not a resource'}, not {resource_type}"
    loc_type, loc_id, loc_version = parse_location(
        reply.headers.get("Location") or reply.headers.get("Content-Location")
    )
    url_type, url_id, _ = parse_location(reply.url) if reply.method.upper() != "POST" else ("", "", "")
    if (loc_type and loc_type != resource_type) or (url_type and url_type != resource_type):
        return None, f"the answer's Location names {loc_type or url_type}, not {resource_type}"
    named = {i for i in (loc_id, url_id) if i}
    if not named:
        return None, "the answer names no id (no Location) to check its body against"
    if len(named) > 1 or str(body.get("id") or "") not in named:
        return None, f"the answer's body is {resource_type}/{body.get('id') or '?'}, not the one written"
    versions = {v for v in (etag_version(reply.headers.get("ETag")), loc_version) if v}
    if len(versions) > 1:
        return None, f"the answer's ETag and Location name different versions ({', '.join(sorted(versions))})"
    if versions and resource_version(body) not in versions:
        return None, (
            f"the answer's body is version {resource_version(body) or '?'}, its headers say {versions.pop()}"
        )
    return body, ""


def _athena_quota_retry_after(headers: httpx.Headers, *, now: datetime | None = None) -> float | None:
    """athena's quota headers: a per-minute (OAuth) and a per-day (API) remaining count. The day resets at
    midnight GMT, the minute on the minute."""
    now = now or datetime.now(UTC)
    exhausted_day = exhausted_minute = False
    for name, value in headers.items():
        lowered = name.lower()
        if "ratelimit" not in lowered and "quota" not in lowered:
            continue
        if "remaining" not in lowered or value.strip() not in {"0", "0.0"}:
            continue
        if "day" in lowered:
            exhausted_day = True
        else:
            exhausted_minute = True
    if exhausted_day:
        midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return (midnight - now).total_seconds()
    if exhausted_minute:
        return 60.0 - now.second
    return None


def _has_quota_headers(headers: httpx.Headers) -> bool:
    return any("ratelimit" in name.lower() or "quota" in name.lower() for name in headers)


# --- messages ----------------------------------------------------------------------------------------


def error_text(reply: HttpReply, dialect: Dialect = Dialect.FHIR) -> str:
    """The most useful human text in an error answer: OperationOutcome issues, vendor error fields, or a
    short piece of the body."""
    body = reply.body
    summary = operation_outcome_summary(body)
    if summary:
        return summary
    if isinstance(body, dict):
        parts = [
            str(body[k])
            for k in ("errormessage", "error", "detailedmessage", "error_description", "message", "Error")
            if body.get(k) not in (None, "")
        ]
        if parts:
            return ": ".join(dict.fromkeys(parts))
    if isinstance(body, list) and body and isinstance(body[0], dict) and body[0].get("Error"):
        return str(body[0]["Error"])
    text = (reply.text or "").strip()
    if not text:
        return "no body"
    return text[:300]


def _http_message(reply: HttpReply, dialect: Dialect, prefix: str = "") -> str:
    head = f"HTTP {reply.status}"
    if prefix:
        head = f"{head} {prefix}"
    return f"{head}: {error_text(reply, dialect)}"


# --- the classifier ----------------------------------------------------------------------------------

_UNITY_RETRYABLE = ("deadlock", "server busy", "too busy", "try again", "temporarily unavailable")
_UNITY_AMBIGUOUS = ("timeout", "timed out")


def _sent_if_none_exist(reply: HttpReply) -> bool:
    return any(k.lower() == "if-none-exist" for k in reply.request_headers)


def _is_plain_post(reply: HttpReply) -> bool:
    return reply.method.upper() == "POST" and not _sent_if_none_exist(reply)


def _create_may_have_landed(reply: HttpReply, conditional_trusted: bool) -> bool:
    """A 5xx to this request may follow a commit that a resend would duplicate: any POST, unless it
    carried If-None-Exist to a server whose conditional create is confirmed."""
    if reply.method.upper() != "POST":
        return False
    return not (conditional_trusted and _sent_if_none_exist(reply))


def _sent_if_match(reply: HttpReply) -> bool:
    return any(k.lower() == "if-match" for k in reply.request_headers)


def classify(
    reply: HttpReply, dialect: Dialect = Dialect.FHIR, *, conditional_trusted: bool = False
) -> Classification:
    """`conditional_trusted`: the tenant confirmed conditional create for this request's type (discovered
    or set by hand), so a 5xx to a POST with If-None-Exist can be resent safely."""
    if reply.failure is not None:
        return Classification(reply.failure.outcome, reply.failure.message)
    status = reply.status or 0
    if 200 <= status < 300:
        return _classify_success(reply, dialect)
    retry_after = parse_retry_after(reply.headers.get("Retry-After"))
    if (
        dialect is Dialect.ATHENA_V1
        and status in (403, 429)
        and (_has_quota_headers(reply.headers) or retry_after is not None)
    ):
        wait = retry_after if retry_after is not None else _athena_quota_retry_after(reply.headers)
        return Classification(Outcome.RETRYABLE, _http_message(reply, dialect, "throttled"), wait)
    if 300 <= status < 400:
        return _classify_redirect(reply, dialect)
    if status == 412:
        return Classification(Outcome.CONFLICT, _http_message(reply, dialect, "version conflict"))
    if status == 409:
        text = error_text(reply, dialect).lower()
        if _sent_if_match(reply) or any(w in text for w in ("version", "conflict", "stale", "modified")):
            return Classification(Outcome.CONFLICT, _http_message(reply, dialect, "version conflict"))
        return Classification(Outcome.TERMINAL, _http_message(reply, dialect))
    if status in (408, 423, 425, 429) or (status == 503 and retry_after is not None):
        return Classification(Outcome.RETRYABLE, _http_message(reply, dialect), retry_after)
    if status == 401:
        return Classification(
            Outcome.TERMINAL, _http_message(reply, dialect, "unauthorized after one token refresh")
        )
    if status in (404, 405):
        prefix = "not found" if status == 404 else "method not supported"
        return Classification(Outcome.TERMINAL, _http_message(reply, dialect, prefix))
    if 400 <= status < 500 or status == 501:
        return Classification(Outcome.TERMINAL, _http_message(reply, dialect))
    if status >= 500:
        if _create_may_have_landed(reply, conditional_trusted):
            why = (
                "after a POST whose If-None-Exist this tenant has not confirmed, it may have landed"
                if _sent_if_none_exist(reply)
                else "after a non-repeatable POST, it may have landed"
            )
            return Classification(Outcome.AMBIGUOUS, _http_message(reply, dialect, why), retry_after)
        return Classification(Outcome.RETRYABLE, _http_message(reply, dialect), retry_after)
    return Classification(Outcome.TERMINAL, _http_message(reply, dialect, "unexpected answer"))


def _classify_redirect(reply: HttpReply, dialect: Dialect) -> Classification:
    """Redirects are never followed (`adapters.http`). 307/308 say the request was not acted on; after
    any other 3xx a POST/PUT/PATCH may have been (POST-redirect-GET), so it is checked by read."""
    location = reply.headers.get("Location") or "no Location"
    message = _http_message(reply, dialect, f"redirect to {location[:300]} not followed")
    if reply.method.upper() in ("GET", "HEAD") or reply.status in (307, 308):
        return Classification(Outcome.TERMINAL, message)
    return Classification(Outcome.AMBIGUOUS, f"{message}; the request may have been acted on")


def _classify_success(reply: HttpReply, dialect: Dialect) -> Classification:
    body = reply.body
    if (
        dialect is Dialect.ATHENA_V1
        and isinstance(body, dict)
        and str(body.get("success")).lower() == "false"
    ):
        return Classification(Outcome.TERMINAL, f"athena refused: {error_text(reply, dialect)}")
    if dialect is Dialect.UNITY:
        unity_error = _unity_error(body, reply.text)
        if unity_error:
            lowered = unity_error.lower()
            if any(w in lowered for w in _UNITY_RETRYABLE):
                return Classification(Outcome.RETRYABLE, f"Unity: {unity_error}")
            if any(w in lowered for w in _UNITY_AMBIGUOUS):
                return Classification(
                    Outcome.AMBIGUOUS, f"Unity timed out, it may have landed: {unity_error}"
                )
            return Classification(Outcome.TERMINAL, f"Unity refused: {unity_error}")
    if dialect is not Dialect.FHIR:
        return Classification(Outcome.COMMITTED, resource=body if isinstance(body, dict) else None)
    resource = reply.resource
    _, loc_id, loc_version = parse_location(
        reply.headers.get("Location") or reply.headers.get("Content-Location")
    )
    # The headers name what the server created; a body may hold something else (stored_in_answer).
    rid = loc_id or (resource or {}).get("id")
    version = etag_version(reply.headers.get("ETag")) or loc_version or resource_version(resource)
    message = ""
    if reply.status == 200 and reply.method.upper() == "POST" and not _is_plain_post(reply):
        message = "already on the target (conditional create matched an existing resource)"
    return Classification(
        Outcome.COMMITTED, message, resource_id=str(rid or ""), version=version, resource=resource
    )


def unity_error_text(reply: HttpReply) -> str:
    return _unity_error(reply.body, reply.text)


def _unity_error(body: Any, text: str) -> str:
    if isinstance(body, list):
        for item in body:
            if isinstance(item, dict) and item.get("Error"):
                return str(item["Error"])
        return ""
    if isinstance(body, dict) and body.get("Error"):
        return str(body["Error"])
    if isinstance(body, str) and "error:" in body.lower():
        return body
    if body is None and "error:" in (text or "").lower():
        return text.strip()[:300]
    return ""
