"""The request gate (writeback/api/body.py) on the API: each refusal's status, rule code and path, the
limits per endpoint, and that nothing is stored; on SQLite and PostgreSQL alike."""

import json

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.conftest import api_client_for, granted_user
from tests.writeback.helpers import consent_for, event
from writeback.api import body as gate
from writeback.models import Approval, AuditEntry, BusinessEvent, Consent, Write
from writeback.services.permissions import grant_action_permission

EVENTS = "/api/v1/events"


def _issue(r) -> tuple[str, str]:
    issue = r.json()["issue"][0]
    return issue["details"]["coding"][0]["code"], (issue.get("expression") or [""])[0]


@pytest.fixture
def ready(api, tenant, clinician):
    consent_for(tenant)
    return api


@pytest.fixture
def awaiting(ready):
    r = ready.post(EVENTS, event("allergy.recorded", key="gate-allergy"), format="json")
    assert r.status_code == 201, r.json()
    return Write.objects.get(uid=r.json()["writes"][0]["id"])


@pytest.fixture
def approver(tenant, clinician2):
    return api_client_for(clinician2, tenant)


def _post(client, url, raw: bytes | str, content_type="application/json", **extra):
    return client.generic("POST", url, raw, content_type=content_type, **extra)


def _nothing_stored():
    assert BusinessEvent.objects.count() == 0 and Write.objects.count() == 0


# -- what PostgreSQL cannot store ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "value", "path"),
    [
        ("idempotency_key", "portal-\x00-1", "idempotency_key"),
        ("source.message_id", "msg\x00", "source.message_id"),
        ("patient.identifier.value", "MRN\x001001", "patient.identifier.value"),
        ("data.note", "confirmed\x00", "data.note"),
        ("data.code.display", "Hyper\x1btension", "data.code.display"),
        ("data.note", "lone \ud800 surrogate", "data.note"),
    ],
)
def test_nul_and_control_characters_in_an_event_are_422_naming_the_field(ready, where, value, path):
    body = event("problem.confirmed", key="gate-1")
    target = body
    *parents, last = where.split(".")
    for step in parents:
        target = target[step]
    target[last] = value
    r = _post(ready, EVENTS, json.dumps(body))
    assert r.status_code == 422, r.json()
    assert _issue(r) == ("invalid-character", path)
    _nothing_stored()


def test_tab_and_newlines_are_text(ready):
    body = event("problem.confirmed", key="gate-2", note="line one\n\tline two\r\n")
    r = _post(ready, EVENTS, json.dumps(body))
    assert r.status_code == 201, r.json()


def test_a_control_character_in_a_name_is_refused(ready):
    body = event("problem.confirmed", key="gate-3")
    body["data"]["no\nte"] = "x"
    r = _post(ready, EVENTS, json.dumps(body))
    assert r.status_code == 422 and _issue(r) == ("invalid-character", "data.no\\u000ate")
    _nothing_stored()


def test_a_nul_in_the_idempotency_header_is_400(ready):
    body = event("problem.confirmed", key="gate-4")
    del body["idempotency_key"]
    r = _post(ready, EVENTS, json.dumps(body), HTTP_IDEMPOTENCY_KEY="key\x00")
    assert r.status_code == 400 and _issue(r) == ("invalid-header", "Idempotency-Key")
    r = _post(ready, EVENTS, json.dumps(body), HTTP_X_REQUEST_ID="req\x00")
    assert r.status_code == 400 and _issue(r) == ("invalid-header", "X-Request-Id")
    _nothing_stored()


@pytest.mark.parametrize("param", ["tenant", "q", "patient", "state", "resource_type", "since", "cursor"])
def test_a_nul_in_a_query_parameter_is_400(ready, param):
    r = ready.get(f"/api/v1/writes?{param}=a%00b")
    assert r.status_code == 400 and _issue(r) == ("invalid-parameter", param)
    r = ready.get(f"/api/v1/writes?{param}=" + "x" * (gate.MAX_QUERY_CHARS + 1))
    assert r.status_code == 400 and _issue(r) == ("invalid-parameter", param)


