"""Approving and rejecting high-risk writes from the queue and the write page."""

import pytest

from tests.console.conftest import HTMX, audit_actions, client_for, refusals
from writeback.models import Approval
from writeback.states import WriteState

pytestmark = pytest.mark.django_db


@pytest.fixture
def med(make):
    write = make("medication.reconciled")
    assert write.state == WriteState.AWAITING_APPROVAL
    return write


def test_the_queue_shows_a_readable_clinical_summary_and_the_expiry(med, clinician2, settings):
    settings.WRITEBACK_APPROVAL_TTL_HOURS = 12
    r = client_for(clinician2).get("/approvals/")
    assert r.status_code == 200
    assert "Amlodipine 5 MG Oral Tablet — continue — 5 mg by mouth once daily" in r.content.decode()
    assert b"12 h after it is given" in r.content
    assert f"/writes/{med.uid}/approve".encode() in r.content


def test_a_second_clinician_approves_from_the_queue(med, clinician2):
    r = client_for(clinician2).post(f"/writes/{med.uid}/approve", {"rationale": "Reviewed.", "from": "queue"})
    assert r.status_code == 302 and r.url == "/approvals/"
    med.refresh_from_db()
    assert med.state == WriteState.PENDING
    approval = Approval.objects.get(write=med)
    assert approval.approver == clinician2
    assert approval.decision == Approval.Decision.APPROVED
    assert approval.payload_hash == med.payload_hash
    assert "write.approved" in audit_actions(write_uid=str(med.uid))


def test_approving_with_htmx_answers_the_updated_card(med, clinician2):
    r = client_for(clinician2).post(
        f"/writes/{med.uid}/approve", {"rationale": "Reviewed.", "from": "queue"}, **HTMX
    )
    assert r.status_code == 200
    body = r.content.decode()
    assert f'id="approval-{med.uid}"' in body
    assert "Approved: queued to send" in body
    assert 'hx-swap-oob="true"' in body  # the message region travels with it


def test_rejecting_from_the_write_page(med, clinician2):
    r = client_for(clinician2).post(f"/writes/{med.uid}/reject", {"rationale": "Wrong patient."})
    assert r.status_code == 302 and r.url == f"/writes/{med.uid}/"
    med.refresh_from_db()
    assert med.state == WriteState.REJECTED
    assert Approval.objects.get(write=med).decision == Approval.Decision.REJECTED


def test_the_initiator_cannot_approve_and_the_page_says_why(med, clinician):
    c = client_for(clinician)
    page = c.get("/approvals/").content.decode()
    assert (
        "You initiated this change, so a second clinician must approve or reject it (four-eyes rule)" in page
    )
    assert f"/writes/{med.uid}/approve" not in page
    detail = c.get(f"/writes/{med.uid}/").content.decode()
    assert "a second clinician must approve or reject it (four-eyes rule)" in detail
    r = c.post(f"/writes/{med.uid}/approve", {"rationale": "mine"})
    assert r.status_code == 403
    assert b"four eyes" in r.content
    med.refresh_from_db()
    assert med.state == WriteState.AWAITING_APPROVAL
    assert not Approval.objects.exists()
    assert refusals(rule="four-eyes", action="approve")


@pytest.mark.parametrize("persona", ["admin_user", "engineer", "auditor"])
@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_other_roles_are_refused_and_audited(request, med, persona, decision):
    person = request.getfixturevalue(persona)
    r = client_for(person).post(f"/writes/{med.uid}/{decision}", {"rationale": "x"})
    assert r.status_code == 403
    assert b"needs the role clinician" in r.content
    med.refresh_from_db()
    assert med.state == WriteState.AWAITING_APPROVAL
    assert refusals(action=decision, rule="role-required", channel="console")


def test_a_missing_rationale_is_a_form_error_not_a_decision(med, clinician2):
    c = client_for(clinician2)
    r = c.post(f"/writes/{med.uid}/approve", {"rationale": "  ", "from": "queue"}, **HTMX)
    assert r.status_code == 422
    assert b"A rationale is required" in r.content
    r = c.post(f"/writes/{med.uid}/approve", {"rationale": ""}, **HTMX)
    assert r.status_code == 422 and b'id="write-main"' in r.content
    med.refresh_from_db()
    assert med.state == WriteState.AWAITING_APPROVAL
    assert not Approval.objects.exists()


def test_deciding_twice_gives_a_clear_message(med, clinician2, admin_user):
    c = client_for(clinician2)
    c.post(f"/writes/{med.uid}/approve", {"rationale": "ok"})
    r = c.post(
        f"/writes/{med.uid}/reject", {"rationale": "changed my mind"}, HTTP_REFERER=f"/writes/{med.uid}/"
    )
    assert r.status_code == 302
    follow = c.get(r.url)
    assert b"not awaiting approval" in follow.content
    assert Approval.objects.filter(write=med).count() == 1
    r = c.post(f"/writes/{med.uid}/reject", {"rationale": "again"}, **HTMX)
    assert r.status_code == 409 and r["HX-Retarget"] == "#flash"


def test_the_chart_comparison_reads_the_ehr(live, api, clinician2, sim):
    from tests.writeback.sync.conftest import post

    med = post(api, "medication.reconciled", key="chart-1")[0]
    r = client_for(clinician2).post(f"/writes/{med.uid}/chart", **HTMX)
    assert r.status_code == 200
    assert b"Current chart" in r.content
