"""medication.reconciled -> one MedicationStatement per medication.

Status: the reconciliation action decides where it implies one (stop -> stopped, hold -> on-hold);
continue, start and change keep the status sent (active when none was sent). See
`MedicationItem.statement_status`.
"""

from typing import Any

from writeback.canonical import CanonicalEvent
from writeback.canonical.medication import MedicationItem
from writeback.fhir_mapping.common import compact, concept, encounter, fhir_time, subject


def medication_statement(event: CanonicalEvent, item: MedicationItem) -> dict[str, Any]:
    asserted = fhir_time(event.occurred_at)
    return compact(
        {
            "resourceType": "MedicationStatement",
            "status": item.statement_status,
            "medicationCodeableConcept": concept(item.code) if item.code else None,
            "subject": subject(event),
            "context": encounter(event),
            "effectiveDateTime": asserted,
            "dateAsserted": asserted,
            "dosage": [{"text": item.dosage}] if item.dosage else None,
        }
    )
