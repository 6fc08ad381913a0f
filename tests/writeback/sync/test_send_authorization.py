"""Authorisation checked again just before sending.

A queued write whose initiator or submitter was deactivated or lost the tenant, whose API token was
revoked, or whose approver lost their authority is held (`held_authorization`, with the reason), never
sent and never lost: a clinician who shaped nothing re-approves it (then it goes) or rejects it, or an
admin resolves it. Every hold is audited.
"""

import pytest

from tests.conftest import api_client_for
from tests.console.conftest import client_for
from tests.writeback.helpers import event
from tests.writeback.sync.conftest import drain, ours, post
from writeback.models import ApiToken, Approval, AuditEntry, Write, WriteAttempt
from writeback.services.approvals import write_approve
from writeback.services.tenants import tenant_create, tenant_revoke
from writeback.services.tokens import api_token_revoke
from writeback.states import WriteState

pytestmark = pytest.mark.django_db


def _deactivate(user) -> None:
    user.is_active = False
    user.save(update_fields=["is_active"])


def held(write: Write, rule: str) -> Write:
    """Asserts the write was held, not sent, with the reason on it and in the audit trail."""
    write.refresh_from_db()
    assert write.state == WriteState.HELD_AUTHORIZATION, (write.state, write.last_error)
    assert write.last_error.startswith(f"{rule}: ")
    assert write.context["held_authorization"]["rule"] == rule
    (entry,) = AuditEntry.objects.filter(action="write.held_authorization", write_uid=str(write.uid))
    assert entry.data["rule"] == rule and entry.actor.startswith("worker:")
    attempt = write.attempts_log.get(outcome=WriteAttempt.Outcome.HELD)
    assert attempt.method == "" and "authorisation check before sending failed" in attempt.error
    return write


@pytest.fixture
def queued(live, api):
    """A pending Condition write posted by the client app in amy's name (nothing sent yet)."""
    (write,) = post(api, "problem.confirmed")
    assert write.state == WriteState.PENDING
    return write


def _lapse(kind: str, *, clinician, app_user, tenant) -> str:
    if kind == "initiator-deactivated":
        _deactivate(clinician)
        return "initiator-lapsed"
    if kind == "initiator-ungranted":
        tenant_revoke(tenant=tenant, user=clinician)
        return "initiator-lapsed"
    if kind == "submitter-deactivated":
        _deactivate(app_user)
        return "submitter-lapsed"
    if kind == "token-revoked":
        for token in ApiToken.objects.filter(user=app_user):
            api_token_revoke(token=token)
        return "token-revoked"
    if kind == "token-unscoped":
        elsewhere = tenant_create(slug="elsewhere", vendor="generic", base_url="http://127.0.0.1:9/fhir")
        ApiToken.objects.get(user=app_user).tenants.set([elsewhere])
        return "token-lapsed"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "initiator-deactivated",
        "initiator-ungranted",
        "submitter-deactivated",
        "token-revoked",
        "token-unscoped",
    ],
)
def test_a_lapsed_authority_holds_the_write_and_nothing_is_sent(queued, sim, clinician, app_user, live, kind):
    rule = _lapse(kind, clinician=clinician, app_user=app_user, tenant=live)
    drain()
    write = held(queued, rule)
    assert ours(sim) == {}
    # Never lost, never sent on its own: another pass of the worker leaves it where it is.
    drain()
    write.refresh_from_db()
    assert write.state == WriteState.HELD_AUTHORIZATION and ours(sim) == {}


def test_a_held_write_keeps_the_rest_of_its_stream_waiting(live, sim, api, clinician):
    first = post(api, "problem.confirmed", key="first")[0]
    _deactivate(clinician)
    drain()
    held(first, "initiator-lapsed")
    clinician.is_active = True
    clinician.save(update_fields=["is_active"])
    second = post(api, "problem.confirmed", key="second", note="a later visit")[0]
    drain()
    second.refresh_from_db()
    assert second.state == WriteState.PENDING  # behind the held one: event order holds
    assert ours(sim) == {}


def test_an_approver_who_lost_authority_voids_the_approval(live, sim, api, clinician2):
    (write,) = post(api, "medication.reconciled")
    approval = write_approve(write=write, user=clinician2, rationale="reviewed")
    _deactivate(clinician2)
    drain()
    held(write, "approver-lapsed")
    approval.refresh_from_db()
    assert approval.voided_at is not None and "approver bob.clinician is deactivated" in approval.void_reason
    assert ours(sim) == {}