# -- size, depth and JSON ------------------------------------------------------------------------------


def test_each_endpoint_kind_has_its_own_size_limit(ready, awaiting, approver, settings):
    settings.WRITEBACK_MAX_ACTION_BYTES = 4096
    settings.WRITEBACK_MAX_EVENT_BYTES = 16384
    padded = {"rationale": "checked", "pad": "x" * 5000}
    r = _post(approver, f"/api/v1/writes/{awaiting.uid}/approve", json.dumps(padded))
    assert r.status_code == 413 and _issue(r)[0] == "too-large"
    assert "the limit is 4096" in r.json()["issue"][0]["diagnostics"]
    consents = api_client_for(granted_user(awaiting.tenant, "cleo", "clinician"), awaiting.tenant)
    r = _post(
        consents, "/api/v1/consents", json.dumps({"tenant": "generic-main", "patient": "p", "x": "y" * 5000})
    )
    assert r.status_code == 413
    # The same 5 KB is fine for an event (an unknown envelope key is only a warning)...
    r = _post(ready, EVENTS, json.dumps({**event("problem.confirmed", key="gate-5"), "pad": "x" * 5000}))
    assert r.status_code == 201, r.json()
    # ...and its own limit applies beyond 16 KB.
    r = _post(ready, EVENTS, json.dumps({**event("problem.confirmed", key="gate-6"), "pad": "x" * 17000}))
    assert r.status_code == 413
    assert Approval.objects.count() == 0 and Consent.objects.count() == 1  # the fixture's


def test_a_body_longer_than_it_says_is_still_cut_at_the_limit(approver, awaiting, settings):
    """The parser reads no more than the limit, whatever Content-Length claimed."""
    settings.WRITEBACK_MAX_ACTION_BYTES = 100
    r = approver.generic(
        "POST",
        f"/api/v1/writes/{awaiting.uid}/approve",
        json.dumps({"rationale": "x" * 500}),
        content_type="application/json",
        CONTENT_LENGTH="50",
    )
    assert r.status_code == 400  # 50 bytes of JSON are not JSON; the rest was never read
    assert Approval.objects.count() == 0


@pytest.mark.parametrize("depth", [33, 200, 5000])
def test_deep_nesting_is_400_on_every_write_action(approver, awaiting, depth):
    deep = "[" * depth + "]" * depth
    for action in ("approve", "reject", "replay", "compensate", "resolve", "abort"):
        r = _post(
            approver, f"/api/v1/writes/{awaiting.uid}/{action}", f'{{"rationale": "x", "deep": {deep}}}'
        )
        assert r.status_code in (400, 413), (action, r.json())
        assert _issue(r)[0] in ("too-deep", "too-large")
    assert Approval.objects.count() == 0


