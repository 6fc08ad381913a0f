"""Generic FHIR R4 adapter against recorded HAPI-style responses (respx)."""

import json

import httpx
import pytest
import respx

from adapters.base import Guarantee, Outcome
from adapters.generic.adapter import GenericFhirAdapter
from tests.adapters.intended import write_request
from tests.adapters.support import BASES, SYSTEM, recorded, target

BASE = BASES["generic"]


@pytest.fixture
def adapter():
    a = GenericFhirAdapter(
        target("generic", enabled=frozenset({("Patient", "patch"), ("Patient", "update")}))
    )
    yield a
    a.close()


@pytest.fixture
def put_adapter():
    """A tenant that does not allow PATCH: updates are read-merge-PUT."""
    a = GenericFhirAdapter(target("generic"))
    yield a
    a.close()


# The tenant's registry on conditional create for Observation -> (If-None-Exist sent, guarantee, 500 outcome)
REGISTRY = {
    "confirmed": ({"Observation": True}, True, Guarantee.CONDITIONAL_CREATE, Outcome.RETRYABLE),
    "unknown": ({}, True, Guarantee.LEDGER, Outcome.AMBIGUOUS),
    "refused": ({"Observation": False}, False, Guarantee.LEDGER, Outcome.AMBIGUOUS),
}


@respx.mock
@pytest.mark.parametrize("state", sorted(REGISTRY))
def test_create_is_conditional_on_our_identifier_as_the_registry_says(state):
    registry, sends, guarantee, after_500 = REGISTRY[state]
    adapter = GenericFhirAdapter(target("generic", conditional_create=registry))
    req = write_request("vitals.recorded", 1)
    route = respx.post(f"{BASE}/Observation").mock(return_value=recorded("generic", "observation_create_201"))
    result = adapter.write(req)
    sent = route.calls[0].request
    condition = f"identifier={SYSTEM}|{req.write_uid}"
    assert sent.headers.get("If-None-Exist") == (condition if sends else None)
    assert ("If-None-Exist" in adapter.plan(req)[0].headers) is sends
    body = json.loads(sent.content)
    assert {"system": SYSTEM, "value": req.write_uid} in body["identifier"]
    assert result.outcome is Outcome.COMMITTED
    assert (result.resource_id, result.version, result.guarantee) == ("1842", "1", guarantee)
    assert result.sent == body and result.stored["id"] == "1842"
    assert (
        len(result.exchanges) == 1
        and result.exchanges[0].request_headers["x-correlation-id"] == req.correlation_id
    )
    # A server error after the POST: resent blindly only when conditional create is confirmed.
    route.mock(return_value=httpx.Response(500, json={"resourceType": "OperationOutcome", "issue": []}))
    failed = adapter.write(write_request("vitals.recorded", 1))
    assert failed.outcome is after_500, failed.message
    adapter.close()


@respx.mock
def test_repeated_create_returns_the_existing_resource(adapter):
    respx.post(f"{BASE}/Observation").mock(
        return_value=recorded("generic", "observation_create_200_existing")
    )
    result = adapter.write(write_request("vitals.recorded", 1))
    assert result.outcome is Outcome.COMMITTED and result.resource_id == "1842"
    assert "already on the target" in result.message


@respx.mock
def test_rejected_create_keeps_the_operation_outcome_text(adapter):
    respx.post(f"{BASE}/Observation").mock(return_value=recorded("generic", "observation_create_422"))
    result = adapter.write(write_request("vitals.recorded", 1))
    assert result.outcome is Outcome.TERMINAL and "minimum required = 1" in result.message


@respx.mock
def test_patch_sends_json_patch_with_if_match(adapter):
    req = write_request("demographics.updated", base_version="3")
    route = respx.patch(f"{BASE}/Patient/pat-1001").mock(
        return_value=recorded("generic", "patient_update_200")
    )
    result = adapter.write(req)
    sent = route.calls[0].request
    assert sent.headers["If-Match"] == 'W/"3"'
    assert json.loads(sent.content) == [
        {"op": "add", "path": "/telecom", "value": req.resource["telecom"]},
        {"op": "add", "path": "/address", "value": req.resource["address"]},
    ]
    assert (result.outcome, result.version, result.guarantee) == (Outcome.COMMITTED, "4", Guarantee.IF_MATCH)


