"""Our intended FHIR resources as Unity Magic actions (docs/wire-formats.md), with the FHIR form of what
Veradigm holds afterwards (read-back and the contract tests compare it with what its FHIR API serves).

Unity carries no FHIR identifier: the marker `[wb:<write uid>]` goes into each action's note parameter.
What an action cannot carry is a refusal (`problems()`), never silently dropped.
"""

from __future__ import annotations

import json
from typing import Any
from xml.etree.ElementTree import Element, SubElement, tostring

from adapters.base import WriteRequest
from adapters.compensation import document_text
from adapters.fhir_rest import first_coding, patient_id
from adapters.identifiers import with_marker
from adapters.veradigm.unity import UnityCall

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"


def _codes(concept: Any) -> set[str]:
    return {c.get("code", "") for c in (concept or {}).get("coding") or [] if isinstance(c, dict)}


def _note_text(resource: dict[str, Any]) -> str:
    return " ".join(str(n.get("text", "")) for n in resource.get("note") or [] if isinstance(n, dict)).strip()


def _subject(req: WriteRequest) -> dict[str, str]:
    return {"reference": f"Patient/{patient_id(req)}"}


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def problems(req: WriteRequest) -> str | None:
    resource = req.resource or {}
    rtype = req.resource_type
    if rtype == "Observation":
        if first_coding(resource).get("system") != LOINC:
            return "Unity SaveVitalsData takes LOINC-coded vitals"
        quantities = [c.get("valueQuantity") for c in resource.get("component") or []] or [
            resource.get("valueQuantity")
        ]
        if any(not isinstance(q, dict) or q.get("value") is None for q in quantities):
            return "Unity SaveVitalsData takes numeric readings"
    elif rtype == "Condition":
        if first_coding(resource).get("system") != SNOMED:
            return "Unity SaveProblemsData takes a SNOMED CT code"
    elif rtype in ("AllergyIntolerance", "MedicationStatement"):
        if first_coding(resource).get("system") != RXNORM:
            what = "allergens" if rtype == "AllergyIntolerance" else "medications"
            return f"Unity takes {what} by RxNorm code"
    elif rtype == "DocumentReference":
        if resource.get("relatesTo"):
            return "Unity SaveNote cannot replace an earlier note; amend it in Veradigm"
        if not document_text(resource):
            return "Unity SaveNote takes the note as text"
    return None


def vitals(req: WriteRequest) -> tuple[UnityCall, dict[str, Any]]:
    resource = req.resource or {}
    effective = str(resource.get("effectiveDateTime", ""))
    note = with_marker(_note_text(resource), req.write_uid)
    parts = [(first_coding(c, "code"), c.get("valueQuantity") or {}) for c in resource.get("component") or []]
    parts = parts or [(first_coding(resource), resource.get("valueQuantity") or {})]
    readings = [
        {
            "code": coding.get("code"),
            "value": _number(q.get("value")),
            "unit": q.get("code", ""),
            "effective": effective,
        }
        for coding, q in parts
    ]
    sent: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": first_coding(resource).get("code")}]},
        "subject": _subject(req),
        "effectiveDateTime": effective,
        "note": [{"text": note}],
    }
    quantities = [{"value": q.get("value"), "system": UCUM, "code": q.get("code")} for _, q in parts]
    if resource.get("component"):
        sent["component"] = [
            {"code": {"coding": [{"system": LOINC, "code": coding.get("code")}]}, "valueQuantity": quantity}
            for (coding, _), quantity in zip(parts, quantities, strict=True)
        ]
    else:
        sent["valueQuantity"] = quantities[0]
    params = {"Parameter1": json.dumps(readings), "Parameter2": note}
    return UnityCall("SaveVitalsData", patient_id(req), params), sent