# Weighted towards what the gate looks for: every C0 control, surrogates, and the characters of JSON
# escapes; hypothesis leaves surrogates out unless told.
# JSON writes \b \f \n \r \t as short escapes, the other controls as \u00XX, and lone surrogates as
# \udXXX (or raw, without ensure_ascii): each kind, also alone.
_short_escapes = ["\b", "\f", "\n", "\r", "\t", "\ud800", "\udfff"]
_suspects = [chr(c) for c in range(0x20)] + ["\ud800", "\udbff", "\udc00", "\udfff", "\\", "u", "b", "f"]
_text = (
    st.text(alphabet=st.sampled_from(_short_escapes + ["a"]), max_size=3)
    | st.text(alphabet=st.sampled_from(_suspects), max_size=3)
    | st.text(alphabet=st.characters(max_codepoint=0xE000, exclude_categories=()), max_size=8)
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=10,
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(value=_json, ascii_only=st.booleans(), deep=st.integers(0, 40))
def test_the_fast_path_refuses_exactly_what_the_full_walk_refuses(value, ascii_only, deep):
    """parse_json skips the path-building walk for plain bodies; it must never let through what the
    walk refuses, nor refuse what it lets through."""
    for _ in range(deep):
        value = [value]
    text = json.dumps(value, ensure_ascii=ascii_only)
    try:
        # The walk sees what the text holds once parsed (a surrogate pair written as two escapes is one
        # character then, and fine).
        gate.check_json(json.loads(text), kind=gate.ACTIONS)
        walk = None
    except gate.BodyRefused as exc:
        walk = exc.rule
    try:
        gate.parse_json(text, kind=gate.ACTIONS)
        fast = None
    except gate.BodyRefused as exc:
        fast = exc.rule
    assert fast == walk


def test_depth_up_to_the_limit_passes_the_gate(settings):
    limit = settings.WRITEBACK_MAX_JSON_DEPTH
    assert gate.parse_json("[" * limit + "]" * limit, kind=gate.ACTIONS) is not None
    with pytest.raises(gate.BodyRefused) as refused:
        gate.parse_json("[" * (limit + 1) + "]" * (limit + 1), kind=gate.ACTIONS)
    assert (refused.value.status, refused.value.rule) == (400, "too-deep")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"rationale": NaN}',
        b'{"rationale": 1e999}',
        b'{"rationale": -Infinity}',
        b'{"r": ' + b"9" * 5000 + b"}",
    ],
)
def test_numbers_json_cannot_hold_are_400(approver, awaiting, raw):
    r = _post(approver, f"/api/v1/writes/{awaiting.uid}/approve", raw)
    assert r.status_code == 400 and _issue(r)[0] == "invalid-json"


def test_bytes_that_are_not_utf8_are_400(approver, awaiting):
    r = _post(approver, f"/api/v1/writes/{awaiting.uid}/approve", b'{"rationale": "caf\xe9"}')
    assert r.status_code == 400 and _issue(r)[0] == "invalid-json"
    assert "not UTF-8" in r.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("raw", ["[]", '"approve"', "3", "null", "true"])
def test_json_that_is_not_an_object_is_400(ready, approver, awaiting, raw):
    r = _post(approver, f"/api/v1/writes/{awaiting.uid}/approve", raw)
    assert r.status_code == 400 and _issue(r)[0] == "invalid-body"
    r = _post(ready, EVENTS, raw)
    assert r.status_code == 400 and _issue(r)[0] == "invalid-envelope"
    assert Approval.objects.count() == 0


def test_an_overlong_string_in_an_action_is_422_naming_it(approver, awaiting, settings):
    settings.WRITEBACK_MAX_STRING_CHARS = 100
    r = _post(approver, f"/api/v1/writes/{awaiting.uid}/approve", json.dumps({"rationale": "r" * 101}))
    assert r.status_code == 422 and _issue(r) == ("too-long", "rationale")
    assert Approval.objects.count() == 0


def test_an_event_string_is_bounded_by_the_event_limit_only(ready, settings):
    settings.WRITEBACK_MAX_STRING_CHARS = 100
    body = event("note.signed", key="gate-long-note", text="a long note " * 50)
    assert _post(ready, EVENTS, json.dumps(body)).status_code == 201


def test_the_old_event_media_types_still_work(ready):
    body = json.dumps(event("problem.confirmed", key="gate-fhir"))
    assert _post(ready, EVENTS, body, content_type="application/fhir+json").status_code == 201
    r = _post(ready, EVENTS, body, content_type="text/plain")
    assert r.status_code == 415 and _issue(r)[0] == "unsupported-media-type"


def test_a_consent_with_nul_is_refused_and_unaudited(tenant, app_user, api):
    grant_action_permission(app_user, "manage_consent")
    before = AuditEntry.objects.count()
    r = _post(api, "/api/v1/consents", json.dumps({"tenant": "generic-main", "patient": "pat\x00-1"}))
    assert r.status_code == 422 and _issue(r) == ("invalid-character", "patient")
    assert Consent.objects.count() == 0 and AuditEntry.objects.count() == before
