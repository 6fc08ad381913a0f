"""Rollback and correction: compensating writes (never a delete), distinct audit actions, links."""

import base64

import pytest

from tests.writeback.sync.conftest import drain, ours, post
from writeback.errors import DomainError
from writeback.models import AuditEntry, BusinessEvent, Compensation, Write
from writeback.services.compensation import write_compensate
from writeback.services.permissions import ActionRefused
from writeback.states import WriteState


def _committed(api, event_type, **data):
    writes = post(api, event_type, **data)
    drain()
    for w in writes:
        w.refresh_from_db()
        assert w.state == WriteState.COMMITTED
    return writes


def test_rollback_marks_the_resource_entered_in_error_and_compensates_the_original(
    live, sim, api, admin_user
):
    original = _committed(api, "problem.confirmed")[0]
    comp = write_compensate(
        write=original, user=admin_user, kind="rollback", reason="sent to the wrong chart"
    )
    assert comp.kind == "rollback" and comp.status == "queued"
    event = comp.event
    assert event.type == "compensation.rollback" and event.kind == "rollback"
    assert event.compensates_id == original.event_id and event.correlation_id == original.correlation_id
    compensating = comp.writes.get()
    assert compensating.compensates_id == original.pk and compensating.operation == "compensate"
    drain()
    compensating.refresh_from_db()
    original.refresh_from_db()
    assert compensating.state == WriteState.COMMITTED
    assert original.state == WriteState.COMPENSATED
    stored = next(c for c in sim.resources("Condition") if c["id"] == original.target_resource_id)
    assert stored["verificationStatus"]["coding"][0]["code"] == "entered-in-error"
    assert len(sim.resources("Condition")) == 1  # never deleted, never duplicated
    comp.refresh_from_db()
    assert comp.status == "done"
    assert (
        AuditEntry.objects.filter(action="write.rollback_requested", write_uid=str(original.uid)).count() == 1
    )


def test_correction_of_a_note_supersedes_it_with_relates_to_replaces(live, sim, api, clinician2):
    original = _committed(api, "note.signed")[0]
    comp = write_compensate(
        write=original,
        user=clinician2,
        kind="correction",
        reason="wrong dose in the note",
        data={"text": "Patient seen for follow-up; amlodipine 5 mg."},
    )
    assert comp.event.type == "compensation.correction"
    drain()
    original.refresh_from_db()
    assert original.state == WriteState.SUPERSEDED
    docs = {d["id"]: d for d in sim.resources("DocumentReference")}
    new = next(d for d in docs.values() if d["id"] != original.target_resource_id)
    assert new["relatesTo"][0]["code"] == "replaces"
    assert new["relatesTo"][0]["target"]["reference"].endswith(original.target_resource_id)
    assert (
        base64.b64decode(new["content"][0]["attachment"]["data"])
        .decode()
        .startswith("Patient seen for follow")
    )
    assert AuditEntry.objects.filter(action="write.correction_requested").count() == 1


def test_rollback_of_demographics_restores_the_previous_values(live, sim, api, engineer):
    before = next(p for p in sim.resources("Patient") if p["id"] == "pat-1001")
    original = _committed(api, "demographics.updated", base_version=before["meta"]["versionId"])[0]
    assert next(p for p in sim.resources("Patient") if p["id"] == "pat-1001")["telecom"] != before["telecom"]
    write_compensate(write=original, user=engineer, kind="rollback", reason="test data sent to production")
    drain()
    after = next(p for p in sim.resources("Patient") if p["id"] == "pat-1001")
    assert after["telecom"] == before["telecom"] and after["address"] == before["address"]
    original.refresh_from_db()
    assert original.state == WriteState.COMPENSATED


def test_rollback_is_for_admins_and_engineers_correction_for_clinicians(
    live, sim, api, clinician2, admin_user
):
    original = _committed(api, "problem.confirmed")[0]
    with pytest.raises(ActionRefused):
        write_compensate(write=original, user=clinician2, kind="rollback", reason="x")
    with pytest.raises(ActionRefused):
        write_compensate(write=original, user=admin_user, kind="correction", reason="x", data={"note": []})
    assert Compensation.objects.count() == 0
    assert AuditEntry.objects.filter(action="access.refused").count() == 2


def test_only_committed_writes_are_compensated_and_only_once(live, sim, api, admin_user):
    original = _committed(api, "problem.confirmed")[0]
    write_compensate(write=original, user=admin_user, kind="rollback", reason="first")
    with pytest.raises(DomainError, match="already"):
        write_compensate(write=original, user=admin_user, kind="rollback", reason="second")
    pending = post(api, "problem.confirmed", key="p2", note="x")[0]
    with pytest.raises(DomainError, match="committed"):
        write_compensate(write=pending, user=admin_user, kind="rollback", reason="x")


def test_a_rollback_that_meets_a_newer_edit_becomes_a_conflict(live, sim, api, admin_user):
    original = _committed(api, "problem.confirmed")[0]
    sim.edit("Condition", original.target_resource_id, {"note": [{"text": "clinician edited"}]})
    comp = write_compensate(write=original, user=admin_user, kind="rollback", reason="wrong patient")
    drain()
    compensating = comp.writes.get()
    assert compensating.state == WriteState.CONFLICT
    original.refresh_from_db()
    assert original.state == WriteState.COMMITTED  # not compensated until a person reconciles


