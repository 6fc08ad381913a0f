"""note.signed -> a DocumentReference holding the note; an amendment replaces the note it amends."""

import base64
from typing import Any

from writeback.canonical import CanonicalEvent
from writeback.fhir_mapping.common import compact, concept, encounter, fhir_time, status_concept, subject

US_CORE_DOC_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"


def document_reference(
    event: CanonicalEvent, *, identifier_system: str, amends_write_uid: str | None = None
) -> dict[str, Any]:
    data = event.data
    enc = encounter(event)
    attachment = compact(
        {
            "contentType": data.content_type,
            "data": base64.b64encode(data.text.encode("utf-8")).decode("ascii"),
            "title": data.title,
        }
    )
    relates_to = None
    if amends_write_uid:
        # The note we wrote before is found by our identifier on it, whatever id the EHR gave it.
        relates_to = [
            {
                "code": "replaces",
                "target": {"identifier": {"system": identifier_system, "value": amends_write_uid}},
            }
        ]
    return compact(
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "docStatus": "final",
            "type": concept(data.type),
            "category": [status_concept(US_CORE_DOC_CATEGORY, "clinical-note", "Clinical Note")],
            "subject": subject(event),
            "date": fhir_time(event.occurred_at),
            "description": data.title,
            "content": [{"attachment": attachment}],
            "context": {"encounter": [enc]} if enc else None,
            "relatesTo": relates_to,
        }
    )
