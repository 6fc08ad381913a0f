"""Every rule code of spec/events.md (and the other rules) answers 422 with its code and path."""

import pytest

from tests.writeback.helpers import consent_for, event
from writeback.models import BusinessEvent, Write

URL = "/api/v1/events"


def _vitals(*measurements, **data):
    return event("vitals.recorded", measurements=list(measurements), **data)


def _with(body, **envelope):
    body.update(envelope)
    return body


CASES = [
    (
        "systolic-below-diastolic",
        "data.measurements[0].systolic",
        _vitals({"kind": "blood_pressure", "systolic": 70, "diastolic": 90, "unit": "mmHg"}),
    ),
    (
        "value-out-of-range",
        "data.measurements[0].value",
        _vitals({"kind": "heart_rate", "value": 400, "unit": "bpm"}),
    ),
    (
        "future-timestamp",
        "data.effective_at",
        _vitals({"kind": "heart_rate", "value": 70, "unit": "bpm"}, effective_at="2999-01-01T00:00:00Z"),
    ),
    (
        "future-timestamp",
        "occurred_at",
        _with(event("problem.confirmed"), occurred_at="2999-01-01T00:00:00+00:00"),
    ),
    (
        "unknown-unit",
        "data.measurements[0].unit",
        _vitals({"kind": "heart_rate", "value": 70, "unit": "furlongs"}),
    ),
    (
        "conflicting-units",
        "data.measurements[0].unit",
        _vitals({"kind": "heart_rate", "value": 70, "unit": "kg"}),
    ),
    ("ambiguous-date", "data.onset", event("problem.confirmed", onset="03/04/2025")),
    (
        "missing-offset",
        "data.effective_at",
        _vitals({"kind": "heart_rate", "value": 70, "unit": "bpm"}, effective_at="2026-11-20T14:00:00"),
    ),
    ("malformed-device-id", "device.id", _with(event("vitals.recorded"), device={"id": "!!"})),
    (
        "invalid-code",
        "data.code.code",
        event("problem.confirmed", code={"system": "SNOMED", "code": "38341004", "display": "x"}),
    ),
    ("invalid-code", "data.type.code", event("note.signed", type={"system": "LOINC", "code": "11506-4"})),
    (
        "invalid-code",
        "data.substance.code",
        event("allergy.recorded", substance={"system": "RxNorm", "code": "79A0", "display": "x"}),
    ),
    (
        "invalid-code",
        "data.code.code",
        event("problem.confirmed", code={"system": "ICD-10-CM", "code": "XX", "display": "x"}),
    ),
    (
        "unknown-code-system",
        "data.code.system",
        event("problem.confirmed", code={"system": "MadeUp", "code": "1", "display": "x"}),
    ),
    (
        "duplicate-identifier",
        "data.measurements[1].kind",
        _vitals(
            {"kind": "heart_rate", "value": 70, "unit": "bpm"},
            {"kind": "heart_rate", "value": 71, "unit": "bpm"},
        ),
    ),
    (
        "missing-code",
        "data.medications[0].code",
        event(
            "medication.reconciled", medications=[{"status": "active", "action": "continue", "dosage": "x"}]
        ),
    ),
    (
        "encounter-closed",
        "encounter.status",
        _with(event("problem.confirmed"), encounter={"id": "enc-78", "status": "finished"}),
    ),
    ("field-not-writable", "data.birth_date", event("demographics.updated", birth_date="1970-01-01")),
    ("field-not-writable", "data.gender", event("demographics.updated", gender="female")),
    (
        "field-not-writable",
        "data.identifier",
        event("demographics.updated", identifier=[{"system": "urn:example:mrn", "value": "MRN2002"}]),
    ),
]


@pytest.fixture
def ready(api, tenant, clinician):
    consent_for(tenant)
    return api


@pytest.mark.parametrize(("rule", "path", "body"), CASES, ids=[f"{c[0]}@{c[1]}" for c in CASES])
def test_rule_answers_422_with_code_and_path(ready, rule, path, body):
    r = ready.post(URL, body, format="json")
    assert r.status_code == 422, r.json()
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    found = [
        (i["details"]["coding"][0]["code"], i["expression"][0] if i["expression"] else "")
        for i in outcome["issue"]
        if i["severity"] in ("error", "fatal")
    ]
    assert (rule, path) in found, found
    assert BusinessEvent.objects.count() == 0 and Write.objects.count() == 0


def test_operation_not_supported_for_the_vendor(api, db, clinician):
    from tests.conftest import api_client_for, make_client_app
    from writeback.services.tenants import tenant_create

    epic = tenant_create(slug="epic-main", vendor="epic", base_url="http://127.0.0.1:9/api/FHIR/R4")
    consent_for(epic)
    user = make_client_app("epic-app")
    client = api_client_for(user, epic)
    body = event("medication.reconciled", tenant="epic-main")
    del body["initiator"]
    r = client.post(URL, body, format="json")
    assert r.status_code == 422
    issue = r.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "operation-not-supported"
    assert issue["expression"] == ["data.medications[0]"]
    assert "MedicationStatement" in issue["diagnostics"]


def test_warnings_do_not_block(ready):
    r = ready.post(URL, _vitals({"kind": "heart_rate", "value": 185, "unit": "bpm"}), format="json")
    assert r.status_code == 201, r.json()
    assert [i["code"] for i in r.json()["issues"]] == ["value-unusual"]