def test_the_amended_note_supersedes_the_original_once_sent(live, sim, api):
    first = _committed(api, "note.signed", key="n1")[0]
    amended = post(api, "note.signed", key="n2", text="Amended text", amends="n1")[0]
    drain()
    amended.refresh_from_db()
    first.refresh_from_db()
    assert amended.state == WriteState.COMMITTED and first.state == WriteState.SUPERSEDED
    stored = next(d for d in sim.resources("DocumentReference") if d["id"] == amended.target_resource_id)
    assert stored["relatesTo"][0]["target"]["reference"] == f"DocumentReference/{first.target_resource_id}"


def test_two_phase_referral_prepare_commit_and_compensate(live, sim, api, engineer):
    original = post(api, "referral.status_changed", task_id="task-1001")[0]
    drain()
    original.refresh_from_db()
    assert original.state == WriteState.COMMITTED and original.phase == "committed"
    assert original.context["previous_status"] == "requested"
    assert AuditEntry.objects.filter(action="write.prepared", write_uid=str(original.uid)).count() == 1
    task = next(t for t in sim.resources("Task") if t["id"] == "task-1001")
    assert task["status"] == "accepted"
    # The internal side failed after the EHR committed: the compensating event restores the status.
    write_compensate(write=original, user=engineer, kind="rollback", reason="referral system rejected it")
    drain()
    task = next(t for t in sim.resources("Task") if t["id"] == "task-1001")
    assert task["status"] == "requested"
    original.refresh_from_db()
    assert original.state == WriteState.COMPENSATED
    assert BusinessEvent.objects.filter(type="compensation.rollback").count() == 1


def test_referral_whose_task_moved_is_a_conflict_not_an_overwrite(live, sim, api):
    sim.edit("Task", "task-1001", {"status": "rejected"})
    writes = post(api, "referral.status_changed", task_id="task-1001")
    drain()
    assert Write.objects.get(pk=writes[0].pk).state == WriteState.CONFLICT
    assert next(t for t in sim.resources("Task") if t["id"] == "task-1001")["status"] == "rejected"


def test_compensation_plans_never_delete(live, sim, api, admin_user):
    _committed(api, "vitals.recorded")
    for w in Write.objects.filter(state=WriteState.COMMITTED):
        write_compensate(write=w, user=admin_user, kind="rollback", reason="device miscalibrated")
    drain()
    assert not [r for r in sim.requests(200) if r["method"] == "DELETE"]
    assert len(ours(sim)) == 6
    assert {o["status"] for o in sim.resources("Observation")} == {"entered-in-error"}


def test_a_two_phase_abort_after_the_ehr_committed_restores_the_previous_status(live, sim, api, app_user):
    """The client app's own side failed after the EHR side committed: the app aborts (no console role
    needed: the app that sent the event may undo it), and a compensating write restores the status."""
    from writeback.services.two_phase import two_phase_abort

    original = _committed(api, "referral.status_changed", task_id="task-1001")[0]
    assert next(t for t in sim.resources("Task") if t["id"] == "task-1001")["status"] == "accepted"
    done = two_phase_abort(write=original, user=app_user, reason="referral system rejected it")
    assert done["outcome"] == "compensating"
    comp = Compensation.objects.get(uid=done["compensation"])
    assert comp.kind == "rollback" and comp.original_write_id == original.pk
    requested = AuditEntry.objects.get(action="write.rollback_requested", write_uid=str(original.uid))
    assert requested.data["cause"] == "two_phase_abort"
    drain()
    assert next(t for t in sim.resources("Task") if t["id"] == "task-1001")["status"] == "requested"
    original.refresh_from_db()
    assert original.state == WriteState.COMPENSATED and original.phase == "compensated"


def test_a_two_phase_abort_before_sending_closes_the_write_and_sends_nothing(live, sim, api, app_user):
    from writeback.services.two_phase import two_phase_abort

    original = post(api, "referral.status_changed", task_id="task-1001")[0]
    done = two_phase_abort(write=original, user=app_user, reason="referral system down")
    assert done == {"outcome": "cancelled", "state": WriteState.RESOLVED}
    drain()
    original.refresh_from_db()
    assert original.state == WriteState.RESOLVED
    assert next(t for t in sim.resources("Task") if t["id"] == "task-1001")["status"] == "requested"
    assert not [r for r in sim.requests(100) if r["method"] in ("PUT", "PATCH", "POST")]


def test_a_two_phase_abort_waits_while_the_outcome_is_unknown_or_a_worker_holds_it(live, sim, api, app_user):
    from writeback.services.two_phase import two_phase_abort
    from writeback.sync.claim import claim_due

    original = post(api, "referral.status_changed", task_id="task-1001")[0]
    claim_due("worker:busy", 10)
    with pytest.raises(DomainError) as held:
        two_phase_abort(write=original, user=app_user, reason="x")
    assert held.value.status == 409 and held.value.rule == "in-flight"
    Write.objects.filter(pk=original.pk).update(state=WriteState.OUTCOME_UNKNOWN, lease_owner="")
    with pytest.raises(DomainError) as unknown:
        two_phase_abort(write=original, user=app_user, reason="x")
    assert unknown.value.rule == "outcome-unknown"
    assert Write.objects.get(pk=original.pk).state == WriteState.OUTCOME_UNKNOWN


def test_only_two_phase_writes_can_be_aborted(live, sim, api, app_user):
    from writeback.services.two_phase import two_phase_abort

    problem = _committed(api, "problem.confirmed")[0]
    with pytest.raises(DomainError) as refused:
        two_phase_abort(write=problem, user=app_user, reason="x")
    assert refused.value.rule == "not-two-phase"
    assert not Compensation.objects.exists()
