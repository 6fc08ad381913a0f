"""FHIR resources for chart items written through a proprietary API (athena v1, Veradigm Unity), so
they are readable through the profile's FHIR API. The note carrying the write marker is kept verbatim."""

from __future__ import annotations

import base64
from typing import Any

from .reference_data import (
    BP_PANEL,
    DIASTOLIC,
    LOINC,
    RXNORM,
    SNOMED,
    SYSTOLIC,
    UCUM,
    VITALS_BY_LOINC,
    VitalSign,
)
from .store import now_instant

Resource = dict[str, Any]
VITAL_SIGNS = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs",
            "display": "Vital Signs",
        }
    ]
}
PROBLEM_LIST = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/condition-category",
            "code": "problem-list-item",
            "display": "Problem List Item",
        }
    ]
}


def _concept(system: str, code: str, display: str = "") -> dict[str, Any]:
    coding = {"system": system, "code": code} | ({"display": display} if display else {})
    return {"coding": [coding]} | ({"text": display} if display else {})


def _status(system_suffix: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": f"http://terminology.hl7.org/CodeSystem/{system_suffix}", "code": code}]}


def _note(text: str) -> list[dict[str, str]]:
    return [{"text": text}] if text else []


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _with_note(resource: Resource, note: str) -> Resource:
    return resource | ({"note": _note(note)} if note else {})


def vital(patient_id: str, sign: VitalSign, value: float, effective: str, note: str) -> Resource:
    return _with_note(
        {
            "resourceType": "Observation",
            "status": "final",
            "category": [VITAL_SIGNS],
            "code": _concept(LOINC, sign.loinc, sign.display),
            "subject": {"reference": f"Patient/{patient_id}"},
            "effectiveDateTime": effective,
            "valueQuantity": _quantity(value, sign.unit),
        },
        note,
    )


def _component(loinc: str, value: float) -> dict[str, Any]:
    sign = VITALS_BY_LOINC[loinc]
    return {"code": _concept(LOINC, sign.loinc, sign.display), "valueQuantity": _quantity(value, sign.unit)}


def blood_pressure(patient_id: str, systolic: float, diastolic: float, effective: str, note: str) -> Resource:
    return _with_note(
        {
            "resourceType": "Observation",
            "status": "final",
            "category": [VITAL_SIGNS],
            "code": _concept(LOINC, BP_PANEL.loinc, BP_PANEL.display),
            "subject": {"reference": f"Patient/{patient_id}"},
            "effectiveDateTime": effective,
            "component": [_component(SYSTOLIC, systolic), _component(DIASTOLIC, diastolic)],
        },
        note,
    )


def problem(
    patient_id: str, snomed: str, display: str, clinical_status: str, onset: str, note: str
) -> Resource:
    resource = {
        "resourceType": "Condition",
        "clinicalStatus": _status("condition-clinical", clinical_status),
        "verificationStatus": _status("condition-ver-status", "confirmed"),
        "category": [PROBLEM_LIST],
        "code": _concept(SNOMED, snomed, display),
        "subject": {"reference": f"Patient/{patient_id}"},
        "recordedDate": now_instant(),
    }
    return _with_note(resource | ({"onsetDateTime": onset} if onset else {}), note)


def allergy(
    patient_id: str, code: dict[str, Any], criticality: str, reactions: list[dict[str, Any]], note: str
) -> Resource:
    resource = {
        "resourceType": "AllergyIntolerance",
        "clinicalStatus": _status("allergyintolerance-clinical", "active"),
        "verificationStatus": _status("allergyintolerance-verification", "confirmed"),
        "category": ["medication"],
        "code": code,
        "patient": {"reference": f"Patient/{patient_id}"},
        "recordedDate": now_instant(),
    }
    resource |= {"criticality": criticality} if criticality else {}
    resource |= {"reaction": reactions} if reactions else {}
    return _with_note(resource, note)


def reaction(name: str, snomed: str = "", severity: str = "") -> dict[str, Any]:
    manifestation = _concept(SNOMED, snomed, name) if snomed else {"text": name}
    return {"manifestation": [manifestation]} | ({"severity": severity} if severity else {})


def medication(
    patient_id: str, rxnorm: str, display: str, status: str, sig: str, started: str, note: str
) -> Resource:
    resource = {
        "resourceType": "MedicationStatement",
        "status": status,
        "medicationCodeableConcept": _concept(RXNORM, rxnorm, display),
        "subject": {"reference": f"Patient/{patient_id}"},
        "dateAsserted": now_instant(),
    }
    resource |= {"effectiveDateTime": started} if started else {}
    resource |= {"dosage": [{"text": sig}]} if sig else {}
    return _with_note(resource, note)


def clinical_note(
    patient_id: str, note_type: dict[str, Any], text: str, description: str, *, final: bool
) -> Resource:
    resource = {
        "resourceType": "DocumentReference",
        "status": "current",
        "docStatus": "final" if final else "preliminary",
        "type": note_type,
        "subject": {"reference": f"Patient/{patient_id}"},
        "date": now_instant(),
        "content": [
            {"attachment": {"contentType": "text/plain", "data": base64.b64encode(text.encode()).decode()}}
        ],
    }
    return resource | ({"description": description} if description else {})