def test_a_reapproval_answers_for_the_write_and_it_is_sent(queued, sim, clinician, clinician2, live):
    _deactivate(clinician)
    drain()
    held(queued, "initiator-lapsed")
    c = api_client_for(clinician2, live)
    r = c.post(
        f"/api/v1/writes/{queued.uid}/approve", {"rationale": "I answer for this entry"}, format="json"
    )
    assert r.status_code == 200 and r.json()["state"] == "pending", r.json()
    approval = Approval.objects.get(write=queued)
    assert approval.reauthorizes and approval.approver == clinician2
    drain()
    queued.refresh_from_db()
    assert queued.state == WriteState.COMMITTED
    assert list(ours(sim).values()) == [1]
    assert (
        AuditEntry.objects.filter(action="write.approved", write_uid=str(queued.uid))
        .get()
        .data["reauthorizes"]
    )


def test_the_reapprover_is_checked_too(queued, sim, clinician, clinician2, live):
    _deactivate(clinician)
    drain()
    write_approve(write=held(queued, "initiator-lapsed"), user=clinician2, rationale="mine now")
    tenant_revoke(tenant=live, user=clinician2)
    drain()
    held_again = Write.objects.get(pk=queued.pk)
    assert held_again.state == WriteState.HELD_AUTHORIZATION
    assert held_again.context["held_authorization"]["rule"] == "approver-lapsed"
    assert ours(sim) == {}


def test_who_shaped_it_cannot_reapprove(live, sim, clinician, clinician2):
    """bob posts in his own name with his token, which is revoked before the write goes out: with a new
    token he still cannot re-approve what he submitted."""
    c = api_client_for(clinician2, live)
    body = event("problem.confirmed")
    del body["initiator"]
    r = c.post("/api/v1/events", body, format="json")
    write = Write.objects.get(uid=r.json()["writes"][0]["id"])
    api_token_revoke(token=ApiToken.objects.get(user=clinician2))
    drain()
    held(write, "token-revoked")
    r = api_client_for(clinician2, live).post(
        f"/api/v1/writes/{write.uid}/approve", {"rationale": "still mine"}, format="json"
    )
    assert r.status_code == 403 and r.json()["issue"][0]["details"]["coding"][0]["code"] == "four-eyes"
    write.refresh_from_db()
    assert write.state == WriteState.HELD_AUTHORIZATION and not Approval.objects.exists()


def test_a_held_write_is_rejected_or_resolved_never_replayed(
    live, sim, api, clinician, clinician2, admin_user
):
    first, second = post(api, "problem.confirmed", key="a")[0], post(api, "note.signed", key="b")[0]
    _deactivate(clinician)
    drain()
    held(first, "initiator-lapsed")
    held(second, "initiator-lapsed")
    admin = api_client_for(admin_user, live)
    replay = admin.post(
        f"/api/v1/writes/{first.uid}/replay", {"mode": "edit", "payload": first.payload}, format="json"
    )
    assert replay.status_code == 409
    rejected = api_client_for(clinician2, live).post(
        f"/api/v1/writes/{first.uid}/reject", {"rationale": "amy left; not ours to send"}, format="json"
    )
    assert rejected.status_code == 200 and rejected.json()["state"] == "rejected"
    resolved = admin.post(f"/api/v1/writes/{second.uid}/resolve", {"note": "entered by hand"}, format="json")
    assert resolved.status_code == 200 and resolved.json()["state"] == "resolved"
    drain()
    assert ours(sim) == {} and Write.objects.count() == 2


def test_the_console_shows_the_reason_and_what_a_person_can_do(
    queued, clinician, clinician2, admin_user, auditor
):
    _deactivate(clinician)
    drain()
    held(queued, "initiator-lapsed")
    page = client_for(clinician2).get(f"/writes/{queued.uid}/").content.decode()
    assert "Held before sending: its authorisation lapsed." in page
    assert "Initiator amy.clinician is deactivated" in page
    assert f"/writes/{queued.uid}/approve" in page and "Re-approve" in page
    assert f"/writes/{queued.uid}/resolve" not in page
    admin_page = client_for(admin_user).get(f"/writes/{queued.uid}/").content.decode()
    assert f"/writes/{queued.uid}/resolve" in admin_page and f"/writes/{queued.uid}/approve" not in admin_page
    auditor_page = client_for(auditor).get(f"/writes/{queued.uid}/").content.decode()
    assert "Held before sending" in auditor_page
    assert (
        f"/writes/{queued.uid}/approve" not in auditor_page
        and f"/writes/{queued.uid}/resolve" not in auditor_page
    )
    queue = client_for(clinician2).get("/approvals/").content.decode()
    assert str(queued.uid) in queue and "Re-approve" in queue
    r = client_for(clinician2).post(f"/writes/{queued.uid}/approve", {"rationale": "I answer for it"})
    assert r.status_code == 302
    queued.refresh_from_db()
    assert queued.state == WriteState.PENDING
