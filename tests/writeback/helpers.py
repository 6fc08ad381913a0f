"""Helpers for API tests: the spec's example events aimed at the test tenant, and consent."""

from typing import Any

from tests.writeback.canonical.examples import DATA, envelope
from writeback.services.consents import consent_create

EVENT_TYPES = list(DATA)

EXPECTED_WRITES = {
    "vitals.recorded": [("Observation", "create")] * 6,
    "intake.completed": [("QuestionnaireResponse", "create")],
    "note.signed": [("DocumentReference", "create")],
    "problem.confirmed": [("Condition", "create")],
    "demographics.updated": [("Patient", "patch")],
    "referral.status_changed": [("Task", "update")],
    "allergy.recorded": [("AllergyIntolerance", "create")],
    "medication.reconciled": [("MedicationStatement", "create")],
}


def event(
    event_type: str, tenant: str = "generic-main", key: str | None = None, **data: Any
) -> dict[str, Any]:
    body = envelope(event_type, **data)
    body["tenant"] = tenant
    body["idempotency_key"] = key or f"test-{event_type}"
    body["source"]["message_id"] = f"msg-{body['idempotency_key']}"
    return body


def consent_for(tenant, patient: str = "pat-1001", **kwargs):
    return consent_create(tenant=tenant, patient_ref=patient, actor=None, **kwargs)