def problem(req: WriteRequest) -> tuple[UnityCall, dict[str, Any]]:
    resource = req.resource or {}
    coding = first_coding(resource)
    status = next(iter(_codes(resource.get("clinicalStatus"))), "active")
    note = with_marker(_note_text(resource), req.write_uid)
    fields = {"code": coding["code"], "display": coding.get("display", ""), "status": status, "note": note}
    onset = str(resource.get("onsetDateTime") or "")[:10]
    if onset:
        fields["onset"] = onset
    root = Element("saveproblemsdatarequest")
    for name, value in fields.items():
        SubElement(root, "saveproblemsdata", fieldid=name, value1=value)
    sent: dict[str, Any] = {
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"code": status}]},
        "code": {"coding": [{"system": SNOMED, "code": coding["code"]}]},
        "subject": _subject(req),
        "note": [{"text": note}],
    }
    if onset:
        sent["onsetDateTime"] = onset
    params = {"Parameter1": tostring(root, encoding="unicode")}
    return UnityCall("SaveProblemsData", patient_id(req), params), sent


def _reaction_text(reaction: dict[str, Any]) -> str:
    names = []
    for manifestation in reaction.get("manifestation") or []:
        coding = next(iter(manifestation.get("coding") or []), {})
        names.append(coding.get("display") or manifestation.get("text") or coding.get("code", ""))
    text = ", ".join(n for n in names if n)
    # SaveAllergy has no severity parameter: it stays readable in the reaction text.
    return f"{text} ({reaction['severity']})" if reaction.get("severity") and text else text


def allergy(req: WriteRequest) -> tuple[UnityCall, dict[str, Any]]:
    resource = req.resource or {}
    coding = first_coding(resource)
    note = with_marker(_note_text(resource), req.write_uid)
    reaction = "; ".join(t for t in (_reaction_text(r) for r in resource.get("reaction") or []) if t)
    params = {
        "Parameter1": coding["code"],
        "Parameter2": coding.get("display", ""),
        "Parameter3": resource.get("criticality", ""),
        "Parameter4": reaction,
        "Parameter6": note,
    }
    sent: dict[str, Any] = {
        "resourceType": "AllergyIntolerance",
        "code": {"coding": [{"system": RXNORM, "code": coding["code"]}]},
        "patient": _subject(req),
        "note": [{"text": note}],
    }
    if resource.get("criticality"):
        sent["criticality"] = resource["criticality"]
    if reaction:
        sent["reaction"] = [{"manifestation": [{"text": reaction}]}]
    return UnityCall("SaveAllergy", patient_id(req), params), sent


def note(req: WriteRequest, note_type: str) -> tuple[UnityCall, dict[str, Any]]:
    resource = req.resource or {}
    title = str(resource.get("description") or "")
    marker_note = with_marker("", req.write_uid)
    params = {
        "Parameter1": note_type or first_coding(resource).get("code", ""),
        "Parameter2": title,
        "Parameter6": marker_note,
        "Data": document_text(resource),
    }
    sent = {
        "resourceType": "DocumentReference",
        "status": "current",
        "docStatus": "final",
        "subject": _subject(req),
        "description": marker_note,
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain",
                    "data": resource["content"][0]["attachment"]["data"],
                }
            }
        ],
    }
    return UnityCall("SaveNote", patient_id(req), params), sent


def prescription(req: WriteRequest) -> tuple[UnityCall, dict[str, Any]]:
    resource = req.resource or {}
    coding = first_coding(resource)
    note = with_marker(_note_text(resource), req.write_uid)
    sig = "; ".join(d.get("text", "") for d in resource.get("dosage") or [] if d.get("text"))
    params = {
        "Parameter1": coding["code"],
        "Parameter2": coding.get("display", ""),
        "Parameter3": sig,
        "Parameter4": resource.get("status", "active"),
        "Parameter6": note,
    }
    sent: dict[str, Any] = {
        "resourceType": "MedicationStatement",
        "status": resource.get("status", "active"),
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": coding["code"]}]},
        "subject": _subject(req),
        "note": [{"text": note}],
    }
    if sig:
        sent["dosage"] = [{"text": sig}]
    return UnityCall("SaveRX", patient_id(req), params), sent


def task_status(req: WriteRequest, task_id: str, status: str) -> UnityCall:
    return UnityCall("SaveTaskStatus", patient_id(req), {"Parameter1": task_id, "Parameter2": status})
