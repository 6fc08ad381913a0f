"""Epic on FHIR R4: creates only, through the workflow APIs Epic grants (vitals, problems, allergies,
clinical notes).

No update, PATCH or conditional create; no ETag on create (the version may be unknown, which is fine).
Duplicate protection is ours: the ledger, and check-by-read before any resend. Epic cannot search by
identifier, so check-by-read searches the patient's resources of that kind and looks for our identifier
in each. Corrections have no API path: they become exact instructions for a clinician.
"""

from __future__ import annotations

from typing import Any

from adapters import wire_losses
from adapters.base import (
    AdapterCapabilities,
    CompensationPlan,
    LookupResult,
    Outcome,
    PlannedRequest,
    WireLoss,
    WriteRequest,
    WriteResult,
)
from adapters.compensation import explained
from adapters.epic import translate
from adapters.fhir_changes import same_value
from adapters.fhir_rest import FhirRestAdapter, adapter_call, code_token_matches, same_instant
from adapters.identifiers import identifiers_of
from adapters.manual import manual_plan

CREATED = ("Observation", "Condition", "AllergyIntolerance", "DocumentReference")
NO_PATCH = "Epic offers no PATCH on any R4 resource"
# Where in Epic a person finds each kind of entry, and how it is undone there.
SCREENS = {
    "Observation": ("Flowsheets (Vitals)", "mark the reading as entered in error"),
    "Condition": (
        "Problem List",
        "reject it in the problem review queue if it is still waiting there, otherwise mark it as "
        "entered in error",
    ),
    "AllergyIntolerance": (
        "Allergies",
        "reject it in the allergy review queue if it is still waiting there, otherwise mark it as "
        "entered in error",
    ),
    "DocumentReference": ("Notes (Chart Review)", "retract the note (mark it as in error)"),
}


class EpicAdapter(FhirRestAdapter):
    vendor = "epic"

    @classmethod
    def wire_losses(cls) -> dict[str, tuple[WireLoss, ...]]:
        return wire_losses.EPIC

    @classmethod
    def capabilities(cls) -> AdapterCapabilities:
        writes = {(t, "create") for t in CREATED}
        return AdapterCapabilities(
            writes=frozenset(writes),
            fhir_written_types=frozenset(CREATED),
            conditional_create=False,
            if_match=False,
            patch=False,
            read_back=True,
            search_by_identifier=False,
            refusals={
                ("MedicationStatement", "create"): "Epic has no MedicationStatement write API",
                ("QuestionnaireResponse", "create"): (
                    "Epic only accepts answers to a questionnaire Epic itself assigned"
                ),
                ("Patient", "update"): "Epic offers no Patient update API (demographics change in Epic)",
                (
                    "Patient",
                    "patch",
                ): "Epic offers no PATCH and no Patient update API (demographics change in Epic)",
                ("Task", "update"): "Epic's Task update serves the Community Resource workflow only",
                ("Task", "patch"): NO_PATCH,
            },
        )

    def vendor_preflight(self, req: WriteRequest) -> str | None:
        if req.operation == "compensate":
            return "Epic offers no API to change an entry it holds; a clinician corrects it in Epic"
        return translate.problems(req)

    def plan(self, req: WriteRequest) -> list[PlannedRequest]:
        if self.preflight(req):
            return []
        spec = self.create_spec(req, translate.to_epic(req), conditional=False)
        spec.note = (
            "Epic ignores If-None-Exist: a resend after an unknown outcome is preceded by check-by-read"
        )
        return [self.planned(req, spec)]

    @adapter_call
    def write(self, req: WriteRequest) -> WriteResult:
        refusal = self.preflight(req)
        if refusal:
            return WriteResult(outcome=Outcome.TERMINAL, message=f"refused before sending: {refusal}")
        return self.fhir_create(req, translate.to_epic(req), conditional=False)

    @adapter_call
    def find_by_identifier(self, req: WriteRequest) -> LookupResult:
        return self.lookup_by_scan(req, self._matcher(req))

    def _matcher(self, req: WriteRequest):
        ours = self.identifier_matcher(req)
        if req.resource_type != "Observation":
            return ours
        system, intended = self.target.identifier_system, req.resource or {}

        def same_reading(res: dict[str, Any]) -> bool:
            # Epic keeps one reading per flowsheet row and instant ("Reading already exists"); a
            # reading with our code, instant and value but no identifier of ours is ours whose
            # identifier Epic did not keep.
            if any(i.get("system") == system for i in identifiers_of(res)):
                return False
            return (
                code_token_matches(res, intended)
                and same_instant(
                    str(res.get("effectiveDateTime", "")), str(intended.get("effectiveDateTime", ""))
                )
                and same_value(res.get("valueQuantity"), intended.get("valueQuantity"))
                and same_value(res.get("component"), intended.get("component"))
            )

        return lambda res: ours(res) or same_reading(res)

    @explained
    def compensation(
        self, req: WriteRequest, *, kind: str, resource_id: str, version: str, data: dict[str, Any] | None
    ) -> CompensationPlan:
        screen, how = SCREENS.get(req.resource_type, (req.resource_type, "mark it as entered in error"))
        return manual_plan(
            req,
            ehr="Epic",
            screen=screen,
            kind=kind,
            resource_id=resource_id,
            data=data,
            how=how,
            reason="no update, PATCH or delete on these APIs",
        )
