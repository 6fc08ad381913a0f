"""Readable clinical summaries of FHIR payloads, for people approving or checking a chart change.

"Amlodipine 5 MG Oral Tablet — continue — 5 mg by mouth once daily" says more to a clinician than the
MedicationStatement JSON. These read plain dicts only (no ORM, no I/O).
"""

from typing import Any

DASH = " — "


def _display(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and (coding.get("display") or coding.get("code")):
            return str(coding.get("display") or coding.get("code"))
    return ""


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def _status(concept: Any) -> str:
    return _display(concept) or ""


def _quantity(q: Any) -> str:
    if not isinstance(q, dict) or q.get("value") is None:
        return ""
    unit = q.get("unit") or q.get("code") or ""
    return (
        f"{q['value']:g} {unit}".strip()
        if isinstance(q["value"], int | float)
        else f"{q['value']} {unit}".strip()
    )


def clinical_summary(resource: dict[str, Any] | None, event_item: dict[str, Any] | None = None) -> str:
    """One line a clinician can read. `event_item` is the matching item of the canonical event (for a
    medication: its reconciliation action), when known."""
    if not isinstance(resource, dict):
        return ""
    rtype = resource.get("resourceType")
    parts: list[str] = []
    if rtype == "MedicationStatement":
        parts.append(_cap(_display(resource.get("medicationCodeableConcept")) or "Medication"))
        action = (event_item or {}).get("action")
        parts.append(action or resource.get("status", ""))
        dosage = [
            d.get("text") for d in resource.get("dosage") or [] if isinstance(d, dict) and d.get("text")
        ]
        parts.extend(dosage)
    elif rtype == "AllergyIntolerance":
        parts.append(_cap(_display(resource.get("code")) or "Allergy"))
        if resource.get("criticality"):
            parts.append(f"{resource['criticality']} criticality")
        reactions = []
        for reaction in resource.get("reaction") or []:
            names = [_display(m) for m in reaction.get("manifestation") or []]
            text = ", ".join(n for n in names if n)
            if reaction.get("severity"):
                text = f"{text} ({reaction['severity']})"
            reactions.append(text)
        if reactions:
            parts.append("reaction: " + "; ".join(reactions))
        parts.append(_status(resource.get("verificationStatus")))
    elif rtype == "Condition":
        parts.append(_cap(_display(resource.get("code")) or "Condition"))
        parts.append(_status(resource.get("clinicalStatus")))
        if resource.get("onsetDateTime"):
            parts.append(f"onset {resource['onsetDateTime']}")
    elif rtype == "Observation":
        name = _cap(_display(resource.get("code")) or "Observation")
        if resource.get("valueQuantity"):
            parts.append(f"{name}: {_quantity(resource['valueQuantity'])}")
        elif resource.get("component"):
            values = [
                f"{_display(c.get('code'))} {_quantity(c.get('valueQuantity'))}".strip()
                for c in resource["component"]
                if isinstance(c, dict)
            ]
            parts.append(f"{name}: " + ", ".join(values))
        else:
            parts.append(name)
        if resource.get("status") == "entered-in-error":
            parts.append("entered in error")
    elif rtype == "DocumentReference":
        title = _display(resource.get("type")) or "Document"
        for content in resource.get("content") or []:
            attachment = content.get("attachment") or {}
            if attachment.get("title"):
                title = attachment["title"]
        parts.append(_cap(title))
        parts.append(resource.get("docStatus") or resource.get("status") or "")
        if resource.get("relatesTo"):
            parts.append("replaces an earlier note")
    elif rtype == "Patient":
        changes = []
        for telecom in resource.get("telecom") or []:
            changes.append(f"{telecom.get('system', 'contact')} {telecom.get('value', '')}".strip())
        for address in resource.get("address") or []:
            line = ", ".join(address.get("line") or [])
            changes.append(", ".join(x for x in (line, address.get("city"), address.get("state")) if x))
        parts.append("Demographics: " + ("; ".join(changes) if changes else "no contact changes"))
    elif rtype == "Task":
        parts.append(f"Referral task status → {resource.get('status', '?')}")
    elif rtype == "QuestionnaireResponse":
        answers = len(resource.get("item") or [])
        parts.append(f"Questionnaire answers ({answers} item{'s' if answers != 1 else ''})")
        parts.append(resource.get("status", ""))
    else:
        parts.append(str(rtype or "Resource"))
    return DASH.join(p for p in parts if p)


def event_item_for(canonical: dict[str, Any] | None, position: int) -> dict[str, Any] | None:
    """The canonical event's item a write was made from (medications and measurements are lists)."""
    data = (canonical or {}).get("data") or {}
    for key in ("medications", "measurements"):
        items = data.get(key)
        if isinstance(items, list) and 0 <= position < len(items) and isinstance(items[position], dict):
            return items[position]
    return None
