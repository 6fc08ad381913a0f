"""epic: Epic on FHIR R4 as a backend client with the usual write APIs granted.

Creates only (vitals, problems, allergies, clinical notes, match-or-create patients), each with the
context and values Epic requires; no update, PATCH or DELETE; If-None-Exist ignored; no ETag on create;
a relative Location; empty bodies unless `Prefer: return=representation`. Errors carry Epic's numeric
codes in `issue.details.coding`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..capability_statements import EPIC_CREATE, EPIC_UPDATE
from ..capability_statements import epic as epic_statement
from ..messages import Request, Response
from ..outcomes import FhirError
from ..search import reference_id
from ..store import Filter, MultipleMatches, Resource, identifiers_of
from .base import Profile

EPIC_ERROR_SYSTEM = "urn:oid:1.2.840.114350.1.13.0.1.7.2.657369"
REQUIRED_MISSING = "59108"
REQUIRED_INVALID = "59111"
FATAL_MODIFIER = "59012"
READING_EXISTS = "59189"
# Searches Epic answers only within one patient's chart.
PATIENT_SCOPED = {
    "AllergyIntolerance",
    "Condition",
    "DocumentReference",
    "Encounter",
    "MedicationRequest",
    "MedicationStatement",
    "Observation",
    "QuestionnaireResponse",
    "Task",
}
CLOSED_ENCOUNTER = {"finished", "cancelled", "entered-in-error"}


def required(field: str, message: str) -> FhirError:
    return FhirError(400, message, issue="required", code=REQUIRED_MISSING, expression=[field])


def invalid(field: str, message: str) -> FhirError:
    return FhirError(400, message, issue="value", code=REQUIRED_INVALID, expression=[field])


def fatal_modifier(field: str, message: str) -> FhirError:
    return FhirError(422, message, issue="business-rule", code=FATAL_MODIFIER, expression=[field])


def codes(concept: Any) -> set[str]:
    concepts = concept if isinstance(concept, list) else [concept]
    return {
        c.get("code", "")
        for item in concepts
        if isinstance(item, dict)
        for c in item.get("coding") or []
        if isinstance(c, dict)
    }


def parse_instant(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class EpicProfile(Profile):
    name = "epic"
    fhir_base_path = "/api/FHIR/R4"
    error_code_system = EPIC_ERROR_SYSTEM
    etag_on_create = False
    absolute_location = False
    default_return = "minimal"
    keeps_history = False
    token_ignores_requested_scope = True  # the grant is the APIs registered on the client

    def __init__(self, sim) -> None:
        super().__init__(sim)
        self._creates: dict[str, Callable[[Resource], Resource]] = {
            "Observation": self._vital,
            "Condition": self._problem,
            "AllergyIntolerance": self._allergy,
            "DocumentReference": self._note,
            "Patient": self._patient,
        }
        # Write APIs Epic has but this client ID was not granted: Epic answers 403 with no body.
        self._not_granted = (EPIC_CREATE | EPIC_UPDATE | {"MedicationStatement"}) - set(self._creates)

    def capability_statement(self) -> dict[str, Any]:
        return epic_statement(self.fhir_base)

    def check_search(self, resource_type: str, query: dict[str, list[str]]) -> None:
        if "identifier" in query and resource_type != "Patient":
            raise FhirError(
                400,
                f"identifier is not a supported search parameter for {resource_type}; "
                "search by patient (and code) instead",
                issue="not-supported",
                expression=["identifier"],
            )
        if resource_type in PATIENT_SCOPED and not ({"patient", "subject"} & set(query)):
            raise FhirError(
                400,
                f"a {resource_type} search needs the patient parameter",
                issue="required",
                code=REQUIRED_MISSING,
                expression=["patient"],
            )

    # -- writes ------------------------------------------------------------------------------------
    def create(self, req: Request, resource_type: str) -> Response:
        create = self._creates.get(resource_type)
        if create is None:
            return self._refuse_write(resource_type, "create")
        resource = self.resource_body(req, resource_type)
        resource.pop("id", None)
        return self.write_response(req, create(resource), 201, location=True)

    def update(self, req: Request, resource_type: str, resource_id: str) -> Response:
        return self._refuse_write(resource_type, "update")

    def patch(self, req: Request, resource_type: str, resource_id: str) -> Response:
        return self._refuse_write(resource_type, "patch")

    def _refuse_write(self, resource_type: str, operation: str) -> Response:
        if resource_type in self._not_granted:
            return Response(403)
        return self.refuse(f"{operation} is not supported on {resource_type}")

    def _new(self, resource: Resource, where: Filter | None = None) -> tuple[Resource, bool]:
        resource_type = resource["resourceType"]
        new_id = self.store.new_id(resource_type, lambda n: f"e{n:07d}")
        return self.store.create(resource, resource_id=new_id, if_none_exist=where)

    def _patient_of(self, resource: Resource, field: str) -> str:
        reference = (resource.get(field) or {}).get("reference")
        if not reference:
            raise required(field, f"{field} is required (a reference to the Patient)")
        patient_id = reference_id(reference)
        if not reference.removeprefix(self.fhir_base + "/").startswith("Patient/") or not self.store.read(
            "Patient", patient_id
        ):
            raise invalid(field, f"{field} must reference an existing Patient; {reference!r} is not one")
        return patient_id

    def _encounter(self, reference: Any, patient_id: str, field: str, *, open_now: bool) -> None:
        if not isinstance(reference, dict) or not reference.get("reference"):
            raise required(field, f"{field} is required: Epic files this in an existing encounter")
        encounter_id = reference_id(reference["reference"])
        encounter = self.store.read("Encounter", encounter_id)
        if encounter is None:
            raise invalid(field, f"Encounter/{encounter_id} does not exist")
        if reference_id((encounter.get("subject") or {}).get("reference", "")) != patient_id:
            raise invalid(field, f"Encounter/{encounter_id} belongs to another patient")
        if not open_now:
            return
        if encounter.get("status") in CLOSED_ENCOUNTER:
            raise invalid(
                field, f"Encounter/{encounter_id} is {encounter['status']}; vitals need an open encounter"
            )
        start = parse_instant((encounter.get("period") or {}).get("start", ""))
        if start is not None and start > datetime.now(UTC):
            raise invalid(field, f"Encounter/{encounter_id} starts in the future")

    def _vital(self, resource: Resource) -> Resource:
        patient_id = self._patient_of(resource, "subject")
        if resource.get("status") != "final":
            raise invalid("status", "a vital sign must have status final")
        if "vital-signs" not in codes(resource.get("category")):
            raise invalid("category", "Observation.Create (Vitals) takes category vital-signs only")
        codings = (resource.get("code") or {}).get("coding") or []
        if len(codings) != 1 or not isinstance(codings[0], dict) or not codings[0].get("code"):
            raise invalid("code", "exactly one code.coding (LOINC, flowsheet ID or OID) is required")
        effective = parse_instant(resource.get("effectiveDateTime", ""))
        if effective is None:
            raise required("effectiveDateTime", "effectiveDateTime is required for a vital sign")
        self._encounter(resource.get("encounter"), patient_id, "encounter", open_now=True)
        coding = codings[0]

        def same_reading(stored: Resource) -> bool:
            stored_codings = (stored.get("code") or {}).get("coding") or [{}]
            return (
                reference_id((stored.get("subject") or {}).get("reference", "")) == patient_id
                and stored_codings[0].get("system") == coding.get("system")
                and stored_codings[0].get("code") == coding.get("code")
                and parse_instant(stored.get("effectiveDateTime", "")) == effective
            )

        stored, created = self._new(resource, Filter(same_reading))
        if not created:
            raise FhirError(
                400,
                "Reading already exists",
                issue="duplicate",
                code=READING_EXISTS,
                expression=["code/instant"],
            )
        return stored

    def _problem(self, resource: Resource) -> Resource:
        self._patient_of(resource, "subject")
        if codes(resource.get("verificationStatus")) != {"provisional"}:
            raise fatal_modifier("verificationStatus", "verificationStatus must be provisional")
        if resource.get("clinicalStatus") and not codes(resource["clinicalStatus"]) <= {"active", "resolved"}:
            raise fatal_modifier("clinicalStatus", "clinicalStatus must be active or resolved")
        if "problem-list-item" not in codes(resource.get("category")):
            raise invalid("category", "Condition.Create (Problems) takes category problem-list-item only")
        code = resource.get("code") or {}
        if not code.get("text") and not any(
            isinstance(c, dict) and c.get("display") for c in code.get("coding") or []
        ):
            raise required("code", "code.coding.display or code.text is required")
        notes = resource.get("note") or []
        if len(notes) > 1 or any(len(str(n.get("text", ""))) > 450 for n in notes if isinstance(n, dict)):
            raise invalid("note", "a problem takes one note of at most 450 characters")
        return self._new(resource)[0]

    def _allergy(self, resource: Resource) -> Resource:
        self._patient_of(resource, "patient")
        if resource.get("verificationStatus") and codes(resource["verificationStatus"]) != {"unconfirmed"}:
            raise fatal_modifier("verificationStatus", "verificationStatus must be omitted or unconfirmed")
        if resource.get("clinicalStatus") and codes(resource["clinicalStatus"]) != {"active"}:
            raise fatal_modifier("clinicalStatus", "clinicalStatus must be active")
        if not resource.get("code"):
            raise required("code", "code (the allergen) is required")
        return self._new(resource)[0]

    def _note(self, resource: Resource) -> Resource:
        patient_id = self._patient_of(resource, "subject")
        if resource.get("status") != "current":
            raise invalid("status", "a clinical note must have status current")
        encounters = (resource.get("context") or {}).get("encounter") or [None]
        self._encounter(encounters[0], patient_id, "context.encounter", open_now=False)
        content = resource.get("content") or []
        attachment = (
            content[0].get("attachment") if len(content) == 1 and isinstance(content[0], dict) else None
        )
        if (
            not isinstance(attachment, dict)
            or not str(attachment.get("contentType", "")).startswith("text/plain")
            or not attachment.get("data")
        ):
            raise invalid("content", "exactly one text/plain attachment with base64 data is required")
        return self._new(resource)[0]

    def _patient(self, resource: Resource) -> Resource:
        """Match-or-create: a patient whose identifier is already on file comes back as is."""
        identifiers = {(i.get("system"), i.get("value")) for i in identifiers_of(resource) if i.get("value")}

        def same_person(stored: Resource) -> bool:
            return any((i.get("system"), i.get("value")) in identifiers for i in identifiers_of(stored))

        if not identifiers:
            return self._new(resource)[0]
        where = Filter(same_person, frozenset(v for _, v in identifiers))
        try:
            return self._new(resource, where)[0]
        except MultipleMatches:
            return self.store.search("Patient", where)[0]
