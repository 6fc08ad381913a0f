"""Canonical events -> FHIR R4 resources: codes, categories, references, our identifier."""

import base64
import uuid

import pytest

from adapters.identifiers import our_identifier_value as identifier_of
from writeback.contract_defaults import DEFAULT_CONTRACT
from writeback.fhir_mapping import plan_writes

from .examples import IDENTIFIER_SYSTEM, envelope
from .helpers import canonical

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
WRITABLE = {row["resource_type"]: set(row["writable_fields"]) for row in DEFAULT_CONTRACT}


def plan(body, **kwargs):
    writes, issues = plan_writes(canonical(body), identifier_system=IDENTIFIER_SYSTEM, **kwargs)
    assert issues == []
    return writes


def codes(concept):
    return [(c["system"], c["code"]) for c in concept["coding"]]


class TestVitals:
    @pytest.fixture
    def writes(self):
        return plan(envelope("vitals.recorded"))

    def test_one_observation_per_measurement(self, writes):
        assert [w.resource_type for w in writes] == ["Observation"] * 6
        assert [w.operation for w in writes] == ["create"] * 6
        assert [w.path for w in writes] == [f"data.measurements[{i}]" for i in range(6)]

    def test_common_elements(self, writes):
        for w in writes:
            r = w.resource
            assert r["status"] == "final"
            assert codes(r["category"][0]) == [
                ("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs")
            ]
            assert r["subject"] == {"reference": "Patient/pat-1001"}
            assert r["encounter"] == {"reference": "Encounter/enc-77"}
            assert r["effectiveDateTime"] == "2026-11-20T14:00:00-05:00"
            assert r["device"] == {"display": "bp-cuff-0042"}
            assert r["identifier"] == [{"system": IDENTIFIER_SYSTEM, "value": str(w.uid)}]
            assert identifier_of(r, IDENTIFIER_SYSTEM) == str(w.uid)
            assert set(w.fields) <= WRITABLE["Observation"]

    def test_blood_pressure_panel(self, writes):
        r = writes[0].resource
        assert codes(r["code"]) == [(LOINC, "85354-9")]
        assert "valueQuantity" not in r
        systolic, diastolic = r["component"]
        assert codes(systolic["code"]) == [(LOINC, "8480-6")]
        assert systolic["valueQuantity"] == {"value": 128, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}
        assert codes(diastolic["code"]) == [(LOINC, "8462-4")]
        assert diastolic["valueQuantity"]["value"] == 82
        assert diastolic["valueQuantity"]["code"] == "mm[Hg]"

    @pytest.mark.parametrize(
        ("index", "loinc", "value", "ucum"),
        [
            (1, [(LOINC, "8867-4")], 72, "/min"),
            (2, [(LOINC, "29463-7")], 81.65, "kg"),
            (3, [(LOINC, "8310-5")], 37.0, "Cel"),
            (4, [(LOINC, "9279-1")], 16, "/min"),
            (5, [(LOINC, "59408-5"), (LOINC, "2708-6")], 97, "%"),
        ],
    )
    def test_single_value_vitals(self, writes, index, loinc, value, ucum):
        r = writes[index].resource
        assert codes(r["code"]) == loinc
        quantity = r["valueQuantity"]
        assert quantity["value"] == pytest.approx(value, abs=0.005)
        assert (quantity["system"], quantity["code"]) == (UCUM, ucum)

    def test_without_encounter_device_or_effective_time(self):
        body = envelope("vitals.recorded")
        del body["encounter"], body["device"], body["data"]["effective_at"]
        r = plan(body)[1].resource
        assert "encounter" not in r and "device" not in r
        assert r["effectiveDateTime"] == "2026-11-20T14:03:00-05:00"  # the event's occurred_at


def test_condition():
    (w,) = plan(envelope("problem.confirmed"))
    r = w.resource
    assert (w.resource_type, w.operation, w.path) == ("Condition", "create", "data")
    assert codes(r["category"][0]) == [
        ("http://terminology.hl7.org/CodeSystem/condition-category", "problem-list-item")
    ]
    assert codes(r["clinicalStatus"]) == [
        ("http://terminology.hl7.org/CodeSystem/condition-clinical", "active")
    ]
    assert codes(r["verificationStatus"]) == [
        ("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed")
    ]
    assert r["code"]["coding"] == [{"system": SNOMED, "code": "38341003", "display": "Hypertensive disorder"}]
    assert r["onsetDateTime"] == "2024-03-01"
    assert r["note"] == [{"text": "confirmed at visit"}]
    assert r["subject"] == {"reference": "Patient/pat-1001"}
    assert r["encounter"] == {"reference": "Encounter/enc-77"}
    assert r["identifier"] == [{"system": IDENTIFIER_SYSTEM, "value": str(w.uid)}]
    assert set(w.fields) <= WRITABLE["Condition"]


