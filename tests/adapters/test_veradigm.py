"""Veradigm adapter: the Unity session, Magic actions, errors inside HTTP 200, Task status by
read-compare-write (recorded Unity-style responses, respx)."""

import json

import pytest
import respx

from adapters.base import Guarantee, Outcome
from adapters.http import REDACTED
from adapters.veradigm.adapter import VeradigmAdapter
from tests.adapters.intended import write_request
from tests.adapters.support import BASES, recorded, target

FHIR = BASES["veradigm"]
UNITY = "http://veradigm.example.org/Unity/UnityService.svc/json"
CREDENTIALS = {
    "unity_username": "svc-writeback",
    "unity_password_ref": "env:WB_UNITY_PASSWORD",
    "unity_appname": "fhir-writeback",
    "unity_ehr_user": "ehr-writeback",
    "unity_ehr_password_ref": "env:WB_UNITY_EHR_PASSWORD",
}


@pytest.fixture
def adapter(monkeypatch):
    monkeypatch.setenv("WB_UNITY_PASSWORD", "app-pass-123")
    monkeypatch.setenv("WB_UNITY_EHR_PASSWORD", "ehr-pass-456")
    a = VeradigmAdapter(target("veradigm", settings=CREDENTIALS))
    yield a
    a.close()


def _session():
    token = respx.post(f"{UNITY}/GetToken").mock(return_value=recorded("veradigm", "gettoken_200"))
    auth = respx.post(f"{UNITY}/GetUserAuthentication").mock(
        return_value=recorded("veradigm", "getuserauthentication_200")
    )
    return token, auth


def _body(route, n=-1):
    return json.loads(route.calls[n].request.content)


@respx.mock
def test_session_once_then_magic_actions(adapter):
    token, auth = _session()
    magic = respx.post(f"{UNITY}/MagicJson").mock(
        side_effect=[recorded("veradigm", "savevitalsdata_200"), recorded("veradigm", "saverx_200")]
    )
    vitals = adapter.write(write_request("vitals.recorded", 0))
    rx = adapter.write(write_request("medication.reconciled"))
    assert token.call_count == auth.call_count == 1
    assert _body(auth)["AppUserID"] == "ehr-writeback" and _body(auth)["Parameter1"] == "ehr-pass-456"
    first = _body(magic, 0)
    assert first["Action"] == "SaveVitalsData" and first["Token"] == "A1B2C3D4E5F60718293A4B5C6D7E8F90"
    assert first["PatientID"] == "pat-1001" and first["Parameter2"].startswith("[wb:")
    readings = json.loads(first["Parameter1"])
    assert [r["code"] for r in readings] == ["8480-6", "8462-4"]
    assert readings[0]["effective"] == "2026-11-20T14:00:00-05:00" and readings[0]["unit"] == "mm[Hg]"
    assert (vitals.outcome, vitals.resource_id, len(vitals.exchanges)) == (Outcome.COMMITTED, "50011", 3)
    assert (rx.outcome, rx.resource_id, len(rx.exchanges)) == (Outcome.COMMITTED, "50012", 1)
    assert _body(magic)["Parameter3"] == "5 mg by mouth once daily"


@respx.mock
def test_no_secret_reaches_the_exchanges(adapter):
    _session()
    respx.post(f"{UNITY}/MagicJson").mock(return_value=recorded("veradigm", "savevitalsdata_200"))
    result = adapter.write(write_request("vitals.recorded", 1))
    stored = json.dumps([vars(e) for e in result.exchanges])
    for secret in ("app-pass-123", "ehr-pass-456", "A1B2C3D4E5F60718293A4B5C6D7E8F90"):
        assert secret not in stored
    assert result.exchanges[0].response_body == REDACTED  # the GetToken answer is the token


