"""Generic FHIR R4: the standard REST API only, so it works against any conformant server (HAPI, ...).

- create: POST with `If-None-Exist: identifier=<system>|<write uid>` unless the tenant's registry says
  the server has no conditional create. The header is only *trusted* (guarantee `conditional_create`,
  a 5xx safe to resend) when the registry confirms conditional create for the type (discovered or set
  by hand): If-None-Exist is optional in R4 and a server may ignore it;
- update/patch: JSON Patch with If-Match where the tenant allows PATCH, otherwise read-merge-PUT with
  If-Match (only the elements the write owns change; a partial resource is never PUT);
- check-by-read: search by our identifier;
- compensation: entered-in-error statuses, superseding DocumentReference, restoring the previous
  values with If-Match (see `adapters.generic.compensation`).
"""

from __future__ import annotations

from typing import Any

from adapters.base import (
    AdapterCapabilities,
    CompensationPlan,
    Guarantee,
    LookupResult,
    Outcome,
    PlannedRequest,
    WriteRequest,
    WriteResult,
)
from adapters.classify import classify
from adapters.compensation import compensation_method, expected_values, explained
from adapters.fhir_changes import change_set, differing, json_patch, merge
from adapters.fhir_rest import FhirRestAdapter, adapter_call, version_of
from adapters.generic import compensation
from adapters.http import HttpReply, RequestSpec

CREATED = (
    "Observation",
    "QuestionnaireResponse",
    "DocumentReference",
    "Condition",
    "AllergyIntolerance",
    "MedicationStatement",
    "Provenance",
)
UPDATED = ("Patient", "Task")
# R4's Provenance has no identifier: it is PUT under an id of ours (the write's uid), so a repeat
# lands on the same resource and check-by-read is a plain read.
OWN_ID = frozenset({"Provenance"})