@respx.mock
def test_a_412_is_a_conflict_with_theirs_attached(adapter):
    respx.patch(f"{BASE}/Patient/pat-1001").mock(return_value=recorded("generic", "patient_update_412"))
    respx.get(f"{BASE}/Patient/pat-1001").mock(return_value=recorded("generic", "patient_update_200"))
    result = adapter.write(write_request("demographics.updated", base_version="3"))
    assert result.outcome is Outcome.CONFLICT and "not the current version" in result.message
    assert result.current_version == "4" and result.current["telecom"][0]["use"] == "mobile"
    assert len(result.exchanges) == 2


@respx.mock
def test_read_merge_put_changes_only_our_elements(put_adapter):
    req = write_request("demographics.updated", base_version="3")
    respx.get(f"{BASE}/Patient/pat-1001").mock(return_value=recorded("generic", "patient_read_200"))
    put = respx.put(f"{BASE}/Patient/pat-1001").mock(return_value=recorded("generic", "patient_update_200"))
    result = put_adapter.write(req)
    body = json.loads(put.calls[0].request.content)
    current = recorded("generic", "patient_read_200").json()
    assert put.calls[0].request.headers["If-Match"] == 'W/"3"'
    assert body["telecom"] == req.resource["telecom"] and body["address"] == req.resource["address"]
    for untouched in ("name", "gender", "birthDate", "identifier"):
        assert body[untouched] == current[untouched]
    assert "meta" not in body
    assert result.outcome is Outcome.COMMITTED and result.version == "4"


@respx.mock
def test_read_merge_put_refuses_a_stale_base_without_sending(put_adapter):
    respx.get(f"{BASE}/Patient/pat-1001").mock(return_value=recorded("generic", "patient_read_200"))
    put = respx.put(f"{BASE}/Patient/pat-1001")
    result = put_adapter.write(write_request("demographics.updated", base_version="2"))
    assert result.outcome is Outcome.CONFLICT and result.current_version == "3"
    assert not put.called


@respx.mock
def test_task_without_a_base_version_compares_its_from_status(put_adapter):
    req = write_request("referral.status_changed")
    task = {
        "resourceType": "Task",
        "id": req.target_id,
        "meta": {"versionId": "5"},
        "status": "in-progress",
        "intent": "order",
    }
    respx.get(f"{BASE}/Task/{req.target_id}").mock(return_value=httpx.Response(200, json=task))
    put = respx.put(f"{BASE}/Task/{req.target_id}")
    result = put_adapter.write(req)
    assert result.outcome is Outcome.CONFLICT and "status" in result.message and not put.called


@respx.mock
def test_find_by_identifier(adapter):
    req = write_request("vitals.recorded", 1)
    req.write_uid = "0b7f2a52-4f3e-4a55-9d0e-4e1f7c0a9a11"
    respx.get(f"{BASE}/Observation").mock(
        return_value=recorded("generic", "observation_search_by_identifier")
    )
    found = adapter.find_by_identifier(req)
    assert (found.found, found.resource_id, found.version) == (True, "1842", "1")
    req.write_uid = "another"
    assert adapter.find_by_identifier(req).found is False


@respx.mock
def test_find_by_identifier_that_cannot_tell(adapter):
    respx.get(f"{BASE}/Observation").mock(side_effect=httpx.ConnectError("refused"))
    found = adapter.find_by_identifier(write_request("vitals.recorded", 1))
    assert found.found is None and found.outcome is Outcome.RETRYABLE and found.exchanges


def test_plan_shows_the_exact_requests(adapter, put_adapter):
    req = write_request("vitals.recorded", 1)
    (post,) = adapter.plan(req)
    assert (post.method, post.url) == ("POST", f"{BASE}/Observation")
    assert post.headers["If-None-Exist"].endswith(req.write_uid)
    (patch,) = adapter.plan(write_request("demographics.updated", base_version="3"))
    assert patch.method == "PATCH" and patch.headers["If-Match"] == 'W/"3"'
    read, put = put_adapter.plan(write_request("demographics.updated", base_version="3"))
    assert (read.method, put.method) == ("GET", "PUT") and put.headers["If-Match"] == 'W/"3"'