def test_allergy_intolerance():
    (w,) = plan(envelope("allergy.recorded"))
    r = w.resource
    assert w.resource_type == "AllergyIntolerance"
    assert codes(r["clinicalStatus"]) == [
        ("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active")
    ]
    assert codes(r["verificationStatus"]) == [
        ("http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "confirmed")
    ]
    assert r["criticality"] == "high"
    assert codes(r["code"]) == [(RXNORM, "7980")]
    assert r["patient"] == {"reference": "Patient/pat-1001"}
    assert r["reaction"] == [
        {
            "manifestation": [
                {"coding": [{"system": SNOMED, "code": "247472004", "display": "Hives"}], "text": "Hives"}
            ],
            "severity": "moderate",
        }
    ]
    assert r["identifier"] == [{"system": IDENTIFIER_SYSTEM, "value": str(w.uid)}]
    assert set(w.fields) <= WRITABLE["AllergyIntolerance"]


def test_refuted_allergy_has_no_clinical_status():
    (w,) = plan(envelope("allergy.recorded", verification_status="refuted"))
    assert "clinicalStatus" not in w.resource


def test_medication_statement_per_medication():
    meds = [
        {"code": {"system": "RxNorm", "code": "197361", "display": "amlodipine"}, "status": "active",
         "action": "continue", "dosage": "5 mg daily"},
        {"code": {"system": "RxNorm", "code": "7980"}, "status": "active", "action": "stop"},
    ]  # fmt: skip
    writes = plan(envelope("medication.reconciled", medications=meds))
    assert [w.path for w in writes] == ["data.medications[0]", "data.medications[1]"]
    first, second = (w.resource for w in writes)
    assert first["resourceType"] == "MedicationStatement"
    assert first["status"] == "active"
    assert codes(first["medicationCodeableConcept"]) == [(RXNORM, "197361")]
    assert first["subject"] == {"reference": "Patient/pat-1001"}
    assert first["context"] == {"reference": "Encounter/enc-77"}
    assert first["dosage"] == [{"text": "5 mg daily"}]
    assert first["effectiveDateTime"] == first["dateAsserted"] == "2026-11-20T14:03:00-05:00"
    assert second["status"] == "stopped"
    assert "dosage" not in second
    for w in writes:
        assert set(w.fields) <= WRITABLE["MedicationStatement"]


def test_document_reference():
    (w,) = plan(envelope("note.signed"))
    r = w.resource
    assert (r["status"], r["docStatus"]) == ("current", "final")
    assert codes(r["type"]) == [(LOINC, "11506-3")]
    assert codes(r["category"][0]) == [
        ("http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category", "clinical-note")
    ]
    assert r["subject"] == {"reference": "Patient/pat-1001"}
    assert r["date"] == "2026-11-20T14:03:00-05:00"
    attachment = r["content"][0]["attachment"]
    assert attachment["contentType"] == "text/plain"
    assert attachment["title"] == "Progress note"
    assert base64.b64decode(attachment["data"]).decode() == "Patient seen for ..."
    assert r["context"] == {"encounter": [{"reference": "Encounter/enc-77"}]}
    assert "relatesTo" not in r
    assert set(w.fields) <= WRITABLE["DocumentReference"]


def test_an_amending_note_replaces_the_earlier_write():
    earlier = str(uuid.uuid4())
    (w,) = plan(envelope("note.signed", amends="portal-note-1"), amends_write_uid=earlier)
    assert w.resource["relatesTo"] == [
        {"code": "replaces", "target": {"identifier": {"system": IDENTIFIER_SYSTEM, "value": earlier}}}
    ]
    assert "relatesTo" in w.fields


def test_note_text_is_base64_of_utf8():
    (w,) = plan(envelope("note.signed", text="Fièvre 39 °C — résolue"))
    assert (
        base64.b64decode(w.resource["content"][0]["attachment"]["data"]).decode("utf-8")
        == "Fièvre 39 °C — résolue"
    )


def test_questionnaire_response():
    answers = [
        {"link_id": "smoker", "text": "Do you smoke?", "value": False},
        {"link_id": "count", "value": 3},
        {"link_id": "height", "value": 1.72},
        {"link_id": "chief_complaint", "text": "Reason for visit", "value": "headache"},
    ]
    (w,) = plan(envelope("intake.completed", answers=answers))
    r = w.resource
    assert r["questionnaire"] == "urn:example:questionnaire:intake-v3"
    assert r["status"] == "completed"
    assert r["subject"] == {"reference": "Patient/pat-1001"}
    assert r["encounter"] == {"reference": "Encounter/enc-77"}
    assert r["authored"] == "2026-11-20T14:03:00-05:00"
    assert r["item"] == [
        {"linkId": "smoker", "text": "Do you smoke?", "answer": [{"valueBoolean": False}]},
        {"linkId": "count", "answer": [{"valueInteger": 3}]},
        {"linkId": "height", "answer": [{"valueDecimal": 1.72}]},
        {"linkId": "chief_complaint", "text": "Reason for visit", "answer": [{"valueString": "headache"}]},
    ]
    # QuestionnaireResponse.identifier is 0..1 in R4: a single Identifier, not a list.
    assert r["identifier"] == {"system": IDENTIFIER_SYSTEM, "value": str(w.uid)}
    assert identifier_of(r, IDENTIFIER_SYSTEM) == str(w.uid)
    assert set(w.fields) <= WRITABLE["QuestionnaireResponse"]


def test_patient_patch():
    (w,) = plan(envelope("demographics.updated"))
    assert (w.resource_type, w.operation, w.target_id, w.base_version) == (
        "Patient",
        "patch",
        "pat-1001",
        "3",
    )
    assert w.resource == {
        "resourceType": "Patient",
        "id": "pat-1001",
        "telecom": [{"system": "phone", "value": "+15550100", "use": "mobile"}],
        "address": [{"line": ["1 Main St"], "city": "Springfield", "state": "IL", "postalCode": "62701"}],
    }
    assert w.fields == ["telecom", "address"]
    assert set(w.fields) <= WRITABLE["Patient"]


def test_patient_patch_lists_ehr_owned_fields_for_the_contract():
    body = envelope(
        "demographics.updated",
        name=[{"family": "Doe", "given": ["Jane"]}],
        birth_date="1980-02-29",
        gender="female",
        identifier=[{"system": "urn:example:mrn", "value": "MRN1001"}],
    )
    (w,) = plan(body)
    assert w.fields == ["telecom", "address", "name", "birthDate", "gender", "identifier"]
    assert w.resource["name"] == [{"family": "Doe", "given": ["Jane"]}]
    assert w.resource["birthDate"] == "1980-02-29"
    assert w.resource["gender"] == "female"
    assert w.resource["identifier"] == [{"system": "urn:example:mrn", "value": "MRN1001"}]
    assert set(w.fields) - WRITABLE["Patient"] == {"name", "birthDate", "gender", "identifier"}


def test_task_update():
    (w,) = plan(envelope("referral.status_changed"))
    assert (w.resource_type, w.operation, w.target_id) == ("Task", "update", "task-88")
    assert w.resource == {"resourceType": "Task", "id": "task-88", "status": "accepted", "intent": "order"}
    assert w.context == {"from_status": "requested", "to_status": "accepted"}
    assert w.fields == ["status"]


def test_invalid_fhir_is_reported_not_raised():
    event = canonical(envelope("problem.confirmed"))
    # An event changed after validation (canonical input would never do this).
    event.data.onset = "2024-13-45"
    writes, issues = plan_writes(event, identifier_system=IDENTIFIER_SYSTEM)
    assert writes == []
    assert [(i.rule, i.path) for i in issues] == [("invalid-fhir", "data")]


def test_a_medication_without_code_is_invalid_fhir_at_its_path():
    body = envelope("medication.reconciled")
    del body["data"]["medications"][0]["code"]
    writes, issues = plan_writes(canonical(body), identifier_system=IDENTIFIER_SYSTEM)
    assert writes == []
    assert [(i.rule, i.path) for i in issues] == [("invalid-fhir", "data.medications[0]")]
