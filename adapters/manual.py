"""Corrections with no API path: exact instructions for a person working in the EHR's own screens.

The text names the chart (patient id and MRN where the ledger knows it), the screen, the entry (what,
which value, when) and what to do, and ends with our write's uid so the person can confirm the task
against the ledger.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from adapters.base import CompensationPlan, ManualInstructions, WriteRequest
from adapters.compensation import document_text
from adapters.fhir_rest import code_display, first_coding, patient_id, reference_id, when

SYSTEM_NAMES = {
    "http://loinc.org": "LOINC",
    "http://snomed.info/sct": "SNOMED CT",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
}


def patient_label(req: WriteRequest) -> str:
    label = f"patient {patient_id(req) or '(unknown)'}"
    ident = req.context.get("patient_identifier")
    if isinstance(ident, dict) and ident.get("value"):
        label += f" (MRN {ident['value']})"
    return label


def _code(resource: dict[str, Any]) -> str:
    coding = first_coding(resource)
    display = code_display(resource)
    if not coding:
        return display or "(no code)"
    system = SYSTEM_NAMES.get(coding.get("system", ""), coding.get("system", ""))
    return f"{display} ({system} {coding['code']})".strip()


def human_time(value: str) -> str:
    """'2026-11-20T14:00:00-05:00' -> '2026-11-20 14:00 (UTC-05:00)', as a person reads it on screen."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return value
    if len(value) <= 10:
        return value
    offset = moment.strftime("%z")
    zone = f"UTC{offset[:3]}:{offset[3:]}" if offset else "local time"
    return f"{moment:%Y-%m-%d %H:%M} ({zone})"


def _quantity(q: dict[str, Any] | None) -> str:
    if not isinstance(q, dict) or q.get("value") is None:
        return ""
    return f"{q['value']} {q.get('unit') or q.get('code') or ''}".strip()


def describe(resource: dict[str, Any]) -> str:
    """One line a clinician recognises the entry by."""
    rtype = resource.get("resourceType", "")
    at = human_time(when(resource))
    if rtype == "Observation":
        components = resource.get("component") or []
        if components:
            value = "/".join(_quantity(c.get("valueQuantity")).split(" ")[0] for c in components)
            unit = ((components[0].get("valueQuantity") or {}).get("unit")) or ""
            value = f"{value} {unit}".strip()
        else:
            value = _quantity(resource.get("valueQuantity"))
        return f"reading of {_code(resource)} = {value} taken {at}"
    if rtype == "Condition":
        onset = resource.get("onsetDateTime")
        return f"problem {_code(resource)}" + (f", onset {onset}" if onset else "")
    if rtype == "AllergyIntolerance":
        text = f"allergy to {_code(resource)}"
        return text + (f", criticality {resource['criticality']}" if resource.get("criticality") else "")
    if rtype == "MedicationStatement":
        dosage = "; ".join(d.get("text", "") for d in resource.get("dosage") or [] if d.get("text"))
        return f"medication {_code(resource)}" + (f", {dosage}" if dosage else "")
    if rtype == "DocumentReference":
        title = resource.get("description") or code_display(resource) or "note"
        return f"note '{title}' dated {human_time(resource['date']) if resource.get('date') else at}"
    if rtype == "QuestionnaireResponse":
        return f"questionnaire response to {resource.get('questionnaire', '(questionnaire)')} authored {at}"
    if rtype == "Task":
        return f"task {resource.get('id', '')} (status {resource.get('status', '?')})"
    if rtype == "Patient":
        return "demographics (phone numbers, address)"
    return f"{rtype} {resource.get('id', '')}".strip()


def _correction_summary(resource: dict[str, Any], data: dict[str, Any] | None) -> str:
    if not data:
        return ""
    if resource.get("resourceType") == "DocumentReference" and isinstance(data.get("text"), str):
        return f'the corrected note text: "{data["text"]}"'
    if resource.get("resourceType") == "DocumentReference" and data.get("content"):
        corrected = document_text({"content": data["content"]})
        if corrected:
            return f'the corrected note text: "{corrected}"'
    merged = {**resource, **{k: v for k, v in data.items() if k not in ("resourceType", "id")}}
    return f"the corrected entry: {describe(merged)}"


def manual_plan(
    req: WriteRequest,
    *,
    ehr: str,
    screen: str,
    kind: str,
    resource_id: str,
    data: dict[str, Any] | None,
    how: str = "mark it as entered in error",
    role: str = "clinician",
    reason: str = "",
) -> CompensationPlan:
    """A compensation done by a person in the EHR, described exactly."""
    resource = req.resource or {}
    entry = describe(resource)
    where = f"In {ehr}, open the chart of {patient_label(req)}, {screen}"
    ehr_id = f", {ehr} id {resource_id}" if resource_id else ""
    if kind == "correction":
        fix = _correction_summary(resource, data)
        action = f"enter {fix}; then {how} on the original {entry}" if fix else f"correct the {entry}"
        title = f"Correct in {ehr}: {entry}"
    else:
        action = f"find the {entry} and {how}"
        title = f"Undo in {ehr}: {entry}"
    why = f" ({reason})" if reason else ""
    instructions = f"{where}: {action}. Reference: write {req.write_uid}{ehr_id}."
    return CompensationPlan(
        manual=ManualInstructions(role=role, title=title, instructions=instructions),
        description=f"{ehr} offers no API to {'correct' if kind == 'correction' else 'undo'} this{why}: "
        f"a {role} does it in {ehr}.",
    )


def encounter_label(resource: dict[str, Any]) -> str:
    ref = (resource.get("encounter") or {}).get("reference") or ""
    if not ref:
        encounters = (resource.get("context") or {}).get("encounter") or []
        ref = (encounters[0] or {}).get("reference", "") if encounters else ""
    return reference_id(ref)
