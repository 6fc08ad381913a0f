"""The example events of spec/events.md, as envelopes; each call returns a fresh copy to mutate."""

import copy
from datetime import UTC, datetime
from typing import Any

# A little after the spec's occurred_at (2026-11-20T14:03:00-05:00 = 19:03Z).
NOW = datetime(2026, 11, 20, 19, 10, tzinfo=UTC)
IDENTIFIER_SYSTEM = "urn:fhir-writeback:write-id"

ENVELOPE: dict[str, Any] = {
    "tenant": "epic-main",
    "idempotency_key": "portal-2026-11-20-000123",
    "source": {"system": "intake-portal", "message_id": "msg-000123"},
    "occurred_at": "2026-11-20T14:03:00-05:00",
    "patient": {"id": "pat-1001", "identifier": {"system": "urn:example:mrn", "value": "MRN1001"}},
    "encounter": {"id": "enc-77", "status": "in-progress"},
    "initiator": {"user": "amy.clinician"},
    "device": {"id": "bp-cuff-0042"},
}

DATA: dict[str, dict[str, Any]] = {
    "vitals.recorded": {
        "effective_at": "2026-11-20T14:00:00-05:00",
        "measurements": [
            {"kind": "blood_pressure", "systolic": 128, "diastolic": 82, "unit": "mmHg"},
            {"kind": "heart_rate", "value": 72, "unit": "bpm"},
            {"kind": "body_weight", "value": 180, "unit": "lb"},
            {"kind": "body_temperature", "value": 98.6, "unit": "F"},
            {"kind": "respiratory_rate", "value": 16, "unit": "/min"},
            {"kind": "oxygen_saturation", "value": 97, "unit": "%"},
        ],
    },
    "problem.confirmed": {
        "code": {"system": "SNOMED", "code": "38341003", "display": "Hypertensive disorder"},
        "clinical_status": "active",
        "onset": "2024-03-01",
        "note": "confirmed at visit",
    },
    "allergy.recorded": {
        "substance": {"system": "RxNorm", "code": "7980", "display": "Penicillin G"},
        "criticality": "high",
        "verification_status": "confirmed",
        "reactions": [
            {
                "manifestation": {"system": "SNOMED", "code": "247472004", "display": "Hives"},
                "severity": "moderate",
            }
        ],
    },
    "medication.reconciled": {
        "medications": [
            {
                "code": {"system": "RxNorm", "code": "197361", "display": "amlodipine 5 MG Oral Tablet"},
                "status": "active",
                "action": "continue",
                "dosage": "5 mg by mouth once daily",
            }
        ]
    },
    "note.signed": {
        "title": "Progress note",
        "type": {"system": "LOINC", "code": "11506-3"},
        "content_type": "text/plain",
        "text": "Patient seen for ...",
        "amends": None,
    },
    "intake.completed": {
        "questionnaire": "urn:example:questionnaire:intake-v3",
        "answers": [
            {"link_id": "smoker", "text": "Do you smoke?", "value": False},
            {"link_id": "chief_complaint", "text": "Reason for visit", "value": "headache"},
        ],
    },
    "demographics.updated": {
        "base_version": "3",
        "telecom": [{"system": "phone", "value": "+1 555 0100", "use": "mobile"}],
        "address": [{"line": ["1 Main St"], "city": "Springfield", "state": "IL", "postal_code": "62701"}],
    },
    "referral.status_changed": {"task_id": "task-88", "from_status": "requested", "to_status": "accepted"},
}


def envelope(event_type: str, **data_changes: Any) -> dict[str, Any]:
    """The spec's envelope with the spec's data for `event_type`; keyword arguments replace data keys."""
    body = copy.deepcopy(ENVELOPE)
    body["type"] = event_type
    body["data"] = copy.deepcopy(DATA[event_type])
    body["data"].update(data_changes)
    return body
