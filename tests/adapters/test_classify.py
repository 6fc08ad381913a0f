"""The one classifier: its outcome for every status and network failure it knows, and vendor quirks."""

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from adapters.base import Outcome
from adapters.classify import (
    Dialect,
    classify,
    etag_version,
    parse_location,
    parse_retry_after,
    stored_in_answer,
)
from adapters.http import Failure, classify_exception
from tests.adapters.support import operation_outcome, reply

C, X, R, A, T = Outcome.COMMITTED, Outcome.CONFLICT, Outcome.RETRYABLE, Outcome.AMBIGUOUS, Outcome.TERMINAL
CONDITIONAL = {"If-None-Exist": "identifier=s|1"}
IF_MATCH = {"If-Match": 'W/"3"'}


RETRY_AFTER = {"Retry-After": "30"}
# (status, method, request headers, answer headers, conditional create confirmed, expected)
STATUSES = [
    (200, "PUT", IF_MATCH, {}, False, C),
    (201, "POST", {}, {}, False, C),
    (200, "POST", CONDITIONAL, {}, False, C),
    (400, "POST", {}, {}, False, T),
    (401, "POST", {}, {}, False, T),
    (403, "POST", {}, {}, False, T),
    (404, "GET", {}, {}, False, T),
    (405, "POST", {}, {}, False, T),
    (406, "GET", {}, {}, False, T),
    (408, "POST", {}, {}, False, R),
    (409, "PUT", IF_MATCH, {}, False, X),
    (409, "POST", {}, {}, False, T),
    (410, "GET", {}, {}, False, T),
    (412, "PUT", IF_MATCH, {}, False, X),
    (412, "PATCH", IF_MATCH, {}, False, X),
    (413, "POST", {}, {}, False, T),
    (415, "POST", {}, {}, False, T),
    (422, "POST", {}, {}, False, T),
    (423, "PUT", IF_MATCH, {}, False, R),
    (425, "POST", {}, {}, False, R),
    (429, "POST", {}, {}, False, R),  # "not processed": safe to resend, even a create
    (429, "POST", CONDITIONAL, {}, False, R),
    # A 5xx to a create may follow a commit: ambiguous unless If-None-Exist was sent to a tenant whose
    # conditional create is confirmed (R4 servers may ignore the header).
    (500, "POST", {}, {}, False, A),
    (500, "POST", {}, {}, True, A),  # confirmation without the header changes nothing
    (500, "POST", CONDITIONAL, {}, False, A),
    (500, "POST", CONDITIONAL, {}, True, R),
    (502, "POST", {}, {}, False, A),
    (502, "POST", CONDITIONAL, {}, False, A),
    (502, "POST", CONDITIONAL, {}, True, R),
    (503, "POST", {}, {}, False, A),
    (503, "POST", CONDITIONAL, {}, False, A),
    (503, "POST", CONDITIONAL, {}, True, R),
    (503, "POST", {}, RETRY_AFTER, False, R),  # maintenance: not processed
    (503, "POST", CONDITIONAL, RETRY_AFTER, False, R),
    (504, "POST", {}, {}, False, A),
    (504, "POST", CONDITIONAL, {}, False, A),
    (504, "POST", CONDITIONAL, {}, True, R),
    (500, "PUT", IF_MATCH, {}, False, R),
    (501, "PATCH", IF_MATCH, {}, False, T),
    (502, "GET", {}, {}, False, R),
    (503, "GET", {}, {}, False, R),
    (503, "PUT", IF_MATCH, {}, False, R),
    (504, "PUT", IF_MATCH, {}, False, R),
]


@pytest.mark.parametrize(("status", "method", "request_headers", "headers", "trusted", "expected"), STATUSES)
def test_every_status(status, method, request_headers, headers, trusted, expected):
    body = operation_outcome("details") if status >= 400 else {"resourceType": "Observation", "id": "1"}
    answer = reply(status, body, method=method, request_headers=request_headers, headers=headers)
    cls = classify(answer, conditional_trusted=trusted)
    assert cls.outcome is expected
    if expected is A and status >= 500:
        assert "may have landed" in cls.message and f"HTTP {status}" in cls.message
        if request_headers:
            assert "not confirmed" in cls.message  # the console says why the header was not trusted


