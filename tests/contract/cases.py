"""The contract matrix: which profile takes which event type, how each profile rejects a write, and
helpers that act as the sync worker does around an adapter (prepare before an update, check by read
before a resend)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from adapters.base import Outcome, VendorAdapter, WriteRequest, WriteResult
from adapters.identifiers import carries_identifier, marker
from adapters.simulator import SimulatorHandle
from tests.adapters.intended import EVENT_TYPES, SYSTEM, write_requests

PROFILES = ("generic", "epic", "athena", "veradigm")
# The simulator's Unity account, configured like any tenant's: by secret reference (conftest sets it).
UNITY_PASSWORD_ENV = "WB_CONTRACT_SIM_UNITY_PASSWORD"
SETTINGS = {
    "athena": {"practice_id": "195900", "department_id": "1", "document_type_id": "340"},
    "veradigm": {
        "unity_username": "writeback",
        "unity_password_ref": f"env:{UNITY_PASSWORD_ENV}",
        "unity_appname": "fhir-writeback",
        "unity_ehr_user": "writeback",
        "unity_ehr_password_ref": f"env:{UNITY_PASSWORD_ENV}",
    },
}
UNSUPPORTED = {
    "generic": set(),
    "epic": {"intake.completed", "demographics.updated", "referral.status_changed", "medication.reconciled"},
    "athena": {"referral.status_changed"},
    "veradigm": {"intake.completed", "demographics.updated"},
}
UPDATES = {"demographics.updated", "referral.status_changed"}
# Profiles whose API carries our FHIR identifier (others: the [wb:uid] marker in a note).
FHIR_WRITTEN = {
    "generic": set(EVENT_TYPES),
    "epic": set(EVENT_TYPES),
    "athena": {"intake.completed"},
    "veradigm": set(),
}

__all__ = ["EVENT_TYPES", "SYSTEM"]


def supported(profile: str, event_type: str) -> bool:
    return event_type not in UNSUPPORTED[profile]


def requests_for(event_type: str, n: int, **kwargs: Any) -> list[WriteRequest]:
    """The event's writes for patient pat-{n} (open encounter enc-{n}, task task-{n})."""
    return write_requests(event_type, patient=f"pat-{n}", encounter=f"enc-{n}", **kwargs)


def current(sim: SimulatorHandle, rtype: str, rid: str) -> dict[str, Any] | None:
    return next((r for r in sim.resources(rtype) if r.get("id") == rid), None)


def prepare(sim: SimulatorHandle, req: WriteRequest) -> None:
    """What the worker does before an update: record the version it commits against."""
    if req.operation in ("update", "patch") and req.target_id:
        held = current(sim, req.resource_type, req.target_id) or {}
        req.base_version = str((held.get("meta") or {}).get("versionId") or "")


def deliver(adapter: VendorAdapter, req: WriteRequest) -> tuple[str, WriteResult | None]:
    """One delivery as the worker makes it when the previous try's outcome is unknown: without
    conditional create, check by read first and send only if the write is not there."""
    if not trusts_conditional_create(adapter, req):
        found = adapter.find_by_identifier(req)
        assert found.found is not None, found.message
        if found.found:
            return "found", None
    result = adapter.write(req)
    assert result.outcome is Outcome.COMMITTED, result.message
    return "sent", result


def trusts_conditional_create(adapter: VendorAdapter, req: WriteRequest) -> bool:
    """A create the server deduplicates itself: If-None-Exist to a tenant that confirmed it."""
    support = getattr(adapter, "conditional_create_support", None)
    return req.operation == "create" and support is not None and support(req.resource_type) is True


def ours(sim: SimulatorHandle, profile: str, event_type: str, req: WriteRequest) -> list[dict[str, Any]]:
    """Resources on the simulator carrying this write's identifier or marker."""
    if event_type in FHIR_WRITTEN[profile]:
        return [r for r in sim.resources(req.resource_type) if carries_identifier(r, SYSTEM, req.write_uid)]
    mark = marker(req.write_uid)
    return [r for r in sim.resources(req.resource_type) if mark in json.dumps(r)]


# --- how each profile rejects a well-formed write ----------------------------------------------------
# (profile, event type) -> (change to the request, words the classified message must contain)


def _patient(ref: str) -> Callable[[WriteRequest], None]:
    def change(req: WriteRequest) -> None:
        req.patient_ref = ref
        for key in ("subject", "patient"):
            if key in req.resource:
                req.resource[key] = {"reference": f"Patient/{ref}"}

    return change


def _encounter(ref: str, patient: str | None = None) -> Callable[[WriteRequest], None]:
    def change(req: WriteRequest) -> None:
        if patient:
            _patient(patient)(req)
        req.encounter_ref = ref
        if "encounter" in req.resource:
            req.resource["encounter"] = {"reference": f"Encounter/{ref}"}
        if "context" in req.resource:
            req.resource["context"] = {"encounter": [{"reference": f"Encounter/{ref}"}]}

    return change


def _target(rid: str) -> Callable[[WriteRequest], None]:
    def change(req: WriteRequest) -> None:
        req.target_id = rid
        req.resource["id"] = rid

    return change


def _zip(req: WriteRequest) -> None:
    req.resource["address"][0]["postalCode"] = "ABCDE"


UNKNOWN_PATIENT = "pat-9999"
REJECTIONS: dict[tuple[str, str], tuple[Callable[[WriteRequest], None] | str, list[str]]] = {
    # generic: a spec-correct server refuses a conditional create that matches several resources, and
    # an update of a resource it does not hold.
    **{
        ("generic", e): ("duplicates", ["several resources already carry"])
        for e in EVENT_TYPES
        if e not in UPDATES
    },
    ("generic", "demographics.updated"): (_target("pat-0000"), ["not known"]),
    ("generic", "referral.status_changed"): (_target("task-0000"), ["not known"]),
    # Epic: encounter and patient rules of its write APIs.
    ("epic", "vitals.recorded"): (_encounter("enc-78", "pat-1001"), ["finished", "open encounter", "59111"]),
    ("epic", "note.signed"): ("other-patients-encounter", ["belongs to another patient"]),
    ("epic", "problem.confirmed"): (_patient(UNKNOWN_PATIENT), ["existing Patient", "59111"]),
    ("epic", "allergy.recorded"): (_patient(UNKNOWN_PATIENT), ["existing Patient", "59111"]),
    # athena: business failures as `success: false` inside a 200.
    **{
        ("athena", e): (_patient(UNKNOWN_PATIENT), ["athena refused", "not found in practice"])
        for e in (
            "vitals.recorded",
            "note.signed",
            "problem.confirmed",
            "allergy.recorded",
            "medication.reconciled",
        )
    },
    ("athena", "demographics.updated"): (_zip, ["athena refused", "Invalid zip"]),
    # athena's FHIR API files a questionnaire response only in a chart of the practice.
    ("athena", "intake.completed"): (
        _patient(UNKNOWN_PATIENT),
        ["HTTP 422", f"Patient/{UNKNOWN_PATIENT} is not a patient of practice 195900"],
    ),
    # Veradigm: Unity errors inside an HTTP 200.
    **{
        ("veradigm", e): (_patient(UNKNOWN_PATIENT), ["Unity refused", "not found"])
        for e in (
            "vitals.recorded",
            "note.signed",
            "problem.confirmed",
            "allergy.recorded",
            "medication.reconciled",
        )
    },
    ("veradigm", "referral.status_changed"): (
        "other-patients-task",
        ["Unity refused", "not found for patient"],
    ),
}
