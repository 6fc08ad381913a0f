"""Epic adapter against recorded Epic-style responses (respx)."""

import json

import pytest
import respx

from adapters.base import Guarantee, Outcome
from adapters.epic.adapter import EpicAdapter
from tests.adapters.intended import write_request, write_requests
from tests.adapters.support import BASES, SYSTEM, UID, recorded, target

BASE = BASES["epic"]


@pytest.fixture
def adapter():
    a = EpicAdapter(target("epic"))
    yield a
    a.close()


def _sent(route):
    return json.loads(route.calls[-1].request.content)


@respx.mock
def test_vitals_are_created_with_one_coding_and_no_conditional_header(adapter):
    spo2 = write_request("vitals.recorded", 5)  # pulse oximetry carries two LOINC codings
    assert len(spo2.resource["code"]["coding"]) == 2
    route = respx.post(f"{BASE}/Observation").mock(return_value=recorded("epic", "observation_create_201"))
    result = adapter.write(spo2)
    sent, request = _sent(route), route.calls[0].request
    assert sent["code"]["coding"] == [spo2.resource["code"]["coding"][0]]
    assert sent["encounter"] == {"reference": "Encounter/enc-77"} and sent["status"] == "final"
    assert {"system": SYSTEM, "value": spo2.write_uid} in sent["identifier"]
    assert "If-None-Exist" not in request.headers and request.headers["Prefer"] == "return=representation"
    # Relative Location, no ETag: the id is known, the version is not.
    assert (result.outcome, result.resource_id, result.version) == (
        Outcome.COMMITTED,
        "eVx7ViqU4fIdW2rxXYpiWLw3",
        "",
    )
    assert result.guarantee is Guarantee.LEDGER and result.sent == sent


@respx.mock
def test_problems_go_in_provisional_and_allergies_unconfirmed(adapter):
    route = respx.post(f"{BASE}/Condition").mock(return_value=recorded("epic", "observation_create_201"))
    adapter.write(write_request("problem.confirmed"))
    assert _sent(route)["verificationStatus"]["coding"][0]["code"] == "provisional"
    route = respx.post(f"{BASE}/AllergyIntolerance").mock(
        return_value=recorded("epic", "observation_create_201")
    )
    adapter.write(write_request("allergy.recorded"))
    assert _sent(route)["verificationStatus"]["coding"][0]["code"] == "unconfirmed"


@respx.mock
def test_notes_carry_their_encounter(adapter):
    route = respx.post(f"{BASE}/DocumentReference").mock(
        return_value=recorded("epic", "observation_create_201")
    )
    adapter.write(write_request("note.signed"))
    sent = _sent(route)
    assert sent["context"]["encounter"] == [{"reference": "Encounter/enc-77"}]
    assert (sent["status"], sent["docStatus"], len(sent["content"])) == ("current", "final", 1)


@pytest.mark.parametrize(
    ("fixture", "words"),
    [
        ("observation_create_400_reading_exists", ["HTTP 400", "Reading already exists", "59189"]),
        ("condition_create_422_fatal_modifier", ["HTTP 422", "must be provisional", "59012"]),
        ("create_403_not_granted", ["HTTP 403", "no body"]),
    ],
)
@respx.mock
def test_epic_refusals_are_terminal_with_their_text(adapter, fixture, words):
    respx.post(f"{BASE}/Observation").mock(return_value=recorded("epic", fixture))
    result = adapter.write(write_request("vitals.recorded", 1))
    assert result.outcome is Outcome.TERMINAL
    for word in words:
        assert word in result.message


@pytest.mark.parametrize(
    ("event_type", "reason"),
    [
        ("medication.reconciled", "no MedicationStatement write API"),
        ("intake.completed", "questionnaire Epic itself assigned"),
        ("demographics.updated", "no Patient update API"),
        ("referral.status_changed", "Community Resource"),
    ],
)
@respx.mock
def test_unsupported_writes_are_refused_with_the_reason(adapter, event_type, reason):
    req = write_request(event_type)
    assert reason in adapter.refusal(req.resource_type, req.operation)
    result = adapter.write(req)
    assert result.outcome is Outcome.TERMINAL and reason in result.message and not result.exchanges
    assert adapter.plan(req) == []


