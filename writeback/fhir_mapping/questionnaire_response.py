"""intake.completed -> a completed QuestionnaireResponse."""

from typing import Any

from writeback.canonical import CanonicalEvent
from writeback.fhir_mapping.common import compact, encounter, fhir_time, subject


def answer(value: bool | int | float | str) -> dict[str, Any]:
    # bool first: in Python a bool is also an int.
    if isinstance(value, bool):
        return {"valueBoolean": value}
    if isinstance(value, int):
        return {"valueInteger": value}
    if isinstance(value, float):
        return {"valueDecimal": value}
    return {"valueString": value}


def questionnaire_response(event: CanonicalEvent) -> dict[str, Any]:
    data = event.data
    return compact(
        {
            "resourceType": "QuestionnaireResponse",
            "questionnaire": data.questionnaire,
            "status": "completed",
            "subject": subject(event),
            "encounter": encounter(event),
            "authored": fhir_time(data.authored or event.occurred_at),
            "item": [
                compact({"linkId": a.link_id, "text": a.text, "answer": [answer(a.value)]})
                for a in data.answers
            ],
        }
    )
