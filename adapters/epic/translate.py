"""Our intended R4 resources, shaped the way Epic's write APIs accept them (vendor-facts §1.2).

- Observation.Create (Vitals): status final, category vital-signs, exactly one code.coding (the LOINC
  one), an existing open encounter;
- Condition.Create (Problems): verificationStatus provisional (confirmed is a fatal modifier, 59012),
  clinicalStatus active or resolved, category problem-list-item, code with a display, one note <= 450;
- AllergyIntolerance.Create: verificationStatus unconfirmed, clinicalStatus active;
- DocumentReference.Create (Clinical Notes): status current, docStatus final, context.encounter, one
  text/plain attachment.

Each check that fails is a refusal reason for `preflight()`; nothing is silently dropped or truncated.
"""

from __future__ import annotations

import copy
from typing import Any

from adapters.base import WriteRequest
from adapters.fhir_rest import encounter_id

LOINC = "http://loinc.org"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
PROBLEM_NOTE_MAX = 450
VITAL_NOTE_MAX = 254


def _codes(concept: Any) -> set[str]:
    concepts = concept if isinstance(concept, list) else [concept]
    return {
        c.get("code", "")
        for item in concepts
        if isinstance(item, dict)
        for c in item.get("coding") or []
        if isinstance(c, dict)
    }


def _notes_problem(resource: dict[str, Any], limit: int) -> str | None:
    notes = [n for n in resource.get("note") or [] if isinstance(n, dict)]
    if len(notes) > 1:
        return f"Epic takes one note here, this write has {len(notes)}"
    if notes and len(str(notes[0].get("text", ""))) > limit:
        return f"Epic takes a note of at most {limit} characters here"
    return None


def problems(req: WriteRequest) -> str | None:
    """Why Epic would refuse this create, or None."""
    resource = req.resource or {}
    rtype = req.resource_type
    if rtype == "Observation":
        if not encounter_id(req):
            return "Epic files vitals in an existing open encounter; this write names none"
        if not any(c.get("system") == LOINC for c in (resource.get("code") or {}).get("coding") or []):
            return "Epic's vitals API needs a LOINC code (or a flowsheet id mapped at the site)"
        return _notes_problem(resource, VITAL_NOTE_MAX)
    if rtype == "Condition":
        if not _codes(resource.get("clinicalStatus")) <= {"active", "resolved"}:
            return "Epic's problem API accepts clinical status active or resolved only"
        code = resource.get("code") or {}
        if not code.get("text") and not any(c.get("display") for c in code.get("coding") or []):
            return "Epic's problem API needs the problem's display text"
        return _notes_problem(resource, PROBLEM_NOTE_MAX)
    if rtype == "AllergyIntolerance":
        if _codes(resource.get("verificationStatus")) & {"refuted", "entered-in-error"}:
            return "Epic records new allergies as unconfirmed; a refuted allergy cannot be written"
        return None
    if rtype == "DocumentReference":
        if not encounter_id(req):
            return "Epic files clinical notes in an encounter; this write names none"
        if resource.get("relatesTo"):
            return "Epic's note API cannot replace an earlier note; amend it in Epic"
        content = resource.get("content") or []
        attachment = (content[0] or {}).get("attachment") or {} if len(content) == 1 else {}
        if not str(attachment.get("contentType", "")).startswith("text/plain") or not attachment.get("data"):
            return "Epic's note API takes exactly one text/plain attachment"
        return None
    return None


def to_epic(req: WriteRequest) -> dict[str, Any]:
    """The resource as Epic's API takes it (our identifier is stamped by the caller)."""
    resource = copy.deepcopy(req.resource or {})
    resource.pop("id", None)
    resource.pop("meta", None)
    rtype = req.resource_type
    enc = encounter_id(req)
    if rtype == "Observation":
        resource["status"] = "final"
        code = resource.get("code") or {}
        loinc = [c for c in code.get("coding") or [] if c.get("system") == LOINC]
        code["coding"] = loinc[:1]  # Epic: exactly one coding
        resource["code"] = code
        if enc:
            resource["encounter"] = {"reference": f"Encounter/{enc}"}
    elif rtype == "Condition":
        resource["verificationStatus"] = {
            "coding": [{"system": CONDITION_VERIFICATION, "code": "provisional", "display": "Provisional"}]
        }
    elif rtype == "AllergyIntolerance":
        resource["verificationStatus"] = {
            "coding": [{"system": ALLERGY_VERIFICATION, "code": "unconfirmed", "display": "Unconfirmed"}]
        }
    elif rtype == "DocumentReference":
        resource["status"] = "current"
        resource["docStatus"] = "final"
        context = resource.get("context") or {}
        if enc:
            context["encounter"] = [{"reference": f"Encounter/{enc}"}]
        resource["context"] = context
    return resource
