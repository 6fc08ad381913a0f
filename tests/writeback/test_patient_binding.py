"""A write belongs to one patient and one encounter, forever.

An edited replay, a re-derive, a conflict's resolution or a clinical correction that would point a write
at another patient or encounter (subject, patient, for, encounter, context, a Patient's own id, a Task's
id) is refused with `patient-binding`, audited, and nothing is written; the worker checks the payload
against the write once more just before sending, so a payload altered in the database never goes out.
"""

import copy
import json

import pytest

from tests.console.conftest import client_for, committed, conflicted, failed
from tests.writeback.helpers import EVENT_TYPES, consent_for, event
from tests.writeback.sync.conftest import drain
from writeback.models import AuditEntry, BusinessEvent, Compensation, Conflict, Write, WriteEditor
from writeback.services.patient_binding import binding_changes, binding_mismatch
from writeback.states import WriteState

pytestmark = pytest.mark.django_db

OTHER_PATIENT = {"reference": "Patient/pat-1002"}
OTHER_ENCOUNTER = {"reference": "Encounter/enc-999"}


def _code(r) -> str:
    return r.json()["issue"][0]["details"]["coding"][0]["code"]


def binding_refusals() -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action="access.refused", data__rule="patient-binding"))


# Each binding element of each resource type we write, moved elsewhere.
MOVES = {
    "Observation": [("subject", OTHER_PATIENT), ("encounter", OTHER_ENCOUNTER), ("subject", None)],
    "QuestionnaireResponse": [("subject", OTHER_PATIENT), ("encounter", OTHER_ENCOUNTER)],
    "DocumentReference": [("subject", OTHER_PATIENT), ("context", {"encounter": [OTHER_ENCOUNTER]})],
    "Condition": [
        ("subject", OTHER_PATIENT),
        ("subject", {"reference": "https://ehr.example/fhir/Patient/pat-1002"}),
        (
            "subject",
            {"reference": "Patient/pat-1001", "identifier": {"system": "urn:example:mrn", "value": "X"}},
        ),
        ("encounter", OTHER_ENCOUNTER),
    ],
    "AllergyIntolerance": [("patient", OTHER_PATIENT), ("encounter", OTHER_ENCOUNTER)],
    "MedicationStatement": [("subject", OTHER_PATIENT), ("context", OTHER_ENCOUNTER)],
    "Patient": [("id", "pat-1002")],
    "Task": [("id", "task-99"), ("for", OTHER_PATIENT), ("encounter", OTHER_ENCOUNTER)],
}
CASES = [(rtype, path, value) for rtype, moves in MOVES.items() for path, value in moves]
IDS = [f"{r}-{p}-{'removed' if v is None else i}" for i, (r, p, v) in enumerate(CASES)]
TYPE_OF_EVENT = {
    "Observation": "vitals.recorded",
    "QuestionnaireResponse": "intake.completed",
    "DocumentReference": "note.signed",
    "Condition": "problem.confirmed",
    "AllergyIntolerance": "allergy.recorded",
    "MedicationStatement": "medication.reconciled",
    "Patient": "demographics.updated",
    "Task": "referral.status_changed",
}
assert set(TYPE_OF_EVENT.values()) == set(EVENT_TYPES)


def moved(resource: dict, path: str, value) -> dict:
    out = copy.deepcopy(resource)
    if value is None:
        out.pop(path, None)
    else:
        out[path] = value
    return out


@pytest.fixture
def written(api, tenant, clinician):
    """`written(resource_type)`: the first write of an event of that type, failed for good at the target
    (what an operator replays)."""
    consent_for(tenant)

    def _make(resource_type: str) -> Write:
        r = api.post("/api/v1/events", event(TYPE_OF_EVENT[resource_type]), format="json")
        assert r.status_code == 201, r.json()
        write = Write.objects.select_related("tenant", "event").get(uid=r.json()["writes"][0]["id"])
        if write.state == WriteState.AWAITING_APPROVAL:
            Write.objects.filter(pk=write.pk).update(state=WriteState.PENDING)
            write.refresh_from_db()
        return failed(write)

    return _make