class GenericFhirAdapter(FhirRestAdapter):
    vendor = "generic"

    @classmethod
    def capabilities(cls) -> AdapterCapabilities:
        writes = {(t, "create") for t in CREATED} | {(t, op) for t in UPDATED for op in ("update", "patch")}
        return AdapterCapabilities(
            writes=frozenset(writes),
            fhir_written_types=frozenset([*CREATED, *UPDATED]),
            conditional_create=True,
            if_match=True,
            patch=True,
            read_back=True,
            search_by_identifier=True,
            # R4 http.html#ops: with `Prefer: return=representation` the answer holds the resource as
            # stored; each answer is still checked to name what was written (type, id, version).
            answer_is_stored=True,
        )

    def scope_needs(self) -> set[tuple[str, str]]:
        # Compensations mark our own creates entered-in-error: that is an update on the created type.
        needs = super().scope_needs()
        return needs | {(t, "u") for t, access in needs if access == "c"}

    # -- checks and plans ------------------------------------------------------------------------------

    def vendor_preflight(self, req: WriteRequest) -> str | None:
        if compensation_method(req) in ("update", "patch"):
            if not req.target_id:
                return f"an {req.operation} of {req.resource_type} needs the target resource id"
            if not (req.base_version or expected_values(req) or req.context.get("restore_from_version")):
                return (
                    f"an {req.operation} of {req.resource_type} needs the version it is based on "
                    "(sent as If-Match) or the values it expects to replace; without either a newer "
                    "edit could be overwritten"
                )
        return None

    def plan(self, req: WriteRequest) -> list[PlannedRequest]:
        if compensation_method(req) == "create" and req.resource_type in OWN_ID:
            return [
                self.planned(
                    req, self.client.update_spec({**req.resource, "id": req.write_uid}, version=None)
                )
            ]
        if compensation_method(req) == "create":
            conditional = self.sends_if_none_exist(req.resource_type)
            return [self.planned(req, self.create_spec(req, req.resource, conditional=conditional))]
        specs: list[RequestSpec] = []
        restore_from = req.context.get("restore_from_version")
        if restore_from:
            path = f"{req.resource_type}/{req.target_id}/_history/{restore_from}"
            specs.append(RequestSpec("GET", self.client.url(path), note="reads the version to restore"))
        changes = change_set(req)
        if req.base_version and self._use_patch(req):
            ops = json_patch(changes, req.context.get("present"))
            specs.append(
                self.client.patch_spec(req.resource_type, req.target_id, ops, version=req.base_version)
            )
        else:
            read = self.client.read_spec(req.resource_type, req.target_id)
            read.note = (
                f"reads the current resource; a version other than {req.base_version!r} is a conflict"
                if req.base_version
                else "reads the current resource and compares what this write expects to replace"
            )
            shown = {k: v for k, v in changes.items() if v is not None}
            put = self.client.update_spec(
                {"resourceType": req.resource_type, "id": req.target_id, **shown},
                version=req.base_version or "<version read>",
            )
            put.note = f"PUTs the current resource with only {', '.join(changes) or 'nothing'} changed"
            specs += [read, put]
        return [self.planned(req, spec) for spec in specs]

    # -- writing ---------------------------------------------------------------------------------------

    @adapter_call
    def write(self, req: WriteRequest) -> WriteResult:
        refusal = self.preflight(req)
        if refusal:
            return WriteResult(outcome=Outcome.TERMINAL, message=f"refused before sending: {refusal}")
        if compensation_method(req) == "create":
            return self._create(req)
        return self._update(req)

    def _create(self, req: WriteRequest) -> WriteResult:
        if req.resource_type in OWN_ID:
            resource = {**req.resource, "id": req.write_uid}
            reply = self.client.update(resource, version=None, correlation_id=req.correlation_id)
            return self.write_result(classify(reply), sent=resource, guarantee=Guarantee.LEDGER, answer=reply)
        return self.fhir_create(req, req.resource, conditional=self.sends_if_none_exist(req.resource_type))

    def sends_if_none_exist(self, resource_type: str) -> bool:
        """Sent unless the registry refuses conditional create: when nothing is known, asking costs
        nothing (a server without it ignores the header), but it is not trusted (see fhir_create)."""
        return self.conditional_create_support(resource_type) is not False

    def _use_patch(self, req: WriteRequest) -> bool:
        setting = str(self.target.settings.get("patch", "auto")).lower()
        if setting in ("never", "false", "off"):
            return False
        if setting in ("always", "true", "on"):
            return True
        return (req.resource_type, "patch") in self.target.enabled

    def _update(self, req: WriteRequest) -> WriteResult:
        changes = change_set(req)
        restore_from = req.context.get("restore_from_version")
        if restore_from:
            changes, failure = self._values_at(
                req, str(restore_from), list(changes) or ["telecom", "address"]
            )
            if failure is not None:
                return failure
        if req.base_version and self._use_patch(req):
            ops = json_patch(changes, req.context.get("present"))
            reply = self.client.patch(
                req.resource_type,
                req.target_id,
                ops,
                version=req.base_version,
                correlation_id=req.correlation_id,
            )
            sent = {"resourceType": req.resource_type, "id": req.target_id, **changes}
            return self._finish_update(req, reply, sent, Guarantee.IF_MATCH)
        return self._read_merge_put(req, changes)

    def _read_merge_put(self, req: WriteRequest, changes: dict[str, Any]) -> WriteResult:
        current_reply = self.client.read(req.resource_type, req.target_id, correlation_id=req.correlation_id)
        read_cls = classify(current_reply)
        if not read_cls.committed or not current_reply.resource:
            return WriteResult(
                outcome=read_cls.outcome if not read_cls.committed else Outcome.TERMINAL,
                message=f"could not read {req.resource_type}/{req.target_id} before updating: "
                f"{read_cls.message}",
                retry_after=read_cls.retry_after,
            )
        current, current_version = current_reply.resource, version_of(current_reply)
        guarantee = Guarantee.IF_MATCH
        if req.base_version and current_version and current_version != req.base_version:
            return WriteResult(
                outcome=Outcome.CONFLICT,
                message=f"{req.resource_type}/{req.target_id} is at version {current_version}, "
                f"the write was based on {req.base_version}",
                current=current,
                current_version=current_version,
                guarantee=guarantee,
            )
        expected = expected_values(req)
        if not req.base_version:
            # No base version: compare what the ledger expects the EHR to hold, then PUT with If-Match
            # on the version just read, so nothing can slip in between the read and the write.
            guarantee = Guarantee.READ_COMPARE_WRITE if not current_version else Guarantee.IF_MATCH
            if expected and differing(current, expected):
                return WriteResult(
                    outcome=Outcome.CONFLICT,
                    message=f"changed since our write: {', '.join(differing(current, expected))}",
                    current=current,
                    current_version=current_version,
                    guarantee=guarantee,
                )
        merged = merge(current, changes)
        reply = self.client.update(
            merged, version=req.base_version or current_version, correlation_id=req.correlation_id
        )
        return self._finish_update(req, reply, merged, guarantee)

    def _finish_update(
        self, req: WriteRequest, reply: HttpReply, sent: dict[str, Any], guarantee: Guarantee
    ) -> WriteResult:
        result = self.write_result(classify(reply), sent=sent, guarantee=guarantee, answer=reply)
        if result.outcome is Outcome.COMMITTED and not result.resource_id:
            result.resource_id = req.target_id
        if result.outcome is Outcome.CONFLICT:
            self.with_current(result, req.resource_type, req.target_id, req.correlation_id)
        return result

    def _values_at(
        self, req: WriteRequest, version: str, fields: list[str]
    ) -> tuple[dict[str, Any], WriteResult | None]:
        """The values `fields` had at `version` (restoring a pre-image the ledger did not record)."""
        reply = self.client.vread(
            req.resource_type, req.target_id, version, correlation_id=req.correlation_id
        )
        cls = classify(reply)
        if not cls.committed or not reply.resource:
            failure = WriteResult(
                outcome=cls.outcome if not cls.committed else Outcome.TERMINAL,
                message=f"could not read version {version} to restore: {cls.message}",
            )
            return {}, failure
        return {f: reply.resource.get(f) for f in fields}, None

    # -- check-by-read ---------------------------------------------------------------------------------

    @adapter_call
    def find_by_identifier(self, req: WriteRequest) -> LookupResult:
        if compensation_method(req) == "create" and req.resource_type in OWN_ID:
            reply = self.client.read(req.resource_type, req.write_uid, correlation_id=req.correlation_id)
            if reply.status == 404:
                return LookupResult(found=False, message="no resource under this write's id")
            cls = classify(reply)
            if not cls.committed or not reply.resource:
                return LookupResult(
                    found=None, outcome=cls.outcome, message=f"could not check: {cls.message}"
                )
            return LookupResult(
                found=True, resource_id=req.write_uid, version=version_of(reply), resource=reply.resource
            )
        if compensation_method(req) == "create":
            return self.lookup_by_identifier_search(req)
        return self.lookup_applied(req)

    # -- compensation ----------------------------------------------------------------------------------

    @explained
    def compensation(
        self, req: WriteRequest, *, kind: str, resource_id: str, version: str, data: dict[str, Any] | None
    ) -> CompensationPlan:
        return compensation.plan(req, kind=kind, resource_id=resource_id, version=version, data=data)
