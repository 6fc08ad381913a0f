"""Canonical events -> the FHIR R4 writes that carry them out.

Each planned write holds the resource we intend the EHR to hold (validated with fhir.resources R4B),
the operation, the elements it sets (for the contract's field check) and the event path it came
from. Vendor adapters translate these resources to their wire formats later.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from adapters.identifiers import stamp_identifier
from writeback.canonical import CanonicalEvent
from writeback.fhir_mapping.allergy_intolerance import allergy_intolerance
from writeback.fhir_mapping.authors import with_author
from writeback.fhir_mapping.common import validation_problem
from writeback.fhir_mapping.condition import condition
from writeback.fhir_mapping.document_reference import document_reference
from writeback.fhir_mapping.medication_statement import medication_statement
from writeback.fhir_mapping.observation import observation
from writeback.fhir_mapping.patient import patient_patch
from writeback.fhir_mapping.questionnaire_response import questionnaire_response
from writeback.fhir_mapping.task import task_update
from writeback.validation.outcome import Issue, error

__all__ = ["PlannedWrite", "plan_writes"]


@dataclass
class PlannedWrite:
    uid: uuid.UUID
    resource_type: str
    operation: str  # "create" | "update" | "patch"
    resource: dict[str, Any]  # the FHIR R4 resource (JSON), validated with fhir.resources R4B
    # Elements this write sets: top-level FHIR element names for creates; for a Patient patch the
    # demographics it touches ("telecom", "address", "name", "birthDate", "gender", "identifier").
    fields: list[str]
    path: str  # where in the event it came from, e.g. "data.measurements[2]"
    target_id: str = ""  # update/patch target (Patient id, Task id)
    base_version: str = ""  # update/patch If-Match version
    context: dict[str, Any] = field(default_factory=dict)  # e.g. referral {"from_status", "to_status"}


def plan_writes(
    event: CanonicalEvent,
    *,
    identifier_system: str,
    new_uid: Callable[[], uuid.UUID] = uuid.uuid4,
    amends_write_uid: str | None = None,
    author: dict[str, Any] | None = None,
) -> tuple[list[PlannedWrite], list[Issue]]:
    """The writes `event` turns into, and `invalid-fhir` issues for resources that failed validation.

    `author` (a Reference: the initiator's Practitioner, or the tenant's Organization) goes into each
    resource's author element (`fhir_mapping.authors`). A resource that fails validation is reported
    and left out of the plan, so it can never be queued.
    """
    planner = _Planner(event, identifier_system, new_uid, author)
    t = event.type
    if t == "vitals.recorded":
        for i, m in enumerate(event.data.measurements):
            planner.create(observation(event, m), f"data.measurements[{i}]")
    elif t == "medication.reconciled":
        for i, item in enumerate(event.data.medications):
            planner.create(medication_statement(event, item), f"data.medications[{i}]")
    elif t == "problem.confirmed":
        planner.create(condition(event), "data")
    elif t == "allergy.recorded":
        planner.create(allergy_intolerance(event), "data")
    elif t == "intake.completed":
        planner.create(questionnaire_response(event), "data")
    elif t == "note.signed":
        resource = document_reference(
            event, identifier_system=identifier_system, amends_write_uid=amends_write_uid
        )
        planner.create(resource, "data")
    elif t == "demographics.updated":
        resource, fields = patient_patch(event)
        planner.add(
            resource,
            "patch",
            fields,
            "data",
            target_id=event.patient.id,
            base_version=event.data.base_version,
        )
    elif t == "referral.status_changed":
        data = event.data
        planner.add(
            task_update(event),
            "update",
            ["status"],
            "data",
            target_id=data.task_id,
            context={"from_status": data.from_status, "to_status": data.to_status},
        )
    return planner.writes, planner.issues


class _Planner:
    def __init__(
        self,
        event: CanonicalEvent,
        identifier_system: str,
        new_uid: Callable[[], uuid.UUID],
        author: dict[str, Any] | None = None,
    ):
        self.event = event
        self.author = author
        self.identifier_system = identifier_system
        self.new_uid = new_uid
        self.writes: list[PlannedWrite] = []
        self.issues: list[Issue] = []

    def create(self, resource: dict[str, Any], path: str) -> None:
        uid = self.new_uid()
        resource = with_author(resource, self.author)
        resource = stamp_identifier(resource, self.identifier_system, str(uid))
        fields = [k for k in resource if k not in ("resourceType", "id")]
        self.add(resource, "create", fields, path, uid=uid)

    def add(
        self,
        resource: dict[str, Any],
        operation: str,
        fields: list[str],
        path: str,
        *,
        uid: uuid.UUID | None = None,
        **extra: Any,
    ) -> None:
        if operation != "create":
            # A create got its author before its fields were listed; an update names it here.
            authored = with_author(resource, self.author)
            fields = fields + [k for k in authored if k not in resource]
            resource = authored
        problem = validation_problem(resource)
        if problem:
            self.issues.append(
                error(
                    "invalid-fhir",
                    path,
                    f"the {resource['resourceType']} for {path} is not valid FHIR R4: {problem}",
                    code="invalid",
                )
            )
            return
        write = PlannedWrite(
            uid=uid or self.new_uid(),
            resource_type=resource["resourceType"],
            operation=operation,
            resource=resource,
            fields=fields,
            path=path,
            **extra,
        )
        self.writes.append(write)
