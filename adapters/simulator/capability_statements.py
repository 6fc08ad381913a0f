"""The CapabilityStatement each profile serves at `/metadata`.

Epic's and Veradigm's mirror what those vendors advertise (vendor-facts §1.1 and §3.1), including what
the simulator then refuses: discovery must be checked against the vendor's real behaviour.
"""

from __future__ import annotations

from typing import Any

from .resource_types import R4_RESOURCE_TYPES

SEARCH_PARAMS = {
    "_id": "token",
    "identifier": "token",
    "patient": "reference",
    "subject": "reference",
    "encounter": "reference",
    "code": "token",
    "category": "token",
    "status": "token",
}
CORE_READ_TYPES = (
    "AllergyIntolerance",
    "Condition",
    "DocumentReference",
    "Encounter",
    "MedicationRequest",
    "MedicationStatement",
    "Observation",
    "Patient",
    "Practitioner",
    "QuestionnaireResponse",
    "Task",
)


def _statement(
    *,
    software: str,
    version: str,
    base: str,
    resources: list[dict[str, Any]],
    publisher: str,
    system_interactions: tuple[str, ...] = (),
) -> dict[str, Any]:
    rest: dict[str, Any] = {"mode": "server", "resource": resources}
    if system_interactions:
        rest["interaction"] = [{"code": code} for code in system_interactions]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-24",
        "publisher": publisher,
        "kind": "instance",
        "software": {"name": software, "version": version},
        "implementation": {"description": f"{software} (EHR simulator)", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "patchFormat": ["application/json-patch+json"] if any(_has(r, "patch") for r in resources) else [],
        "rest": [rest],
    }


def _has(resource: dict[str, Any], code: str) -> bool:
    return any(i["code"] == code for i in resource["interaction"])


def _resource(
    resource_type: str,
    interactions: list[str],
    *,
    versioning: str = "versioned",
    conditional_create: bool = False,
    update_create: bool = False,
    conditional_update: bool = False,
    conditional_delete: str = "not-supported",
) -> dict[str, Any]:
    return {
        "type": resource_type,
        "interaction": [{"code": code} for code in interactions],
        "versioning": versioning,
        "readHistory": "vread" in interactions,
        "updateCreate": update_create,
        "conditionalCreate": conditional_create,
        "conditionalRead": "not-supported",
        "conditionalUpdate": conditional_update,
        "conditionalDelete": conditional_delete,
        "searchParam": [{"name": name, "type": kind} for name, kind in SEARCH_PARAMS.items()],
    }


def generic(base: str) -> dict[str, Any]:
    interactions = ["read", "vread", "search-type", "history-instance", "create", "update", "patch", "delete"]
    resources = [
        _resource(
            t,
            interactions,
            conditional_create=True,
            update_create=True,
            conditional_update=True,
            conditional_delete="single",
        )
        for t in sorted(R4_RESOURCE_TYPES)
    ]
    return _statement(
        software="Generic FHIR R4 server",
        version="1.0",
        base=base,
        resources=resources,
        publisher="fhir-writeback",
        system_interactions=("transaction", "batch"),
    )


EPIC_CREATE = {
    "AllergyIntolerance",
    "BodyStructure",
    "Communication",
    "ConceptMap",
    "Condition",
    "DocumentReference",
    "Observation",
    "Patient",
    "Procedure",
    "QuestionnaireResponse",
    "ServiceRequest",
}
EPIC_UPDATE = {
    "BodyStructure",
    "DiagnosticReport",
    "DocumentReference",
    "Observation",
    "Procedure",
    "ServiceRequest",
    "Task",
}


def epic(base: str) -> dict[str, Any]:
    resources = []
    for t in sorted(EPIC_CREATE | EPIC_UPDATE | set(CORE_READ_TYPES)):
        interactions = ["read", "search-type"]
        interactions += ["create"] if t in EPIC_CREATE else []
        interactions += ["update"] if t in EPIC_UPDATE else []
        resources.append(_resource(t, interactions))
    return _statement(software="Epic", version="May 2026", base=base, resources=resources, publisher="Epic")


ATHENA_READ = (
    *CORE_READ_TYPES,
    "CarePlan",
    "CareTeam",
    "Coverage",
    "Device",
    "DiagnosticReport",
    "FamilyMemberHistory",
    "Goal",
    "Immunization",
    "Location",
    "Medication",
    "Organization",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "ServiceRequest",
)


def athena(base: str) -> dict[str, Any]:
    resources = [
        _resource(t, ["read", "search-type", *(["create"] if t == "QuestionnaireResponse" else [])])
        for t in sorted(set(ATHENA_READ))
    ]
    return _statement(
        software="athenahealth FHIR R4",
        version="1.0",
        base=base,
        resources=resources,
        publisher="athenahealth",
    )


VERADIGM_WRITE_ADVERTISED = (
    "Condition",
    "AllergyIntolerance",
    "MedicationRequest",
    "Observation",
    "Immunization",
    "DocumentReference",
    "MedicationStatement",
    "MedicationAdministration",
    "ServiceRequest",
    "Questionnaire",
    "QuestionnaireResponse",
    "MedicationDispense",
)


def veradigm(base: str) -> dict[str, Any]:
    resources = []
    for t in sorted(set(VERADIGM_WRITE_ADVERTISED) | set(CORE_READ_TYPES)):
        interactions = ["read", "search-type"]
        interactions += ["create", "update"] if t in VERADIGM_WRITE_ADVERTISED else []
        resources.append(_resource(t, interactions, versioning="no-version"))
    return _statement(
        software="Veradigm FHIR", version="4.22.0.1", base=base, resources=resources, publisher="Veradigm"
    )
