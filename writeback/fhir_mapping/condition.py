"""problem.confirmed -> a problem-list Condition."""

from typing import Any

from writeback.canonical import CanonicalEvent
from writeback.fhir_mapping.common import compact, concept, encounter, fhir_time, status_concept, subject

CLINICAL_STATUS = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION_STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"


def condition(event: CanonicalEvent) -> dict[str, Any]:
    data = event.data
    return compact(
        {
            "resourceType": "Condition",
            "clinicalStatus": status_concept(CLINICAL_STATUS, data.clinical_status),
            # The event says "confirmed"; a vendor adapter may downgrade where the EHR requires it.
            "verificationStatus": status_concept(VERIFICATION_STATUS, "confirmed", "Confirmed"),
            "category": [
                status_concept(CONDITION_CATEGORY, "problem-list-item", "Problem List Item"),
            ],
            "code": concept(data.code),
            "subject": subject(event),
            "encounter": encounter(event),
            "onsetDateTime": data.onset,
            "recordedDate": fhir_time(event.occurred_at),
            "note": [{"text": data.note}] if data.note else None,
        }
    )
