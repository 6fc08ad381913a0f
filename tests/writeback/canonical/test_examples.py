"""Every example of spec/events.md reads, passes the domain rules and maps to valid FHIR R4."""

import uuid

import pytest
from fhir.resources.R4B import get_fhir_model_class

from writeback.canonical import EVENT_TYPES, CanonicalEvent, canonicalize
from writeback.fhir_mapping import plan_writes
from writeback.validation.rules import check_domain

from .examples import DATA, IDENTIFIER_SYSTEM, NOW, envelope


def test_the_examples_cover_every_event_type():
    assert set(DATA) == set(EVENT_TYPES)
    assert len(EVENT_TYPES) == 8


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_example_reads_without_issues(event_type):
    result = canonicalize(envelope(event_type), now=NOW)
    assert result.status == 200
    assert result.issues == []
    assert result.event is not None
    assert check_domain(result.event, now=NOW) == []


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_example_round_trips_through_its_json_form(event_type):
    event = canonicalize(envelope(event_type)).event
    stored = event.to_json()
    assert CanonicalEvent.from_json(stored) == event
    assert CanonicalEvent.from_json(stored).to_json() == stored
    # Reading the canonical form as if it were a new event gives the same canonical form.
    assert canonicalize(stored).event.to_json() == stored


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_example_maps_to_valid_fhir(event_type):
    event = canonicalize(envelope(event_type)).event
    writes, issues = plan_writes(event, identifier_system=IDENTIFIER_SYSTEM)
    assert issues == []
    assert writes
    for write in writes:
        get_fhir_model_class(write.resource_type).model_validate(write.resource)
        assert write.resource["resourceType"] == write.resource_type
        if write.operation == "create":
            identifier = write.resource["identifier"]
            identifiers = identifier if isinstance(identifier, list) else [identifier]
            assert identifiers == [{"system": IDENTIFIER_SYSTEM, "value": str(write.uid)}]
            assert write.fields == [k for k in write.resource if k != "resourceType"]
    assert len({w.uid for w in writes}) == len(writes)


def test_canonical_vitals_example():
    data = canonicalize(envelope("vitals.recorded")).event.to_json()["data"]
    assert data["measurements"] == [
        {"kind": "blood_pressure", "systolic": 128, "diastolic": 82, "unit": "mm[Hg]"},
        {"kind": "heart_rate", "value": 72, "unit": "/min", "original_value": 72, "original_unit": "/min"},
        {
            "kind": "body_weight",
            "value": 81.65,
            "unit": "kg",
            "original_value": 180,
            "original_unit": "[lb_av]",
        },
        {
            "kind": "body_temperature",
            "value": 37.0,
            "unit": "Cel",
            "original_value": 98.6,
            "original_unit": "[degF]",
        },
        {
            "kind": "respiratory_rate",
            "value": 16,
            "unit": "/min",
            "original_value": 16,
            "original_unit": "/min",
        },
        {"kind": "oxygen_saturation", "value": 97, "unit": "%", "original_value": 97, "original_unit": "%"},
    ]
    assert data["effective_at"] == "2026-11-20T14:00:00-05:00"


def test_canonical_envelope_fields():
    event = canonicalize(envelope("problem.confirmed")).event
    stored = event.to_json()
    assert stored["type"] == "problem.confirmed"
    assert stored["tenant"] == "epic-main"
    assert stored["idempotency_key"] == "portal-2026-11-20-000123"
    assert stored["source"] == {"system": "intake-portal", "message_id": "msg-000123", "kind": "human"}
    assert stored["occurred_at"] == "2026-11-20T14:03:00-05:00"
    assert stored["patient"] == {
        "id": "pat-1001",
        "identifier": {"system": "urn:example:mrn", "value": "MRN1001"},
    }
    assert stored["encounter"] == {"id": "enc-77", "status": "in-progress"}
    assert stored["initiator"] == {"user": "amy.clinician"}
    assert stored["device"] == {"id": "bp-cuff-0042"}
    assert stored["data"]["code"] == {
        "system": "http://snomed.info/sct",
        "code": "38341003",
        "display": "Hypertensive disorder",
    }


def test_canonical_codes_of_the_other_examples():
    allergy = canonicalize(envelope("allergy.recorded")).event.data
    assert allergy.substance.system == "http://www.nlm.nih.gov/research/umls/rxnorm"
    assert allergy.reactions[0].manifestation.system == "http://snomed.info/sct"
    medication = canonicalize(envelope("medication.reconciled")).event.data
    assert medication.medications[0].code.system == "http://www.nlm.nih.gov/research/umls/rxnorm"
    note = canonicalize(envelope("note.signed")).event.data
    assert note.type.system == "http://loinc.org"
    demographics = canonicalize(envelope("demographics.updated")).event.data
    assert demographics.telecom[0].value == "+15550100"
    assert demographics.address[0].postal_code == "62701"


def test_uids_come_from_new_uid():
    fixed = [uuid.UUID(int=i) for i in range(1, 7)]
    event = canonicalize(envelope("vitals.recorded")).event
    writes, _ = plan_writes(event, identifier_system=IDENTIFIER_SYSTEM, new_uid=iter(fixed).__next__)
    assert [w.uid for w in writes] == fixed
    assert writes[2].resource["identifier"] == [{"system": IDENTIFIER_SYSTEM, "value": str(fixed[2])}]