@pytest.mark.parametrize(
    ("event_type", "change", "reason"),
    [
        ("vitals.recorded", {"encounter": None}, "existing open encounter"),
        ("note.signed", {"encounter": None}, "encounter"),
        ("problem.confirmed", {"clinical_status": "inactive"}, "active or resolved"),
        ("allergy.recorded", {"verification_status": "refuted"}, "refuted"),
    ],
)
def test_preflight_names_missing_context(adapter, event_type, change, reason):
    kwargs = {"encounter": None} if "encounter" in change else {k: v for k, v in change.items()}
    req = write_requests(event_type, **kwargs)[0]
    assert reason in adapter.preflight(req)


def test_amended_notes_are_refused(adapter):
    req = write_request("note.signed")
    req.resource["relatesTo"] = [{"code": "replaces", "target": {"reference": "DocumentReference/e1"}}]
    assert "cannot replace an earlier note" in adapter.preflight(req)


@respx.mock
def test_check_by_read_searches_by_patient_and_code(adapter):
    req = write_request("vitals.recorded", 1)
    req.write_uid = UID
    route = respx.get(f"{BASE}/Observation").mock(
        return_value=recorded("epic", "observation_search_patient_code")
    )
    found = adapter.find_by_identifier(req)
    params = route.calls[0].request.url.params
    assert params["patient"] == "pat-1001" and params["code"] == "http://loinc.org|8867-4"
    assert "identifier" not in params
    assert (found.found, found.resource_id) == (True, "eVx7ViqU4fIdW2rxXYpiWLw3")
    req.write_uid = "someone-else"
    assert adapter.find_by_identifier(req).found is False


@respx.mock
def test_a_reading_epic_kept_without_our_identifier_is_recognised(adapter):
    req = write_request("vitals.recorded", 1)
    stored = {**req.resource, "id": "eNoIdent", "identifier": []}
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": stored}]}
    respx.get(f"{BASE}/Observation").mock(
        return_value=recorded("epic", "observation_search_patient_code", body=bundle)
    )
    assert adapter.find_by_identifier(req).resource_id == "eNoIdent"


@pytest.mark.parametrize("kind", ["rollback", "correction"])
def test_corrections_are_exact_instructions_for_a_clinician(adapter, kind):
    req = write_request("vitals.recorded", 1)
    data = {
        "valueQuantity": {"value": 70, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}
    }
    plan = adapter.compensation(req, kind=kind, resource_id="eVx7", version="", data=data)
    assert plan.requests == [] and plan.manual.role == "clinician"
    text = plan.manual.instructions
    for part in (
        "In Epic",
        "pat-1001",
        "MRN1001",
        "Flowsheets",
        "Heart rate",
        "LOINC 8867-4",
        "2026-11-20 14:00",
        req.write_uid,
        "eVx7",
    ):
        assert part in text
    if kind == "correction":
        assert "= 70 /min" in text


def test_compensating_writes_are_refused(adapter):
    req = write_request("vitals.recorded", 1)
    req.operation = "compensate"
    assert "clinician corrects it in Epic" in adapter.preflight(req)


@respx.mock
def test_a_scan_that_cannot_read_every_page_cannot_tell(adapter):
    endless = {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [{"relation": "next", "url": f"{BASE}/Observation?patient=pat-1001&page=2"}],
        "entry": [],
    }
    respx.get(f"{BASE}/Observation").mock(
        return_value=recorded("epic", "observation_search_patient_code", body=endless)
    )
    found = adapter.find_by_identifier(write_request("vitals.recorded", 1))
    # "Not on the pages read" is not "not there": a resend could make a duplicate.
    assert found.found is None and found.outcome is Outcome.RETRYABLE and "pages" in found.message