@respx.mock
def test_unity_errors_in_http_200_are_terminal(adapter):
    _session()
    respx.post(f"{UNITY}/MagicJson").mock(return_value=recorded("veradigm", "error_patient_not_found"))
    result = adapter.write(write_request("vitals.recorded", 1))
    assert result.outcome is Outcome.TERMINAL and "not found" in result.message


@respx.mock
def test_a_stale_token_is_renewed_once(adapter):
    token, auth = _session()
    magic = respx.post(f"{UNITY}/MagicJson").mock(
        side_effect=[
            recorded("veradigm", "error_invalid_security_token"),
            recorded("veradigm", "savevitalsdata_200"),
        ]
    )
    result = adapter.write(write_request("vitals.recorded", 1))
    assert result.outcome is Outcome.COMMITTED
    assert (token.call_count, auth.call_count, magic.call_count) == (2, 2, 2)


@respx.mock
def test_a_refused_ehr_user_stops_before_any_action(adapter):
    respx.post(f"{UNITY}/GetToken").mock(return_value=recorded("veradigm", "gettoken_200"))
    respx.post(f"{UNITY}/GetUserAuthentication").mock(
        return_value=recorded("veradigm", "getuserauthentication_invalid")
    )
    magic = respx.post(f"{UNITY}/MagicJson")
    result = adapter.write(write_request("vitals.recorded", 1))
    assert result.outcome is Outcome.TERMINAL and "Invalid EHR user" in result.message and not magic.called


@respx.mock
def test_task_status_is_read_compare_write(adapter):
    _session()
    req = write_request("referral.status_changed")
    respx.get(f"{FHIR}/Task/task-1001").mock(return_value=recorded("veradigm", "task_read_200"))
    magic = respx.post(f"{UNITY}/MagicJson").mock(return_value=recorded("veradigm", "savetaskstatus_200"))
    result = adapter.write(req)
    assert _body(magic)["Parameter1"] == "task-1001" and _body(magic)["Parameter2"] == "accepted"
    assert result.outcome is Outcome.COMMITTED and result.guarantee is Guarantee.READ_COMPARE_WRITE


@respx.mock
def test_a_task_someone_else_moved_is_a_conflict(adapter):
    moved = recorded("veradigm", "task_read_200").json() | {"status": "cancelled"}
    respx.get(f"{FHIR}/Task/task-1001").mock(return_value=recorded("veradigm", "task_read_200", body=moved))
    magic = respx.post(f"{UNITY}/MagicJson")
    result = adapter.write(write_request("referral.status_changed"))
    assert result.outcome is Outcome.CONFLICT and "cancelled" in result.message and not magic.called
    assert result.current["status"] == "cancelled"


def test_credentials_are_references_and_never_defaulted_for_a_remote_host(monkeypatch):
    remote = VeradigmAdapter(target("veradigm"))
    with respx.mock:
        result = remote.write(write_request("vitals.recorded", 1))
    assert result.outcome is Outcome.TERMINAL and "unity_username" in result.message
    literal = VeradigmAdapter(target("veradigm", settings={**CREDENTIALS, "unity_password_ref": "hunter2"}))
    with respx.mock:
        result = literal.write(write_request("vitals.recorded", 1))
    assert result.outcome is Outcome.TERMINAL and "not a literal value" in result.message


def test_refusals_and_manual_corrections():
    adapter = VeradigmAdapter(target("veradigm"))
    assert "read-only" in adapter.preflight(write_request("intake.completed"))
    assert "no versioned demographics update" in adapter.preflight(write_request("demographics.updated"))
    plan = adapter.compensation(
        write_request("allergy.recorded"), kind="rollback", resource_id="50009", version="", data=None
    )
    assert (
        plan.requests == []
        and "Veradigm" in plan.manual.instructions
        and "Allergies" in plan.manual.instructions
    )
    task = write_request("referral.status_changed")
    (undo,) = adapter.compensation(
        task, kind="rollback", resource_id="task-1001", version="", data=None
    ).requests
    assert undo.resource["status"] == "requested" and undo.context["expected"] == {"status": "accepted"}
