"""Intended FHIR R4 writes for the eight event types, produced by the project's own mapping
(`writeback.canonical.canonicalize` + `writeback.fhir_mapping.plan_writes`) from the spec's examples, so
adapter tests exercise exactly what the ledger will hand the adapters."""

from __future__ import annotations

import uuid
from typing import Any

from adapters.base import WriteRequest
from tests.writeback.canonical.examples import envelope
from writeback.canonical import canonicalize
from writeback.fhir_mapping import plan_writes

SYSTEM = "urn:fhir-writeback:write-id"
# The initiator's Practitioner, as intake puts it in each resource's author element.
AUTHOR = {"reference": "Practitioner/prac-amy", "display": "amy.clinician"}

EVENT_TYPES = (
    "vitals.recorded",
    "intake.completed",
    "note.signed",
    "problem.confirmed",
    "demographics.updated",
    "referral.status_changed",
    "allergy.recorded",
    "medication.reconciled",
)
RESOURCE_TYPE = {
    "vitals.recorded": "Observation",
    "intake.completed": "QuestionnaireResponse",
    "note.signed": "DocumentReference",
    "problem.confirmed": "Condition",
    "demographics.updated": "Patient",
    "referral.status_changed": "Task",
    "allergy.recorded": "AllergyIntolerance",
    "medication.reconciled": "MedicationStatement",
}
NOTE_TEXT = "Patient seen for follow-up of hypertension. BP controlled."
PRE_IMAGE = {
    "telecom": [{"system": "phone", "value": "+1 555 0199", "use": "home"}],
    "address": [{"line": ["9 Old Rd"], "city": "Springfield", "state": "IL", "postalCode": "62704"}],
}


def write_requests(
    event_type: str,
    *,
    patient: str = "pat-1001",
    encounter: str | None = "enc-77",
    base_version: str = "1",
    **data: Any,
) -> list[WriteRequest]:
    """Every write the event turns into, as the worker would hand them to an adapter."""
    defaults: dict[str, Any] = {}
    if event_type == "note.signed":
        defaults["text"] = NOTE_TEXT
    if event_type == "demographics.updated":
        defaults["base_version"] = base_version
    if event_type == "referral.status_changed":
        defaults["task_id"] = f"task-{patient.rsplit('-', 1)[-1]}"
    env = envelope(event_type, **{**defaults, **data})
    env["patient"]["id"] = patient
    env["patient"]["identifier"]["value"] = f"MRN{patient.rsplit('-', 1)[-1]}"
    if encounter:
        env["encounter"] = {"id": encounter, "status": "in-progress"}
    else:
        env.pop("encounter", None)
    result = canonicalize(env)
    assert result.ok, [i for i in result.issues if i.is_error]
    writes, issues = plan_writes(result.event, identifier_system=SYSTEM, author=AUTHOR)
    assert not issues, issues
    requests = []
    for w in writes:
        uid = str(w.uid)
        context = dict(w.context)
        if event_type == "demographics.updated":
            context["pre_image"] = PRE_IMAGE
        context["patient_identifier"] = env["patient"]["identifier"]
        requests.append(
            WriteRequest(
                write_uid=uid,
                resource_type=w.resource_type,
                operation=w.operation,
                resource=w.resource,
                correlation_id=f"corr-{uuid.uuid4().hex[:12]}",
                patient_ref=patient,
                encounter_ref=encounter or "",
                target_id=w.target_id,
                base_version=w.base_version,
                context=context,
            )
        )
    return requests


def write_request(event_type: str, index: int = 0, **kwargs: Any) -> WriteRequest:
    """One write of the event (vitals: the measurement at `index`, blood pressure first)."""
    return write_requests(event_type, **kwargs)[index]