# -- the rule, on its own -----------------------------------------------------------------------------


@pytest.mark.parametrize(("rtype", "path", "value"), CASES, ids=IDS)
def test_every_move_is_a_binding_change(written, rtype, path, value):
    write = written(rtype)
    payload = moved(write.payload, path, value)
    assert binding_changes(write.payload, payload), (path, value)
    assert binding_changes(write.payload, copy.deepcopy(write.payload)) == []
    # The worker's check, which knows only the write's patient and encounter, sees every move that
    # points elsewhere; a removal, a Task's id and an identifier added beside the same reference are
    # caught by the comparison with the original above.
    mismatch = binding_mismatch(
        payload, patient_ref=write.patient_ref, encounter_ref=write.event.encounter_ref
    )
    points_elsewhere = value is not None and path != "id" or rtype == "Patient"
    if isinstance(value, dict) and value.get("reference") == "Patient/pat-1001":
        points_elsewhere = False
    assert bool(mismatch) == points_elsewhere, mismatch


def test_display_and_clinical_fields_are_not_binding(written):
    write = written("Condition")
    payload = copy.deepcopy(write.payload)
    payload["subject"]["display"] = "Jane Doe"
    payload["note"] = [{"text": "edited"}]
    assert binding_changes(write.payload, payload) == []


# -- edited replay ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rtype", "path", "value"), CASES, ids=IDS)
def test_an_edited_replay_cannot_move_a_write(written, admin_user, tenant, rtype, path, value):
    from tests.conftest import api_client_for

    write = written(rtype)
    before = (Write.objects.count(), list(Write.objects.values_list("pk", "state")))
    r = api_client_for(admin_user, tenant).post(
        f"/api/v1/writes/{write.uid}/replay",
        {"mode": "edit", "payload": moved(write.payload, path, value), "reason": "fix"},
        format="json",
    )
    assert r.status_code == 403 and _code(r) == "patient-binding", r.json()
    assert (Write.objects.count(), list(Write.objects.values_list("pk", "state"))) == before
    (refusal,) = binding_refusals()
    assert refusal.actor == "ada.admin" and refusal.object_id == str(write.uid)
    assert refusal.data["action"] == "replay"
    assert "belongs to one patient and encounter" in refusal.data["reason"]
    assert not AuditEntry.objects.filter(action="write.replayed").exists()


def test_an_edited_replay_that_keeps_the_binding_goes_through(written, admin_user, tenant):
    from tests.conftest import api_client_for

    write = written("Condition")
    payload = copy.deepcopy(write.payload)
    payload["note"] = [{"text": "confirmed at visit (typo fixed)"}]
    r = api_client_for(admin_user, tenant).post(
        f"/api/v1/writes/{write.uid}/replay", {"mode": "edit", "payload": payload}, format="json"
    )
    assert r.status_code == 202, r.json()
    new = Write.objects.get(uid=r.json()["id"])
    assert new.patient_ref == write.patient_ref and new.payload["subject"] == write.payload["subject"]
    assert WriteEditor.objects.filter(write=new, user=admin_user, how="edit").exists()
    assert not binding_refusals()


def test_the_console_refuses_the_same_edit(written, admin_user):
    write = written("Condition")
    r = client_for(admin_user).post(
        f"/writes/{write.uid}/replay/run",
        {
            "mode": "edit",
            "payload": json.dumps(moved(write.payload, "subject", OTHER_PATIENT)),
            "reason": "wrong patient?",
        },
    )
    assert r.status_code == 403
    assert b"belongs to one patient and encounter" in r.content
    assert Write.objects.count() == 1
    assert binding_refusals()[0].data["channel"] == "console"


# -- conflict resolution ------------------------------------------------------------------------------


