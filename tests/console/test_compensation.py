"""Technical rollback and clinical correction: separate flows, labels and permissions; manual tasks."""

import json

import pytest

from tests.console.conftest import audit_actions, client_for, committed, refusals
from writeback.models import Compensation, ManualTask, Write
from writeback.states import WriteState

pytestmark = pytest.mark.django_db


@pytest.fixture
def note(make):
    return committed(make("note.signed"), resource_id="doc-7", version="1")


def test_rollback_shows_the_original_and_the_compensating_action(note, admin_user):
    r = client_for(admin_user).get(f"/writes/{note.uid}/rollback")
    assert r.status_code == 200
    body = r.content.decode()
    assert "Technical rollback" in body
    assert "Mark DocumentReference/doc-7 entered-in-error (If-Match version 1)." in body
    assert "note.signed" in body and "Progress note" in body
    assert 'name="confirm"' in body and 'name="reason"' in body


@pytest.mark.parametrize("persona", ["admin_user", "engineer"])
def test_admins_and_engineers_roll_back(request, note, persona):
    person = request.getfixturevalue(persona)
    r = client_for(person).post(
        f"/writes/{note.uid}/rollback/confirm", {"reason": "Wrong encounter.", "confirm": "on"}
    )
    assert r.status_code == 302 and r.url == f"/writes/{note.uid}/"
    comp = Compensation.objects.get(original_write=note)
    assert comp.kind == Compensation.Kind.ROLLBACK
    assert comp.requested_by == person
    undo = Write.objects.get(compensation=comp)
    assert undo.state == WriteState.PENDING
    assert undo.payload["status"] == "entered-in-error"
    assert "write.rollback_requested" in audit_actions(write_uid=str(note.uid))


@pytest.mark.parametrize("persona", ["clinician2", "auditor"])
def test_other_roles_cannot_roll_back(request, note, persona):
    c = client_for(request.getfixturevalue(persona))
    assert c.get(f"/writes/{note.uid}/rollback").status_code == 403
    r = c.post(f"/writes/{note.uid}/rollback/confirm", {"reason": "x", "confirm": "on"})
    assert r.status_code == 403
    assert not Compensation.objects.exists()
    assert len(refusals(action="rollback", channel="console")) == 2


def test_rollback_needs_a_reason_and_confirmation(note, admin_user):
    r = client_for(admin_user).post(f"/writes/{note.uid}/rollback/confirm", {"reason": "oops"})
    assert r.status_code == 422
    assert b"This field is required" in r.content
    assert not Compensation.objects.exists()


def test_a_clinician_corrects_a_value_after_seeing_the_compensating_requests(note, clinician2):
    c = client_for(clinician2)
    r = c.get(f"/writes/{note.uid}/correction")
    assert r.status_code == 200
    assert "Clinical correction" in r.content.decode()
    assert "&quot;description&quot;" in r.content.decode()  # prefilled with the written elements
    data = json.dumps({"description": "Progress note (corrected)"})
    r = c.post(f"/writes/{note.uid}/correction", {"data": data, "reason": "Wrong title."})
    assert r.status_code == 200
    assert b"Create a corrected note that replaces DocumentReference/doc-7." in r.content
    assert not Compensation.objects.exists()
    r = c.post(
        f"/writes/{note.uid}/correction/confirm", {"data": data, "reason": "Wrong title.", "confirm": "on"}
    )
    assert r.status_code == 302
    comp = Compensation.objects.get(original_write=note)
    assert comp.kind == Compensation.Kind.CORRECTION
    corrected = Write.objects.get(compensation=comp)
    assert corrected.payload["description"] == "Progress note (corrected)"
    assert corrected.payload["relatesTo"][0]["code"] == "replaces"
    assert "write.correction_requested" in audit_actions(write_uid=str(note.uid))


def test_a_correction_with_bad_json_is_a_form_error(note, clinician2):
    r = client_for(clinician2).post(f"/writes/{note.uid}/correction", {"data": "{status: x}", "reason": "x"})
    assert r.status_code == 422
    assert b"is not valid JSON" in r.content
    r = client_for(clinician2).post(f"/writes/{note.uid}/correction", {"data": "[1, 2]", "reason": "x"})
    assert r.status_code == 422 and b"must be a JSON object" in r.content


@pytest.mark.parametrize("persona", ["admin_user", "engineer", "auditor"])
def test_only_clinicians_correct(request, note, persona):
    c = client_for(request.getfixturevalue(persona))
    assert c.get(f"/writes/{note.uid}/correction").status_code == 403
    r = c.post(
        f"/writes/{note.uid}/correction/confirm",
        {"data": '{"description": "x"}', "reason": "x", "confirm": "on"},
    )
    assert r.status_code == 403
    assert not Compensation.objects.exists()
    assert refusals(action="correction", rule="role-required")


def test_the_write_page_offers_each_role_its_own_undo(note, admin_user, clinician2, auditor):
    admin_page = client_for(admin_user).get(f"/writes/{note.uid}/").content.decode()
    assert "Technical rollback…" in admin_page and "Clinical correction…" not in admin_page
    assert "Clinical correction is for clinicians." in admin_page
    clinician_page = client_for(clinician2).get(f"/writes/{note.uid}/").content.decode()
    assert "Clinical correction…" in clinician_page and "Technical rollback…" not in clinician_page
    auditor_page = client_for(auditor).get(f"/writes/{note.uid}/").content.decode()
    assert "Technical rollback…" not in auditor_page and "FHIR AuditEvent + Provenance" in auditor_page


def test_a_second_rollback_of_the_same_write_is_refused_with_a_message(note, admin_user):
    c = client_for(admin_user)
    c.post(f"/writes/{note.uid}/rollback/confirm", {"reason": "one", "confirm": "on"})
    r = c.post(
        f"/writes/{note.uid}/rollback/confirm",
        {"reason": "two", "confirm": "on"},
        HTTP_REFERER=f"http://testserver/writes/{note.uid}/rollback",
    )
    assert r.status_code == 302
    assert Compensation.objects.count() == 1


@pytest.fixture
def task(note):
    return ManualTask.objects.create(
        tenant=note.tenant,
        write=note,
        role="clinician",
        title="Mark the note entered-in-error in the EHR",
        instructions="Open the chart, find the note, choose 'Entered in error'.",
    )


def test_manual_tasks_are_listed_and_confirmed(task, clinician2):
    c = client_for(clinician2)
    assert b"Mark the note entered-in-error in the EHR" in c.get("/tasks/").content
    r = c.post(f"/tasks/{task.uid}/confirm", {"note": "Done in the chart at 10:02."})
    assert r.status_code == 302
    task.refresh_from_db()
    assert task.status == ManualTask.Status.DONE
    assert task.confirmed_by == clinician2
    assert "manual_task.confirmed" in audit_actions(object_id=str(task.uid))


def test_a_task_needs_a_note_and_a_role(task, auditor, engineer):
    r = client_for(engineer).post(f"/tasks/{task.uid}/confirm", {"note": ""})
    assert r.status_code == 302
    task.refresh_from_db()
    assert task.status == ManualTask.Status.OPEN
    r = client_for(auditor).post(f"/tasks/{task.uid}/confirm", {"note": "done"})
    assert r.status_code == 403
    task.refresh_from_db()
    assert task.status == ManualTask.Status.OPEN
    assert refusals(action="confirm_manual_task")
