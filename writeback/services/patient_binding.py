"""A write belongs to one patient, and one encounter, forever (safety rule 11).

The elements that tie a resource to its patient and encounter: `subject`, `patient` and `for`
(Observation, Condition, MedicationStatement, DocumentReference, QuestionnaireResponse,
AllergyIntolerance, Task), `encounter`, `context` (MedicationStatement's encounter reference) and
`context.encounter` (DocumentReference), and a Patient's or a Task's own `id` (a Patient's
`identifier` too). No replay, edit, correction or conflict resolution may change, add or remove
them; the worker checks them once more against the write just before sending, so a payload altered
in the database never goes out.
"""

from typing import Any

from writeback.models import Write
from writeback.services.permissions import refuse

RULE = "patient-binding"
PATIENT_ELEMENTS = ("subject", "patient", "for")
# Elements that point at an encounter: `context` is one on MedicationStatement and holds a list of them
# (`context.encounter`) on DocumentReference.
ENCOUNTER_ELEMENTS = ("encounter", "context")
# Resources that are themselves bound: which record of which patient they are.
SELF_BOUND = {"Patient": ("id", "identifier"), "Task": ("id",)}


def _reference(value: Any) -> Any:
    """A Reference reduced to what identifies its target ('Type/id' and any identifier; not display)."""
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    ref = value.get("reference")
    if isinstance(ref, str):
        parts = ref.rstrip("/").split("/")
        # 'https://host/fhir/Patient/1' and 'Patient/1' name the same resource.
        out["reference"] = "/".join(parts[-2:]) if len(parts) >= 2 else ref
    elif ref is not None:
        out["reference"] = ref
    if value.get("identifier") is not None:
        out["identifier"] = value["identifier"]
    if value.get("type") is not None:
        out["type"] = value["type"]
    return out or value


def binding_of(resource: dict[str, Any]) -> dict[str, Any]:
    """The binding elements a resource carries, normalised, by path."""
    if not isinstance(resource, dict):
        return {}
    found: dict[str, Any] = {}
    for name in (*PATIENT_ELEMENTS, "encounter"):
        if name in resource:
            found[name] = _reference(resource[name])
    context = resource.get("context")
    if resource.get("resourceType") == "DocumentReference" and isinstance(context, dict):
        if context.get("encounter") is not None:
            found["context.encounter"] = [_reference(e) for e in _listed(context["encounter"])]
    elif context is not None:
        found["context"] = _reference(context)
    for name in SELF_BOUND.get(resource.get("resourceType", ""), ()):
        if name in resource:
            found[name] = resource[name]
    return found


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def binding_changes(original: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The binding paths on which `new` differs from `original` (changed, added or removed)."""
    before, after = binding_of(original), binding_of(new)
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))


def _points_at(value: Any, resource_type: str, resource_id: str) -> bool:
    ref = _reference(value)
    return isinstance(ref, dict) and ref.get("reference") == f"{resource_type}/{resource_id}"


def binding_mismatch(resource: dict[str, Any], *, patient_ref: str, encounter_ref: str) -> str:
    """Why `resource` is not bound to this patient and encounter ('' when it is). Elements it does
    not carry are not checked (a compensating update carries only what it changes)."""
    found = binding_of(resource)
    for name in PATIENT_ELEMENTS:
        if name in found and not _points_at(resource[name], "Patient", patient_ref):
            return f"{name} does not point at Patient/{patient_ref}"
    if resource.get("resourceType") == "Patient" and "id" in found and found["id"] != patient_ref:
        return f"the Patient's id is not {patient_ref}"
    encounters = [resource.get("encounter")] if "encounter" in found else []
    if "context" in found:
        encounters.append(resource["context"])
    if "context.encounter" in found:
        encounters += _listed(resource["context"]["encounter"])
    for value in encounters:
        if not encounter_ref or not _points_at(value, "Encounter", encounter_ref):
            return f"an encounter reference does not point at Encounter/{encounter_ref or '(none)'}"
    return ""


def write_binding_problem(write: Write, payload: dict[str, Any] | None = None) -> str:
    """Why `payload` (default: the write's own) would move the write to another patient or encounter."""
    payload = write.payload if payload is None else payload
    return binding_mismatch(
        payload, patient_ref=write.patient_ref, encounter_ref=write.event.encounter_ref or ""
    )


def require_same_binding(
    write: Write,
    payload: dict[str, Any],
    *,
    user: Any,
    action: str,
    new_resource: bool = True,
    request_id: str = "",
    channel: str = "api",
) -> None:
    """Refuses (audited, `patient-binding`) a payload meant to stand in for `write` that names another
    patient or encounter. `new_resource`: the payload replaces the write's whole resource (a replay, a
    resolution, a corrected entry), so its binding must equal the original's; otherwise (a compensating
    update) the elements it carries must agree with the write's patient and encounter. Call it before
    any transaction: the refusal's audit entry must survive."""
    changed = binding_changes(write.payload, payload) if new_resource else []
    problem = write_binding_problem(write, payload)
    if not changed and not problem:
        return
    what = f"changes {', '.join(changed)}" if changed else problem
    refuse(
        user,
        action,
        f"a write belongs to one patient and encounter: this {action.replace('_', ' ')} {what}",
        rule=RULE,
        tenant=write.tenant,
        object_type="write",
        object_id=str(write.uid),
        request_id=request_id,
        channel=channel,
    )