def test_the_table_covers_every_5xx_to_a_create_both_ways():
    """Exhaustive where it matters: every 5xx we name, to a create, with and without a confirmed
    If-None-Exist."""
    rows = {(s, m, bool(rh), bool(h), t) for s, m, rh, h, t, _ in STATUSES}
    for status in (500, 502, 503, 504):
        for conditional in (False, True):
            assert (status, "POST", conditional, False, False) in rows
        assert (status, "POST", True, False, True) in rows


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("Connection refused"), R),
        (httpx.ConnectTimeout("timed out"), R),
        (httpx.PoolTimeout("no connection free"), R),
        (httpx.ProxyError("proxy refused"), R),
        (httpx.ReadTimeout("timed out"), A),
        (httpx.WriteTimeout("timed out"), A),
        (httpx.ReadError("Connection reset by peer"), A),
        (httpx.WriteError("Broken pipe"), A),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), A),
        (httpx.LocalProtocolError("Illegal header value"), T),
        (httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'"), T),
    ],
)
def test_every_network_failure(exc, expected):
    outcome, message = classify_exception(exc)
    assert outcome is expected and message
    assert classify(reply(None, failure=Failure(outcome, message))).outcome is expected


def test_committed_takes_id_and_version_from_location_etag_or_meta():
    created = reply(
        201,
        {"resourceType": "Observation", "id": "42", "meta": {"versionId": "1"}},
        headers={"Location": "http://x/fhir/Observation/42/_history/1", "ETag": 'W/"1"'},
    )
    cls = classify(created)
    assert (cls.outcome, cls.resource_id, cls.version) == (C, "42", "1")
    epic = classify(reply(201, None, headers={"Location": "Observation/e7Xq"}, text=""))
    assert (epic.resource_id, epic.version) == ("e7Xq", "")
    meta_only = classify(
        reply(200, {"resourceType": "Patient", "id": "p", "meta": {"versionId": "7"}}, method="PUT")
    )
    assert meta_only.version == "7"


def test_the_id_comes_from_location_when_the_body_names_another_resource():
    created = reply(
        201,
        {"resourceType": "Observation", "id": "other", "meta": {"versionId": "1"}},
        headers={"Location": "http://x/fhir/Observation/42/_history/1"},
    )
    assert classify(created).resource_id == "42"


OBS = {"resourceType": "Observation", "id": "42", "meta": {"versionId": "2"}, "status": "final"}
LOCATED = {"Location": "http://x/fhir/Observation/42/_history/2", "ETag": 'W/"2"'}


def _put(body, headers=None, status=200, url="http://example.org/fhir/Observation/42"):
    answer = reply(status, body, headers=headers, method="PUT")
    answer.url = url
    return answer


@pytest.mark.parametrize(
    "answer",
    [
        reply(201, OBS, headers=LOCATED),
        reply(201, OBS, headers={"Location": "Observation/42"}),  # relative, no version: meta not checked
        reply(200, OBS, headers={"Location": "http://x/fhir/Observation/42/_history/2"}),  # If-None-Exist hit
        _put(OBS, {"ETag": 'W/"2"'}),
        _put(OBS),  # an update names its resource by its URL
    ],
)
def test_an_answer_naming_the_written_resource_is_taken_as_stored(answer):
    stored, problem = stored_in_answer(answer, "Observation")
    assert stored == OBS and problem == ""


