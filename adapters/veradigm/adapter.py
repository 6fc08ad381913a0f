"""Veradigm (Allscripts) EHR: FHIR R4 is read-only; writes go through the Unity API (`SaveVitalsData`,
`SaveProblemsData`, `SaveAllergy`, `SaveNote`, `SaveRX`, `SaveTaskStatus`), read back through FHIR.

Its `/metadata` advertises create and update on 12 types, but the FHIR API refuses every write:
discovery records that as discovered rows and never widens the manual capability registry.
No identifier, version or If-Match anywhere: duplicates are prevented by our ledger and check-by-read
(the `[wb:<uid>]` marker), and the Task status change is read-compare-write. Chart corrections have no
API path and become tasks for a clinician.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import httpx

from adapters import wire_losses
from adapters.base import (
    AdapterCapabilities,
    CompensationPlan,
    Guarantee,
    LookupResult,
    Outcome,
    PlannedRequest,
    TargetConfig,
    WireLoss,
    WriteRequest,
    WriteResult,
)
from adapters.classify import classify
from adapters.compensation import compensating_request, expected_values, explained, previous_status
from adapters.fhir_changes import differing
from adapters.fhir_rest import FhirRestAdapter, adapter_call, api_root, version_of
from adapters.identifiers import carries_marker
from adapters.manual import manual_plan
from adapters.veradigm import translate
from adapters.veradigm.unity import UnityCall, UnitySession, saved_ids

CREATED = ("Observation", "Condition", "AllergyIntolerance", "MedicationStatement", "DocumentReference")
SCREENS = {
    "Observation": ("Vitals", "mark the reading as entered in error"),
    "Condition": ("Problems", "mark the problem as entered in error"),
    "AllergyIntolerance": ("Allergies", "mark the allergy as entered in error"),
    "MedicationStatement": ("Medications", "mark the medication as entered in error"),
    "DocumentReference": ("Notes", "mark the note as entered in error"),
}
NO_DEMOGRAPHICS = (
    "Veradigm offers no versioned demographics update (its FHIR API is read-only and Unity has no "
    "checked patient update); change it in the EHR"
)
TRANSLATIONS: dict[str, Callable[[WriteRequest], tuple[UnityCall, dict[str, Any]]]] = {
    "Observation": translate.vitals,
    "Condition": translate.problem,
    "AllergyIntolerance": translate.allergy,
    "MedicationStatement": translate.prescription,
}


class VeradigmAdapter(FhirRestAdapter):
    vendor = "veradigm"

    def __init__(self, target: TargetConfig, *, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(target, transport=transport)
        self._unity: UnitySession | None = None

    @property
    def unity(self) -> UnitySession:
        if self._unity is None:
            self._unity = UnitySession(self.client, self.target)
        return self._unity

    def api_roots(self) -> tuple[str, ...]:
        return (api_root(self.target),)  # Unity (writes and its own token)

    def close(self) -> None:
        self._unity = None
        super().close()

    @classmethod
    def wire_losses(cls) -> dict[str, tuple[WireLoss, ...]]:
        return wire_losses.VERADIGM

    @classmethod
    def capabilities(cls) -> AdapterCapabilities:
        writes = {(t, "create") for t in CREATED} | {("Task", "update")}
        return AdapterCapabilities(
            writes=frozenset(writes),
            fhir_written_types=frozenset(),
            conditional_create=False,
            if_match=False,
            patch=False,
            read_back=True,
            search_by_identifier=False,
            refusals={
                ("Patient", "update"): NO_DEMOGRAPHICS,
                ("Patient", "patch"): NO_DEMOGRAPHICS,
                ("QuestionnaireResponse", "create"): (
                    "Veradigm's FHIR API is read-only and Unity has no intake action"
                ),
                ("Task", "patch"): "Veradigm offers no PATCH; Unity SaveTaskStatus is used instead",
            },
        )

    # -- checks and plans ------------------------------------------------------------------------------

    def vendor_preflight(self, req: WriteRequest) -> str | None:
        if req.operation == "compensate" and req.resource_type != "Task":
            return "Unity has no action to correct a chart item; a clinician corrects it in Veradigm"
        if req.resource_type == "Task":
            if not req.target_id:
                return "a Task status change needs the Task's id"
            if not (req.resource or {}).get("status"):
                return "a Task status change needs the new status"
            if not expected_values(req):
                return "Veradigm has no versions: a Task change needs the status it expects to replace"
            return None
        return translate.problems(req)

    def _call(self, req: WriteRequest) -> tuple[UnityCall, dict[str, Any]]:
        if req.resource_type == "DocumentReference":
            return translate.note(req, str(self.target.settings.get("unity_note_type") or ""))
        return TRANSLATIONS[req.resource_type](req)

    def plan(self, req: WriteRequest) -> list[PlannedRequest]:
        if self.preflight(req):
            return []
        session = [
            PlannedRequest("POST", f"{self.unity.root}/GetToken", note="once per Unity token"),
            PlannedRequest("POST", f"{self.unity.root}/GetUserAuthentication", note="once per Unity token"),
        ]
        if req.resource_type == "Task":
            read = self.client.read_spec("Task", req.target_id)
            read.note = "reads the Task: a status other than the expected one is a conflict"
            call = translate.task_status(req, req.target_id, req.resource["status"])
            return [*session, self.planned(req, read), self.planned(req, self.unity.spec(call))]
        call, _ = self._call(req)
        return [*session, self.planned(req, self.unity.spec(call))]

    # -- writing ---------------------------------------------------------------------------------------

    @adapter_call
    def write(self, req: WriteRequest) -> WriteResult:
        refusal = self.preflight(req)
        if refusal:
            return WriteResult(outcome=Outcome.TERMINAL, message=f"refused before sending: {refusal}")
        if req.resource_type == "Task":
            return self._task_status(req)
        call, sent = self._call(req)
        reply, cls = self.unity.magic(call, req.correlation_id)
        result = self.write_result(cls, sent=sent)
        result.stored = None  # the Unity answer is not the chart item; read-back goes through FHIR
        if result.outcome is Outcome.COMMITTED:
            ids = saved_ids(reply.body if reply is not None else None)
            result.resource_id = ids[0] if ids else ""
            if not ids:
                result.message = "Unity accepted the write without naming its id (read-back will tell)"
        return result

    def _task_status(self, req: WriteRequest) -> WriteResult:
        """Read-compare-write: Unity has no If-Match, so the Task is read just before the change and a
        status other than the one the write expects is a conflict."""
        reply = self.client.read("Task", req.target_id, correlation_id=req.correlation_id)
        read = classify(reply)
        if not read.committed or not reply.resource:
            return WriteResult(
                outcome=read.outcome if not read.committed else Outcome.TERMINAL,
                message=f"could not read Task/{req.target_id} before changing it: {read.message}",
                retry_after=read.retry_after,
                guarantee=Guarantee.READ_COMPARE_WRITE,
            )
        current = reply.resource
        changed = differing(current, expected_values(req) or {})
        if changed:
            return WriteResult(
                outcome=Outcome.CONFLICT,
                message=f"Task/{req.target_id} is {current.get('status')!r}, the write expected "
                f"{(expected_values(req) or {}).get('status')!r}",
                current=current,
                current_version=version_of(reply),
                guarantee=Guarantee.READ_COMPARE_WRITE,
            )
        status = req.resource["status"]
        _, cls = self.unity.magic(translate.task_status(req, req.target_id, status), req.correlation_id)
        sent = {"resourceType": "Task", "id": req.target_id, "status": status}
        result = self.write_result(cls, sent=sent, guarantee=Guarantee.READ_COMPARE_WRITE)
        result.stored = None
        if result.outcome is Outcome.COMMITTED:
            result.resource_id = req.target_id
        return result

    # -- check-by-read ---------------------------------------------------------------------------------

    @adapter_call
    def find_by_identifier(self, req: WriteRequest) -> LookupResult:
        if req.resource_type == "Task":
            # SaveTaskStatus carries the status alone (the owner is a declared wire loss): it landed if
            # the Task holds that status.
            status_only = {k: v for k, v in req.resource.items() if k not in ("owner",)}
            context = {**req.context, "fields": ["status"]} if req.context.get("fields") else req.context
            return self.lookup_applied(dataclasses.replace(req, resource=status_only, context=context))
        uid = req.write_uid
        return self.lookup_by_scan(req, lambda res: carries_marker(res, uid))

    # -- compensation ----------------------------------------------------------------------------------

    @explained
    def compensation(
        self, req: WriteRequest, *, kind: str, resource_id: str, version: str, data: dict[str, Any] | None
    ) -> CompensationPlan:
        if req.resource_type == "Task":
            status = (data or {}).get("status") if kind == "correction" else previous_status(req)
            if not status:
                raise ValueError("a Task compensation needs the status to set (from_status or data.status)")
            request = compensating_request(
                req,
                kind=kind,
                action="restore_previous_status" if kind == "rollback" else "corrected_values",
                method="update",
                resource={"resourceType": "Task", "id": resource_id, "status": status},
                target_id=resource_id,
                version=version,
                fields=["status"],
                expected={"status": (req.resource or {}).get("status")},
            )
            return CompensationPlan(
                requests=[request],
                description=f"Set Task/{resource_id} to {status!r} with Unity SaveTaskStatus, after checking "
                "its status is still the one we set (read-compare-write).",
            )
        screen, how = SCREENS.get(req.resource_type, (req.resource_type, "mark it as entered in error"))
        return manual_plan(
            req,
            ehr="Veradigm",
            screen=screen,
            kind=kind,
            resource_id=resource_id,
            data=data,
            how=how,
            reason="Unity saves chart items but has no action to retract them",
        )
