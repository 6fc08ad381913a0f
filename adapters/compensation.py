"""Building compensating writes: what every vendor's `compensation()` needs, whatever its API.

A compensating write is an ordinary `WriteRequest`: `operation="create"` when it makes a new resource
(a correction, a superseding document), `operation="compensate"` when it changes the original. Its
`context["compensation"]` says how to perform it:

    {"kind": "rollback" | "correction", "method": "update" | "create", "action": <what it does>,
     "compensates": <original write uid>}

For `method="update"` the request's resource holds the elements to set (`context["remove"]` lists
elements to remove) and `base_version` is the version the original write committed: a clinician's edit
since then makes the compensation a CONFLICT, never an overwrite. For `method="create"` the resource is
the new resource (a correction, or a superseding document); its identifier is stamped with the uid the
ledger gives the compensating write.

`data` of a correction is either a FHIR resource of the same type (its elements replace the
original's) or a dict of FHIR elements; for DocumentReference, `{"text": ...}` replaces the note text.
"""

from __future__ import annotations

import base64
import copy
import functools
import uuid
from collections.abc import Callable
from typing import Any

from adapters.base import CompensationPlan, WriteRequest

ENTERED_IN_ERROR = "entered-in-error"
VERIFICATION_SYSTEM = {
    "Condition": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
    "AllergyIntolerance": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
}


def compensating_request(
    original: WriteRequest,
    *,
    kind: str,
    action: str,
    method: str,
    resource: dict[str, Any],
    target_id: str = "",
    version: str = "",
    **context: Any,
) -> WriteRequest:
    return WriteRequest(
        # The ledger gives the compensating write its own uid; this one only keeps the request complete.
        write_uid=str(uuid.uuid4()),
        resource_type=resource.get("resourceType", original.resource_type),
        operation="create" if method == "create" else "compensate",
        resource=resource,
        correlation_id=original.correlation_id,
        patient_ref=original.patient_ref,
        encounter_ref=original.encounter_ref,
        target_id=target_id,
        base_version=version,
        context={
            "compensation": {
                "kind": kind,
                "method": method,
                "action": action,
                "compensates": original.write_uid,
            },
            **{k: v for k, v in context.items() if v not in (None, [], {})},
        },
    )


def explained[**P](
    method: Callable[P, CompensationPlan],
) -> Callable[P, CompensationPlan]:
    """A compensation that cannot be built (no previous status, no corrected values, an unknown kind)
    comes back as a plan with no requests and the reason, which the console shows, never as an error."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> CompensationPlan:
        try:
            return method(*args, **kwargs)
        except ValueError as exc:
            return CompensationPlan(description=f"cannot compensate: {exc}")

    return wrapper


def compensation_of(req: WriteRequest) -> dict[str, Any]:
    """The `context["compensation"]` of a compensating write ({} for any other write)."""
    comp = req.context.get("compensation")
    return comp if isinstance(comp, dict) else {}


def compensation_method(req: WriteRequest) -> str:
    """create | update | patch: how the request changes the target (compensations included)."""
    if req.operation == "compensate":
        return "create" if compensation_of(req).get("method") == "create" else "update"
    return req.operation


def pre_image(req: WriteRequest) -> dict[str, Any] | None:
    """The values an update replaced (Patient telecom/address), as the ledger recorded them."""
    for key in ("pre_image", "before"):
        value = req.context.get(key)
        if isinstance(value, dict):
            return value
    return None


def previous_status(req: WriteRequest) -> str:
    """The status a Task had before our status change."""
    for key in ("from_status", "previous_status", "from"):
        if req.context.get(key):
            return str(req.context[key])
    return ""


def expected_values(req: WriteRequest) -> dict[str, Any] | None:
    """What an update expects the target to hold before it changes it, when the ledger says: the
    `expected` context, or a Task's `from_status`. Read-compare-write compares these."""
    expected = req.context.get("expected")
    if isinstance(expected, dict) and expected:
        return expected
    if req.resource_type == "Task" and req.operation != "compensate" and previous_status(req):
        return {"status": previous_status(req)}
    return None


def verification_entered_in_error(resource_type: str) -> dict[str, Any]:
    return {
        "coding": [
            {
                "system": VERIFICATION_SYSTEM[resource_type],
                "code": ENTERED_IN_ERROR,
                "display": "Entered in Error",
            }
        ]
    }


def corrected_resource(original: dict[str, Any], data: dict[str, Any] | None) -> dict[str, Any]:
    """The original intended resource with the correction applied (a new resource: no id, no meta)."""
    corrected = {k: copy.deepcopy(v) for k, v in original.items() if k not in ("id", "meta")}
    data = dict(data or {})
    if data.get("resourceType") not in (None, original.get("resourceType")):
        raise ValueError(f"a correction of {original.get('resourceType')} cannot be a {data['resourceType']}")
    text = data.pop("text", None) if original.get("resourceType") == "DocumentReference" else None
    for name, value in data.items():
        if name in ("resourceType", "id", "meta", "identifier"):
            continue
        if value is None:
            corrected.pop(name, None)
        else:
            corrected[name] = copy.deepcopy(value)
    if isinstance(text, str):
        corrected["content"] = [
            {
                "attachment": {
                    "contentType": "text/plain",
                    "data": base64.b64encode(text.encode()).decode(),
                }
            }
        ]
    return corrected


def document_text(resource: dict[str, Any]) -> str:
    """The text/plain note of a DocumentReference (first attachment), decoded."""
    for content in resource.get("content") or []:
        attachment = (content or {}).get("attachment") or {}
        if attachment.get("data"):
            try:
                return base64.b64decode(attachment["data"]).decode()
            except (ValueError, UnicodeDecodeError):
                return ""
    return ""
