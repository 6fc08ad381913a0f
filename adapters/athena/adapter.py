"""athenahealth (athenaOne): FHIR R4 for reads (and QuestionnaireResponse create); clinical writes through
the athenaOne v1 REST API (`adapters.athena.v1`), read back through FHIR as `a-{practiceid}.{Kind}-{id}`.

Neither API has conditional create or If-Match: duplicates are prevented by our ledger and check-by-read
(the `[wb:<uid>]` marker in the note; vitals by patient, code and reading time), and the demographics
update is read-compare-write (a version or value changed since the event's base is a conflict).
Chart corrections have no API path and become tasks for a clinician.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from adapters import wire_losses
from adapters.athena import v1
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
from adapters.classify import Classification, Dialect, classify
from adapters.compensation import compensating_request, expected_values, explained, pre_image
from adapters.fhir_changes import change_set, differing, same_value
from adapters.fhir_rest import (
    FhirRestAdapter,
    adapter_call,
    api_root,
    code_token_matches,
    first_coding,
    same_instant,
    version_of,
)
from adapters.http import HttpReply, RequestSpec
from adapters.identifiers import carries_marker
from adapters.manual import manual_plan

CHART_TYPES = ("Observation", "Condition", "AllergyIntolerance", "MedicationStatement", "DocumentReference")
DEMOGRAPHICS = ("telecom", "address")
SCREENS = {
    "Observation": ("Vitals", "mark the reading as entered in error"),
    "Condition": ("Problems", "mark the problem as entered in error"),
    "AllergyIntolerance": ("Allergies", "mark the allergy as entered in error"),
    "MedicationStatement": ("Medications", "mark the medication as entered in error"),
    "DocumentReference": ("Clinical documents", "delete the document as filed in error"),
    "QuestionnaireResponse": ("Questionnaires", "mark the questionnaire response as entered in error"),
}
NO_TASK = "athenaOne has no API to change a referral Task's status"
V1_SCOPE = "athena/service/Athenanet.MDP.*"


class AthenaAdapter(FhirRestAdapter):
    vendor = "athena"

    def __init__(self, target: TargetConfig, *, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(target, transport=transport)
        self.v1 = v1.V1(target)

    def api_roots(self) -> tuple[str, ...]:
        return (api_root(self.target),)  # athenaOne v1 (clinical writes)

    @classmethod
    def wire_losses(cls) -> dict[str, tuple[WireLoss, ...]]:
        return wire_losses.ATHENA

    @classmethod
    def capabilities(cls) -> AdapterCapabilities:
        creates = (*CHART_TYPES, "QuestionnaireResponse")
        writes = {(t, "create") for t in creates} | {("Patient", "update"), ("Patient", "patch")}
        return AdapterCapabilities(
            writes=frozenset(writes),
            fhir_written_types=frozenset({"QuestionnaireResponse"}),
            conditional_create=False,
            if_match=False,
            patch=False,
            read_back=True,
            search_by_identifier=False,
            refusals={("Task", "update"): NO_TASK, ("Task", "patch"): NO_TASK},
        )

    def extra_scopes(self) -> list[str]:
        """athena's v1 scope, only when the tenant enabled a write that goes through v1."""
        fhir_types = self.capabilities().fhir_written_types
        v1_writes = [
            t for t, op in self.target.enabled if t not in fhir_types and op not in ("read", "search")
        ]
        return [V1_SCOPE] if v1_writes else []

    def patient_search_params(self, req: WriteRequest) -> dict[str, str] | None:
        params = super().patient_search_params(req)
        if params is not None and self.v1.practice_id:
            # athena's FHIR searches are scoped to a practice.
            params["ah-practice"] = f"Organization/a-1.Practice-{self.v1.practice_id}"
        return params

    # -- checks and plans ------------------------------------------------------------------------------

    def vendor_preflight(self, req: WriteRequest) -> str | None:
        if req.operation == "compensate" and req.resource_type != "Patient":
            return "athenaOne has no API to change a chart item; a clinician corrects it in athenaOne"
        if req.resource_type == "QuestionnaireResponse":
            return None
        if req.resource_type == "Patient" and not req.target_id:
            return "a demographics update needs the patient's id"
        return v1.problems(req, self.v1)

    def plan(self, req: WriteRequest) -> list[PlannedRequest]:
        if self.preflight(req):
            return []
        rtype = req.resource_type
        if rtype == "QuestionnaireResponse":
            return [self.planned(req, self.create_spec(req, req.resource, conditional=False))]
        specs: list[RequestSpec] = []
        if rtype == "Patient":
            read = self.client.read_spec("Patient", req.target_id)
            read.note = "reads the chart first: a version or value changed since the event is a conflict"
            call = v1.demographics(req, self.v1, change_set(req), {"id": req.target_id})
            specs = [read, call.spec]
        elif rtype == "Observation":
            specs = [v1.vitals(req, self.v1).spec]
        elif rtype == "Condition":
            specs = [v1.problem(req, self.v1).spec]
        elif rtype == "DocumentReference":
            specs = [v1.clinical_document(req, self.v1).spec]
        elif rtype == "MedicationStatement":
            lookup = v1.medication_lookup(self.v1, req.resource)
            lookup.note = "finds athena's medicationid for the RxNorm code"
            specs = [lookup, v1.medication(req, self.v1, "<medicationid from the lookup>").spec]
        elif rtype == "AllergyIntolerance":
            check = self.client.search_spec("AllergyIntolerance", self.patient_search_params(req) or {})
            check.note = "an allergen already on the chart is refused: athena's PUT would merge into it"
            lookup = v1.allergen_lookup(self.v1, req.resource)
            lookup.note = "finds athena's allergenid for the RxNorm code"
            specs = [check, lookup, v1.allergy(req, self.v1, "<allergenid from the lookup>").spec]
        return [self.planned(req, spec) for spec in specs]

    # -- writing ---------------------------------------------------------------------------------------

    @adapter_call
    def write(self, req: WriteRequest) -> WriteResult:
        refusal = self.preflight(req)
        if refusal:
            return WriteResult(outcome=Outcome.TERMINAL, message=f"refused before sending: {refusal}")
        rtype = req.resource_type
        if rtype == "QuestionnaireResponse":
            return self.fhir_create(req, req.resource, conditional=False)
        if rtype == "Patient":
            return self._demographics(req)
        if rtype == "Observation":
            return self._send(req, v1.vitals(req, self.v1))
        if rtype == "Condition":
            return self._send(req, v1.problem(req, self.v1))
        if rtype == "DocumentReference":
            return self._send(req, v1.clinical_document(req, self.v1))
        if rtype == "MedicationStatement":
            medicationid, failure = self._reference_id(
                req, v1.medication_lookup(self.v1, req.resource), "medicationid", "medication"
            )
            return failure or self._send(req, v1.medication(req, self.v1, medicationid))
        if rtype == "AllergyIntolerance":
            return self._allergy(req)
        return WriteResult(outcome=Outcome.TERMINAL, message=f"athena adapter does not write {rtype}")

    def _send(self, req: WriteRequest, call: v1.V1Write) -> WriteResult:
        reply = self.client.send(call.spec, correlation_id=req.correlation_id)
        cls = classify(reply, Dialect.ATHENA_V1)
        result = self.write_result(cls, sent=call.sent)
        result.stored = None  # the v1 answer is not the chart item; read-back goes through FHIR
        if result.outcome is not Outcome.COMMITTED:
            return result
        number = self._new_id(reply, call.id_key)
        if number:
            result.resource_id = self.v1.fhir_id(call.kind, number)
        else:
            self._locate(req, result)
        return result

    @staticmethod
    def _new_id(reply: HttpReply, key: str) -> str:
        value = reply.body.get(key) if key and isinstance(reply.body, dict) else None
        if isinstance(value, list):
            value = value[0] if value else None
        return str(value) if value not in (None, "") else ""

    def _locate(self, req: WriteRequest, result: WriteResult) -> None:
        """Finds the FHIR id of an item athena's answer did not name (allergies), by our marker."""
        found = self.lookup_by_scan(req, lambda res: carries_marker(res, req.write_uid))
        if found.found:
            result.resource_id, result.version = found.resource_id, found.version
        else:
            result.message = "athena accepted the write; its FHIR id is not known yet (read-back will tell)"

    def _reference_id(
        self, req: WriteRequest, lookup: RequestSpec, id_key: str, what: str
    ) -> tuple[str, WriteResult | None]:
        """athena's own id for an RxNorm code (allergen, medication), from its reference lookup."""
        coding = first_coding(req.resource)
        reply = self.client.send(lookup, correlation_id=req.correlation_id)
        cls = classify(reply, Dialect.ATHENA_V1)
        if not cls.committed:
            return "", WriteResult(
                outcome=cls.outcome,
                message=f"{what} lookup failed: {cls.message}",
                retry_after=cls.retry_after,
            )
        entries = [e for e in reply.body if isinstance(e, dict)] if isinstance(reply.body, list) else []
        exact = [e for e in entries if str(e.get("rxnorm", "")) == coding.get("code")]
        named = [
            e
            for e in entries
            if str(e.get(f"{what}name") or e.get(what) or "").lower()
            == str(coding.get("display", "")).lower()
        ]
        # The lookup was by RxNorm code: without an rxnorm field, a single answer is the match.
        candidates = exact or named or (entries if len(entries) == 1 and "rxnorm" not in entries[0] else [])
        if len(candidates) != 1 or not candidates[0].get(id_key):
            found = "no" if not candidates else f"{len(candidates)}"
            return "", WriteResult(
                outcome=Outcome.TERMINAL,
                message=f"athena's {what} list has {found} match for RxNorm {coding.get('code')} "
                f"({coding.get('display', '')}); map it in athenaOne first",
            )
        return str(candidates[0][id_key]), None

    def _allergy(self, req: WriteRequest) -> WriteResult:
        rxnorm = first_coding(req.resource).get("code")
        chart = self.client.search_all(
            "AllergyIntolerance", self.patient_search_params(req) or {}, correlation_id=req.correlation_id
        )
        on_chart = chart.resources
        failed = next((c for c in (classify(r) for r in chart.replies) if not c.committed), None)
        if failed is None and not chart.complete:
            failed = Classification(Outcome.RETRYABLE, "more allergies on the chart than pages read")
        if failed is not None:
            return WriteResult(
                outcome=failed.outcome, message=f"could not read the chart's allergies: {failed.message}"
            )
        same = [r for r in on_chart if code_token_matches(r, req.resource) or rxnorm in _codes_of(r)]
        ours = [r for r in same if carries_marker(r, req.write_uid)]
        if ours:
            return WriteResult(
                outcome=Outcome.COMMITTED,
                resource_id=str(ours[0].get("id", "")),
                version=str((ours[0].get("meta") or {}).get("versionId") or ""),
                message="already on the chart (found by its marker)",
                stored=ours[0],
            )
        if same:
            return WriteResult(
                outcome=Outcome.TERMINAL,
                message=f"the chart already lists this allergen ({same[0].get('id')}); athena's allergy PUT "
                "would merge into that entry, so reconcile it in athenaOne",
            )
        allergenid, failure = self._reference_id(
            req, v1.allergen_lookup(self.v1, req.resource), "allergenid", "allergen"
        )
        return failure or self._send(req, v1.allergy(req, self.v1, allergenid))

    def _demographics(self, req: WriteRequest) -> WriteResult:
        """Read-compare-write: athena has no If-Match, so the chart is read just before the PUT and any
        change since the write's base (version, or the values it expects to replace) is a conflict."""
        pid = req.target_id
        reply = self.client.read("Patient", pid, correlation_id=req.correlation_id)
        read = classify(reply)
        if not read.committed or not reply.resource:
            return WriteResult(
                outcome=read.outcome if not read.committed else Outcome.TERMINAL,
                message=f"could not read Patient/{pid} before updating: {read.message}",
                retry_after=read.retry_after,
                guarantee=Guarantee.READ_COMPARE_WRITE,
            )
        current, version = reply.resource, version_of(reply)
        conflict = self._changed_since_base(req, current, version)
        if conflict:
            return WriteResult(
                outcome=Outcome.CONFLICT,
                message=conflict,
                current=current,
                current_version=version,
                guarantee=Guarantee.READ_COMPARE_WRITE,
            )
        values = change_set(req)
        if req.context.get("restore_from_version"):
            values, failure = self._values_at(req, str(req.context["restore_from_version"]))
            if failure is not None:
                return failure
        if req.operation == "compensate":
            stuck = v1.cannot_clear(current, values)
            if stuck:
                return WriteResult(
                    outcome=Outcome.TERMINAL,
                    message=f"athena v1 cannot remove the {', '.join(stuck)} phone number; restore it in "
                    "athenaOne by hand",
                    guarantee=Guarantee.READ_COMPARE_WRITE,
                )
        problem = v1.demographics_problem(values)
        if problem:
            return WriteResult(outcome=Outcome.TERMINAL, message=f"refused before sending: {problem}")
        call = v1.demographics(req, self.v1, values, current)
        cls = classify(self.client.send(call.spec, correlation_id=req.correlation_id), Dialect.ATHENA_V1)
        result = self.write_result(cls, sent=call.sent, guarantee=Guarantee.READ_COMPARE_WRITE)
        result.stored = None
        if result.outcome is Outcome.COMMITTED:
            result.resource_id = pid
            after = self.client.read("Patient", pid, correlation_id=req.correlation_id)
            if after.ok and after.resource:
                result.version, result.stored = version_of(after), after.resource
        return result

    @staticmethod
    def _changed_since_base(req: WriteRequest, current: dict[str, Any], version: str) -> str:
        if req.base_version and version and version != req.base_version:
            return (
                f"Patient/{req.target_id} is at version {version}, the write was based on {req.base_version}"
            )
        expected = expected_values(req)
        if expected:
            changed = differing(current, expected)
            if changed:
                return f"changed in athenaOne since our write: {', '.join(changed)}"
        return ""

    def _values_at(self, req: WriteRequest, version: str) -> tuple[dict[str, Any], WriteResult | None]:
        past = self.client.vread("Patient", req.target_id, version, correlation_id=req.correlation_id)
        cls = classify(past)
        if not cls.committed or not past.resource:
            return {}, WriteResult(
                outcome=Outcome.TERMINAL,
                message=f"could not read version {version} to restore ({cls.message}); "
                "restore it in athenaOne",
            )
        return {f: past.resource.get(f) for f in DEMOGRAPHICS}, None

    # -- check-by-read ---------------------------------------------------------------------------------

    @adapter_call
    def find_by_identifier(self, req: WriteRequest) -> LookupResult:
        if req.resource_type == "Patient":
            return self._demographics_applied(req)
        if req.resource_type == "QuestionnaireResponse":
            return self.lookup_by_scan(req, self.identifier_matcher(req))
        return self.lookup_by_scan(req, self._marker_matcher(req))

    def _demographics_applied(self, req: WriteRequest) -> LookupResult:
        """athena merges phones by kind and the address field by field, so the update landed when applying
        it again would change nothing."""
        reply = self.client.read("Patient", req.target_id, correlation_id=req.correlation_id)
        cls = classify(reply)
        if not cls.committed or not reply.resource:
            return LookupResult(found=None, outcome=cls.outcome, message=f"could not check: {cls.message}")
        current = reply.resource
        predicted = v1.predict_demographics(current, change_set(req))
        found = not differing(current, {f: predicted.get(f) for f in DEMOGRAPHICS if f in predicted})
        return LookupResult(
            found=found,
            resource_id=req.target_id,
            version=version_of(reply),
            resource=current,
            message="" if found else "the chart does not hold this write's values",
        )

    def _marker_matcher(self, req: WriteRequest) -> Callable[[dict[str, Any]], bool]:
        uid, intended = req.write_uid, req.resource or {}
        if req.resource_type != "Observation":
            return lambda res: carries_marker(res, uid)

        def same_reading(res: dict[str, Any]) -> bool:
            # A reading without its note: same code, same reading time, same value.
            if res.get("note"):
                return False
            return (
                code_token_matches(res, intended)
                and same_instant(
                    str(res.get("effectiveDateTime", "")), str(intended.get("effectiveDateTime", ""))
                )
                and same_value(
                    (res.get("valueQuantity") or {}).get("value"),
                    (intended.get("valueQuantity") or {}).get("value"),
                )
            )

        return lambda res: carries_marker(res, uid) or same_reading(res)

    # -- compensation ----------------------------------------------------------------------------------

    @explained
    def compensation(
        self, req: WriteRequest, *, kind: str, resource_id: str, version: str, data: dict[str, Any] | None
    ) -> CompensationPlan:
        if req.resource_type == "Patient":
            return self._demographics_compensation(req, kind, resource_id, version, data)
        screen, how = SCREENS.get(req.resource_type, (req.resource_type, "mark it as entered in error"))
        return manual_plan(
            req,
            ehr="athenaOne",
            screen=screen,
            kind=kind,
            resource_id=resource_id,
            data=data,
            how=how,
            reason="athena's APIs add chart items but do not correct them",
        )

    def _demographics_compensation(
        self, req: WriteRequest, kind: str, resource_id: str, version: str, data: dict[str, Any] | None
    ) -> CompensationPlan:
        written = {f: (req.resource or {}).get(f) for f in DEMOGRAPHICS if f in (req.resource or {})}
        context: dict[str, Any] = {"fields": list(DEMOGRAPHICS), "expected": written}
        if kind == "correction":
            values = {f: (data or {}).get(f) for f in DEMOGRAPHICS if (data or {}).get(f)}
            if not values:
                raise ValueError("a demographics correction needs new telecom or address values")
            context["fields"] = list(values)
            action, resource = "corrected_values", values
        else:
            before = pre_image(req)
            if before is None:
                context["restore_from_version"] = req.base_version
            action, resource = "restore_previous", {f: (before or {}).get(f) for f in DEMOGRAPHICS}
        request = compensating_request(
            req,
            kind=kind,
            action=action,
            method="update",
            resource={
                "resourceType": "Patient",
                "id": resource_id,
                **{k: v for k, v in resource.items() if v},
            },
            target_id=resource_id,
            version=version,
            **context,
        )
        return CompensationPlan(
            requests=[request],
            description=f"{'Correct' if kind == 'correction' else 'Restore'} the phone numbers and address "
            f"of Patient/{resource_id} through athena v1, after checking nobody changed them since our write "
            "(read-compare-write).",
        )


def _codes_of(resource: dict[str, Any]) -> set[str]:
    return {
        str(c.get("code")) for c in (resource.get("code") or {}).get("coding") or [] if isinstance(c, dict)
    }