def test_updates_without_a_version_or_expectation_are_refused(adapter):
    req = write_request("demographics.updated", base_version="3")
    req.base_version = ""
    assert "version it is based on" in adapter.preflight(req)
    result = adapter.write(req)
    assert result.outcome is Outcome.TERMINAL and not result.exchanges


@respx.mock
def test_an_exception_never_escapes(adapter, monkeypatch):
    respx.post(f"{BASE}/Observation").mock(return_value=recorded("generic", "observation_create_201"))
    monkeypatch.setattr("adapters.fhir_rest.classify", lambda *a, **k: 1 / 0)
    result = adapter.write(write_request("vitals.recorded", 1))
    # The POST left before the failure: the write may have landed.
    assert result.outcome is Outcome.AMBIGUOUS and "ZeroDivisionError" in result.message
    assert len(result.exchanges) == 1


@respx.mock
def test_read_accepts_a_history_path(adapter):
    respx.get(f"{BASE}/Patient/pat-1001/_history/3").mock(
        return_value=recorded("generic", "patient_read_200")
    )
    result = adapter.read("Patient", "pat-1001/_history/3")
    assert result.resource["id"] == "pat-1001" and result.version == "3"


@respx.mock
def test_current_for_finds_the_latest_of_that_code(adapter):
    req = write_request("vitals.recorded", 1)
    older = {
        "resourceType": "Observation",
        "id": "a",
        "effectiveDateTime": "2026-01-01T10:00:00Z",
        "code": req.resource["code"],
    }
    newer = {**older, "id": "b", "effectiveDateTime": "2026-02-01T10:00:00+01:00"}
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": older}, {"resource": newer}],
    }
    route = respx.get(f"{BASE}/Observation").mock(return_value=httpx.Response(200, json=bundle))
    current = adapter.current_for(req)
    assert current.resource["id"] == "b"
    assert route.calls[0].request.url.params["code"] == "http://loinc.org|8867-4"


@respx.mock
def test_discover_reads_the_capability_statement(adapter):
    respx.get(f"{BASE}/metadata").mock(return_value=recorded("generic", "metadata"))
    result = adapter.discover()
    allowed = {(c.resource_type, c.operation) for c in result.capabilities if c.allowed}
    assert result.ok and result.software == "HAPI FHIR Server 8.4.0" and result.fhir_version == "4.0.1"
    assert ("Observation", "conditional_create") in allowed and ("Task", "patch") not in allowed
    assert ("Task", "update") in allowed


@respx.mock
def test_discover_failures_are_results(adapter):
    respx.get(f"{BASE}/metadata").mock(return_value=httpx.Response(404))
    assert adapter.discover().ok is False
    respx.get(f"{BASE}/metadata").mock(return_value=httpx.Response(200, text="<html>"))
    assert "CapabilityStatement" in adapter.discover().error


@pytest.mark.parametrize(
    "vendor, trusted", [("generic", True), ("epic", False), ("athena", False), ("veradigm", False)]
)
def test_only_vendors_known_to_answer_faithfully_declare_the_answer_as_stored(vendor, trusted):
    from adapters.registry import adapter_class

    assert adapter_class(vendor).capabilities().answer_is_stored is trusted


@respx.mock
def test_a_create_answer_naming_another_resource_is_not_taken_as_stored(adapter):
    answer = recorded("generic", "observation_create_201")
    body = json.loads(answer.content)
    respx.post(f"{BASE}/Observation").mock(
        return_value=httpx.Response(201, headers=answer.headers, json={**body, "id": "someone-else"})
    )
    result = adapter.write(write_request("vitals.recorded", 1))
    assert result.outcome is Outcome.COMMITTED and result.resource_id == "1842"  # from Location
    assert result.stored is None and "not the one written" in result.stored_problem
