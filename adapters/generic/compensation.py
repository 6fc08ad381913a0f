"""Undoing and correcting writes with standard FHIR R4 interactions (no vendor quirks).

Rollback:
- Observation, QuestionnaireResponse, DocumentReference, MedicationStatement: status entered-in-error;
- Condition, AllergyIntolerance: verificationStatus entered-in-error (clinicalStatus removed, as R4
  requires for entered-in-error);
- Patient: the previous telecom/address restored; Task: the previous status restored.

Correction:
- DocumentReference: a new DocumentReference with `relatesTo: replaces` the original;
- the other created types: the corrected resource is created, then the original marked entered-in-error;
- Patient, Task: the corrected values written.

Every update carries If-Match with the version our write committed: a clinician's edit since then turns
the compensation into a conflict for a person to reconcile.
"""

from __future__ import annotations

from typing import Any

from adapters.base import CompensationPlan, WriteRequest
from adapters.compensation import (
    ENTERED_IN_ERROR,
    compensating_request,
    corrected_resource,
    pre_image,
    previous_status,
    verification_entered_in_error,
)

STATUS_TYPES = ("Observation", "QuestionnaireResponse", "DocumentReference", "MedicationStatement")
VERIFICATION_TYPES = ("Condition", "AllergyIntolerance")
DEMOGRAPHICS = ("telecom", "address")


def plan(
    req: WriteRequest, *, kind: str, resource_id: str, version: str, data: dict[str, Any] | None
) -> CompensationPlan:
    if kind == "rollback":
        return _rollback(req, resource_id, version)
    if kind == "correction":
        return _correction(req, resource_id, version, data)
    raise ValueError(f"unknown compensation kind {kind!r} (rollback or correction)")


def _entered_in_error(req: WriteRequest, kind: str, resource_id: str, version: str) -> WriteRequest:
    rtype = req.resource_type
    original = req.resource or {}
    if rtype in VERIFICATION_TYPES:
        return compensating_request(
            req,
            kind=kind,
            action="verification_entered_in_error",
            method="update",
            resource={
                "resourceType": rtype,
                "id": resource_id,
                "verificationStatus": verification_entered_in_error(rtype),
            },
            target_id=resource_id,
            version=version,
            remove=["clinicalStatus"],
            present=[k for k in ("clinicalStatus", "verificationStatus") if k in original],
            expected={"verificationStatus": original.get("verificationStatus")},
        )
    return compensating_request(
        req,
        kind=kind,
        action="entered_in_error",
        method="update",
        resource={"resourceType": rtype, "id": resource_id, "status": ENTERED_IN_ERROR},
        target_id=resource_id,
        version=version,
        expected={"status": original.get("status")},
    )


def _rollback(req: WriteRequest, resource_id: str, version: str) -> CompensationPlan:
    rtype = req.resource_type
    if rtype in STATUS_TYPES or rtype in VERIFICATION_TYPES:
        request = _entered_in_error(req, "rollback", resource_id, version)
        return CompensationPlan(
            requests=[request],
            description=f"Mark {rtype}/{resource_id} entered-in-error (If-Match version {version or '?'}).",
        )
    if rtype == "Patient":
        before = pre_image(req)
        written = {f: (req.resource or {}).get(f) for f in DEMOGRAPHICS if f in (req.resource or {})}
        if before is not None:
            restore = {f: before.get(f) for f in written or DEMOGRAPHICS}
            request = compensating_request(
                req,
                kind="rollback",
                action="restore_previous",
                method="update",
                resource={
                    "resourceType": "Patient",
                    "id": resource_id,
                    **{k: v for k, v in restore.items() if v},
                },
                target_id=resource_id,
                version=version,
                fields=list(restore),
                present=[f for f, v in written.items() if v],
                expected=written,
            )
        else:
            # The ledger kept no pre-image: restore from the version our write was based on.
            request = compensating_request(
                req,
                kind="rollback",
                action="restore_previous",
                method="update",
                resource={"resourceType": "Patient", "id": resource_id},
                target_id=resource_id,
                version=version,
                fields=list(written or DEMOGRAPHICS),
                restore_from_version=req.base_version,
                expected=written,
            )
        return CompensationPlan(
            requests=[request],
            description=f"Restore the previous {', '.join(written or DEMOGRAPHICS)} of Patient/{resource_id} "
            f"(If-Match version {version or '?'}).",
        )
    if rtype == "Task":
        previous = previous_status(req)
        if not previous:
            raise ValueError("a Task rollback needs the previous status (context from_status)")
        request = compensating_request(
            req,
            kind="rollback",
            action="restore_previous_status",
            method="update",
            resource={"resourceType": "Task", "id": resource_id, "status": previous},
            target_id=resource_id,
            version=version,
            fields=["status"],
            expected={"status": (req.resource or {}).get("status")},
        )
        return CompensationPlan(
            requests=[request],
            description=f"Set Task/{resource_id} back to status {previous!r} "
            f"(If-Match version {version or '?'}).",
        )
    raise ValueError(f"no rollback is defined for {rtype}")


def _correction(
    req: WriteRequest, resource_id: str, version: str, data: dict[str, Any] | None
) -> CompensationPlan:
    rtype = req.resource_type
    original = req.resource or {}
    if rtype == "DocumentReference":
        new = corrected_resource(original, data)
        new["relatesTo"] = [{"code": "replaces", "target": {"reference": f"DocumentReference/{resource_id}"}}]
        request = compensating_request(
            req, kind="correction", action="supersede", method="create", resource=new
        )
        return CompensationPlan(
            requests=[request],
            description=f"Create a corrected note that replaces DocumentReference/{resource_id}.",
        )
    if rtype in STATUS_TYPES or rtype in VERIFICATION_TYPES:
        new = corrected_resource(original, data)
        create = compensating_request(
            req, kind="correction", action="corrected_entry", method="create", resource=new
        )
        retire = _entered_in_error(req, "correction", resource_id, version)
        return CompensationPlan(
            requests=[create, retire],
            description=f"Create the corrected {rtype}, then mark {rtype}/{resource_id} entered-in-error.",
        )
    if rtype in ("Patient", "Task"):
        fields = list(DEMOGRAPHICS) if rtype == "Patient" else ["status"]
        values = {f: (data or {}).get(f) for f in fields if f in (data or {})}
        if not values:
            raise ValueError(f"a {rtype} correction needs new values for {', '.join(fields)}")
        request = compensating_request(
            req,
            kind="correction",
            action="corrected_values",
            method="update",
            resource={"resourceType": rtype, "id": resource_id, **{k: v for k, v in values.items() if v}},
            target_id=resource_id,
            version=version,
            fields=list(values),
            present=[f for f in values if original.get(f)],
        )
        return CompensationPlan(
            requests=[request],
            description=f"Write the corrected {', '.join(values)} of {rtype}/{resource_id} "
            f"(If-Match version {version or '?'}).",
        )
    raise ValueError(f"no correction is defined for {rtype}")
