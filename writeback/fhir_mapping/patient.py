"""demographics.updated -> a patch of the Patient: only the elements the event carried."""

from typing import Any

from writeback.canonical import CanonicalEvent
from writeback.canonical.demographics import FHIR_ELEMENTS, Address, HumanName


def _address(a: Address) -> dict[str, Any]:
    fields = {
        "use": a.use, "type": a.type, "text": a.text, "line": a.line, "city": a.city,
        "district": a.district, "state": a.state, "postalCode": a.postal_code, "country": a.country,
    }  # fmt: skip
    return {k: v for k, v in fields.items() if v is not None}


def _name(n: HumanName) -> dict[str, Any]:
    fields = {
        "use": n.use,
        "text": n.text,
        "family": n.family,
        "given": n.given,
        "prefix": n.prefix,
        "suffix": n.suffix,
    }
    return {k: v for k, v in fields.items() if v is not None}


def patient_patch(event: CanonicalEvent) -> tuple[dict[str, Any], list[str]]:
    """The Patient with the changed elements, and those elements' FHIR names (for the contract)."""
    data = event.data
    resource: dict[str, Any] = {"resourceType": "Patient", "id": event.patient.id}
    if data.telecom is not None:
        resource["telecom"] = [t.model_dump(exclude_none=True) for t in data.telecom]
    if data.address is not None:
        resource["address"] = [_address(a) for a in data.address]
    if data.name is not None:
        resource["name"] = [_name(n) for n in data.name]
    if data.birth_date is not None:
        resource["birthDate"] = data.birth_date
    if data.gender is not None:
        resource["gender"] = data.gender
    if data.identifier is not None:
        resource["identifier"] = [i.model_dump(exclude_none=True) for i in data.identifier]
    return resource, [FHIR_ELEMENTS[name] for name in data.touched()]
