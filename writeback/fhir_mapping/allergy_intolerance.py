"""allergy.recorded -> an AllergyIntolerance."""

from typing import Any

from writeback.canonical import CanonicalEvent
from writeback.fhir_mapping.common import compact, concept, encounter, fhir_time, status_concept, subject

CLINICAL_STATUS = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
VERIFICATION_STATUS = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"


def allergy_intolerance(event: CanonicalEvent) -> dict[str, Any]:
    data = event.data
    # FHIR (ait-1, ait-2): a refuted or entered-in-error allergy carries no clinical status.
    clinical = None
    if data.verification_status not in ("refuted", "entered-in-error"):
        clinical = status_concept(CLINICAL_STATUS, "active", "Active")
    reactions = [
        compact({"manifestation": [concept(r.manifestation)], "severity": r.severity}) for r in data.reactions
    ]
    return compact(
        {
            "resourceType": "AllergyIntolerance",
            "clinicalStatus": clinical,
            "verificationStatus": status_concept(VERIFICATION_STATUS, data.verification_status),
            "criticality": data.criticality,
            "code": concept(data.substance),
            "patient": subject(event),
            "encounter": encounter(event),
            "recordedDate": fhir_time(event.occurred_at),
            "reaction": reactions,
            "note": [{"text": data.note}] if data.note else None,
        }
    )