@pytest.mark.parametrize("choice", ["theirs", "value"])
def test_a_conflict_resolution_cannot_move_a_write(written, clinician2, choice):
    """A conflict whose rows include the subject (a hostile or broken diff): choosing the EHR's subject
    or typing one is refused alike."""
    write = written("Condition")
    Write.objects.filter(pk=write.pk).update(state=WriteState.PENDING)
    write.refresh_from_db()
    theirs = moved(write.payload, "subject", OTHER_PATIENT)
    write, conflict = conflicted(write, theirs=theirs, base=write.payload)
    index = next(i for i, row in enumerate(conflict.diff) if row["path"] == "subject")
    form = {f"choice-{index}": choice}
    if choice == "value":
        form[f"value-{index}"] = json.dumps(OTHER_PATIENT)
    r = client_for(clinician2).post(f"/conflicts/{conflict.uid}/resolve", form)
    assert r.status_code == 403
    conflict.refresh_from_db()
    assert conflict.resolved_at is None and Conflict.objects.get(pk=conflict.pk).resolution_write is None
    assert Write.objects.count() == 1 and Write.objects.get().state == WriteState.CONFLICT
    assert binding_refusals()[0].data["action"] == "resolve_conflict"


# -- correction ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rtype", "data"),
    [
        ("Condition", {"subject": OTHER_PATIENT}),
        ("Condition", {"encounter": OTHER_ENCOUNTER}),
        ("Condition", {"subject": None}),
        ("DocumentReference", {"context": {"encounter": [OTHER_ENCOUNTER]}}),
        ("MedicationStatement", {"context": OTHER_ENCOUNTER}),
    ],
)
def test_a_correction_cannot_move_an_entry(written, clinician2, tenant, rtype, data):
    from tests.conftest import api_client_for

    write = committed(_pending_again(written(rtype)), resource_id="r-1", version="1")
    events_before = BusinessEvent.objects.count()
    r = api_client_for(clinician2, tenant).post(
        f"/api/v1/writes/{write.uid}/compensate",
        {"kind": "correction", "reason": "wrong chart", "data": data},
        format="json",
    )
    assert r.status_code == 403 and _code(r) == "patient-binding", r.json()
    assert not Compensation.objects.exists() and BusinessEvent.objects.count() == events_before
    assert Write.objects.get(pk=write.pk).state == WriteState.COMMITTED
    assert binding_refusals()[0].data["action"] == "correction"


def _pending_again(write: Write) -> Write:
    # Queued again (as a resend does), so the worker's Recorder can commit it.
    Write.objects.filter(pk=write.pk).update(state=WriteState.PENDING)
    write.refresh_from_db()
    return write


# -- the worker: defence in depth ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "path", "value"),
    [
        ("problem.confirmed", "subject", OTHER_PATIENT),
        ("problem.confirmed", "encounter", OTHER_ENCOUNTER),
        ("note.signed", "context", {"encounter": [OTHER_ENCOUNTER]}),
        ("demographics.updated", "id", "pat-1002"),
    ],
)
def test_a_payload_altered_in_the_database_never_goes_out(live, sim, api, event_type, path, value):
    r = api.post("/api/v1/events", event(event_type), format="json")
    write = Write.objects.get(uid=r.json()["writes"][0]["id"])
    payload = moved(write.payload, path, value)
    Write.objects.filter(pk=write.pk).update(payload=payload)  # someone with database access
    patients = copy.deepcopy(sim.resources("Patient"))
    drain()
    write.refresh_from_db()
    assert write.state == WriteState.FAILED_TERMINAL
    assert write.last_error.startswith("patient-binding: patient binding check before sending failed")
    assert not write.attempts_log.exclude(method="").exists()  # not one request for it
    assert sim.count_by_identifier("urn:fhir-writeback:write-id") == {}
    assert sim.resources("Patient") == patients
    entry = AuditEntry.objects.filter(write_uid=str(write.uid), action="write.transition").last()
    assert entry.data["to"] == "failed_terminal" and entry.data["code"] == "patient-binding"