@pytest.mark.parametrize(
    "answer, why",
    [
        (reply(201, None, headers=LOCATED, text=""), "no resource"),
        (reply(201, operation_outcome("created"), headers=LOCATED), "OperationOutcome, not Observation"),
        (reply(201, {**OBS, "resourceType": "Basic"}, headers=LOCATED), "Basic, not Observation"),
        (reply(201, {**OBS, "id": "43"}, headers=LOCATED), "Observation/43, not the one written"),
        (reply(201, {k: v for k, v in OBS.items() if k != "id"}, headers=LOCATED), "not the one written"),
        (reply(201, {**OBS, "meta": {"versionId": "1"}}, headers=LOCATED), "version 1, its headers say 2"),
        (reply(201, {k: v for k, v in OBS.items() if k != "meta"}, headers=LOCATED), "version ?"),
        (reply(201, OBS), "no Location"),
        (reply(201, OBS, headers={"Location": "http://x/fhir/Condition/42"}), "names Condition"),
        (
            reply(201, OBS, headers={"Location": "http://x/fhir/Observation/42/_history/2", "ETag": 'W/"3"'}),
            "different versions",
        ),
        (reply(202, OBS, headers=LOCATED), "not a 200/201"),
        (reply(200, OBS, headers=LOCATED, method="GET"), "not a 200/201 answer to a write"),
        (_put(OBS, url="http://example.org/fhir/Observation/41"), "not the one written"),
        (_put(OBS, {"Location": "http://x/fhir/Observation/41"}), "not the one written"),
    ],
)
def test_an_answer_that_does_not_name_the_written_resource_is_refused_with_the_reason(answer, why):
    stored, problem = stored_in_answer(answer, "Observation")
    assert stored is None and why in problem


def test_operation_outcome_text_is_the_message():
    body = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "processing",
                "details": {"coding": [{"code": "59189"}], "text": "Reading already exists"},
                "expression": ["code", "instant"],
            }
        ],
    }
    message = classify(reply(400, body)).message
    assert "Reading already exists" in message and "59189" in message and "HTTP 400" in message


@pytest.mark.parametrize("header", ["120", None])
def test_retry_after_seconds_and_http_date(header):
    if header is None:
        header = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    cls = classify(reply(503, None, headers={"Retry-After": header}, text=""))
    assert cls.outcome is R and 80 <= cls.retry_after <= 120


def test_retry_after_parsing_edge_cases():
    assert parse_retry_after("0") == 0
    assert parse_retry_after("soon") is None
    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(past) == 0


def test_header_helpers():
    assert etag_version('W/"12"') == "12" and etag_version('"3"') == "3" and etag_version(None) == ""
    assert parse_location("Condition/abc") == ("Condition", "abc", "")
    assert parse_location("https://h/fhir/r4/Condition/a-1.Problem-9/_history/2") == (
        "Condition",
        "a-1.Problem-9",
        "2",
    )


# --- vendor dialects ---------------------------------------------------------------------------------


def test_athena_success_false_in_a_2xx_is_terminal_with_its_message():
    cls = classify(reply(200, {"success": False, "errormessage": "Invalid SNOMED code"}), Dialect.ATHENA_V1)
    assert cls.outcome is T and "Invalid SNOMED code" in cls.message
    assert classify(reply(200, {"success": True, "problemid": "9"}), Dialect.ATHENA_V1).outcome is C


def test_athena_throttling_403_with_quota_headers_is_retryable():
    headers = {"X-Athena-RateLimit-Remaining-Day": "0", "Retry-After": "30"}
    cls = classify(reply(403, {"error": "Over quota"}, headers=headers), Dialect.ATHENA_V1)
    assert cls.outcome is R and cls.retry_after == 30
    no_retry_after = classify(
        reply(403, None, headers={"X-Athena-RateLimit-Remaining-Day": "0"}, text=""), Dialect.ATHENA_V1
    )
    assert no_retry_after.outcome is R and 0 < no_retry_after.retry_after <= 86400
    # A 403 without quota headers is a permission failure.
    assert classify(reply(403, {"error": "Not authorized"}), Dialect.ATHENA_V1).outcome is T


def test_athena_request_errors_keep_their_detail():
    cls = classify(
        reply(400, {"error": "Invalid departmentid", "detailedmessage": "No department 99"}),
        Dialect.ATHENA_V1,
    )
    assert cls.outcome is T and "No department 99" in cls.message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ([{"Error": "Invalid patient ID"}], T),
        ([{"Error": "Transaction (Process ID 61) was deadlocked: rerun the transaction"}], R),
        ([{"Error": "Server busy, try again later"}], R),
        ([{"Error": "Execution timeout expired"}], A),
        ("Error: Magic action not permitted", T),
        ([{"savevitalsdatainfo": [{"ID": "77"}]}], C),
    ],
)
def test_unity_errors_inside_http_200(body, expected):
    assert classify(reply(200, body), Dialect.UNITY).outcome is expected
