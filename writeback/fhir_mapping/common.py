"""Pieces every mapping uses: references, codeable concepts, our identifier, R4B validation."""

from datetime import datetime
from typing import Any

from adapters.validation import structure_problem
from writeback.canonical import CanonicalEvent
from writeback.canonical.coding import Coding
from writeback.canonical.dates import format_instant


def reference(resource_type: str, resource_id: str) -> dict[str, str]:
    return {"reference": f"{resource_type}/{resource_id}"}


def subject(event: CanonicalEvent) -> dict[str, str]:
    return reference("Patient", event.patient.id)


def encounter(event: CanonicalEvent) -> dict[str, str] | None:
    return reference("Encounter", event.encounter.id) if event.encounter else None


def coding(c: Coding) -> dict[str, str]:
    out = {"system": c.system, "code": c.code}
    if c.display:
        out["display"] = c.display
    return out


def concept(c: Coding) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [coding(c)]}
    if c.display:
        out["text"] = c.display
    return out


def status_concept(system: str, code: str, display: str = "") -> dict[str, Any]:
    """A CodeableConcept of one HL7 code; the display defaults to the code in words."""
    display = display or code.replace("-", " ").capitalize()
    return {"coding": [{"system": system, "code": code, "display": display}]}


def fhir_time(value: datetime) -> str:
    return format_instant(value)


def compact(resource: dict[str, Any]) -> dict[str, Any]:
    """Drop the elements we left empty: FHIR forbids nulls and empty arrays."""
    return {k: v for k, v in resource.items() if v is not None and v != [] and v != {}}


def validation_problem(resource: dict[str, Any]) -> str | None:
    """Why `resource` is not a valid FHIR R4 resource (fhir.resources R4B), or None."""
    return structure_problem(resource)
