"""Separation of duties, tried by the people it constrains.

Nobody who shaped a payload (its initiator, its submitter, whoever edited it since) approves or rejects
it; a person never submits in someone else's name; only a client app holding the "submit on behalf"
permission names another initiator, and only a person of the same tenant who may submit events; a
client app aborts only the two-phase changes it sent itself. Every refusal is audited and writes
nothing.
"""

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from tests.conftest import api_client_for, granted_user, make_client_app
from tests.console.conftest import client_for, committed, conflicted, failed
from tests.writeback.helpers import consent_for, event
from writeback.errors import DomainError
from writeback.models import (
    Approval,
    AuditEntry,
    BusinessEvent,
    Compensation,
    ContractRule,
    Write,
    WriteEditor,
)
from writeback.services.approvals import payload_shapers, write_approve
from writeback.services.conflicts import conflict_resolve
from writeback.services.permissions import ActionRefused, grant_action_permission
from writeback.services.replay import write_replay
from writeback.services.tenants import tenant_grant
from writeback.states import WriteState

pytestmark = pytest.mark.django_db
URL = "/api/v1/events"


def _code(r) -> str:
    return r.json()["issue"][0]["details"]["coding"][0]["code"]


def refusals(**data) -> list[AuditEntry]:
    entries = AuditEntry.objects.filter(action="access.refused").order_by("seq")
    return [e for e in entries if all(e.data.get(k) == v for k, v in data.items())]


def _nothing_stored():
    assert BusinessEvent.objects.count() == 0 and Write.objects.count() == 0
    assert not AuditEntry.objects.filter(action__in=["event.received", "write.created"]).exists()


@pytest.fixture
def consented(tenant):
    consent_for(tenant)
    return tenant


# -- a person never submits in someone else's name ----------------------------------------------------


@pytest.mark.parametrize("how", ["token", "session"])
def test_a_clinician_cannot_post_in_a_colleagues_name_and_approve_it_herself(
    consented, clinician, clinician2, how
):
    """The hostile tester's walk: bob posts a very-high-risk medication naming amy, then approves it."""
    if how == "token":
        bob = api_client_for(clinician2, consented)
    else:
        bob = APIClient()
        bob.force_login(clinician2)
    body = event("medication.reconciled")  # names amy.clinician
    r = bob.post(URL, body, format="json")
    assert r.status_code == 403 and _code(r) == "initiator-forbidden"
    _nothing_stored()
    (refusal,) = refusals(rule="initiator-forbidden")
    assert refusal.actor == "bob.clinician" and refusal.object_id == "amy.clinician"
    assert refusal.tenant == "generic-main" and refusal.data["action"] == "submit_event"

    # In her own name the event goes in, and she still cannot approve it: she submitted it.
    del body["initiator"]
    r = bob.post(URL, body, format="json")
    assert r.status_code == 201, r.json()
    stored = BusinessEvent.objects.get()
    assert stored.initiator == clinician2 and stored.submitter == clinician2
    assert (stored.submitted_token is not None) == (how == "token")
    write = Write.objects.get()
    r = api_client_for(clinician2, consented).post(
        f"/api/v1/writes/{write.uid}/approve", {"rationale": "mine"}, format="json"
    )
    assert r.status_code == 403 and _code(r) == "four-eyes"
    assert Write.objects.get().state == WriteState.AWAITING_APPROVAL and not Approval.objects.exists()


def test_a_client_app_without_the_permission_names_nobody_else(consented, clinician):
    app = make_client_app("device-gateway", on_behalf=False)
    r = api_client_for(app, consented).post(URL, event("vitals.recorded"), format="json")
    assert r.status_code == 403 and _code(r) == "initiator-forbidden"
    assert "submit on behalf" in r.json()["issue"][0]["diagnostics"]
    _nothing_stored()
    assert refusals(rule="initiator-forbidden")[0].actor == "device-gateway"


def _initiator(kind: str, tenant, other_tenant):
    if kind == "unknown":
        return "mallory"
    if kind == "other-tenant":
        return granted_user(other_tenant, "olga.clinician", "clinician").username
    if kind == "auditor":
        return granted_user(tenant, "al.auditor", "auditor").username
    if kind == "admin":
        return granted_user(tenant, "ada.admin", "admin").username
    if kind == "inactive":
        user = granted_user(tenant, "ivy.clinician", "clinician")
        user.is_active = False
        user.save()
        return user.username
    if kind == "client-app":
        other_app = make_client_app("other-app")
        tenant_grant(tenant=tenant, user=other_app)
        return other_app.username
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["unknown", "other-tenant", "auditor", "admin", "inactive", "client-app"])
def test_on_behalf_names_only_a_person_of_the_tenant_who_may_submit(
    consented, other_tenant, api, clinician, kind
):
    body = event("problem.confirmed")
    body["initiator"] = {"user": _initiator(kind, consented, other_tenant)}
    r = api.post(URL, body, format="json")
    assert r.status_code == 403 and _code(r) == "initiator-forbidden"
    _nothing_stored()
    (refusal,) = refusals(rule="initiator-forbidden")
    assert refusal.actor == "intake-portal" and refusal.object_id == body["initiator"]["user"]


def test_on_behalf_of_a_clinician_of_the_tenant_records_both(consented, api, clinician, app_user):
    r = api.post(URL, event("problem.confirmed"), format="json")
    assert r.status_code == 201
    stored = BusinessEvent.objects.get()
    assert (stored.initiator, stored.submitter) == (clinician, app_user)
    assert stored.submitted_token.user == app_user
    received = AuditEntry.objects.get(action="event.received")
    assert received.data["initiator"] == "amy.clinician" and received.data["submitter"] == "intake-portal"
    assert received.data["token"] == stored.submitted_token.prefix
    assert payload_shapers(Write.objects.get()) == {clinician.pk: "initiated", app_user.pk: "submitted"}


def test_a_person_is_never_granted_submit_on_behalf(clinician, tenant):
    with pytest.raises(DomainError, match="not a client app's service account"):
        grant_action_permission(clinician, "submit_on_behalf", actor="tests")
    assert not clinician.user_permissions.exists()
    assert not AuditEntry.objects.filter(action="permission.granted").exists()
    body = event("problem.confirmed")
    body["initiator"] = {"user": granted_user(tenant, "cy.clinician", "clinician").username}
    consent_for(tenant)
    # A superuser is a person too.
    clinician.is_superuser = True
    clinician.save()
    r = api_client_for(clinician, tenant).post(URL, body, format="json")
    assert r.status_code == 403 and _code(r) == "initiator-forbidden"


def test_the_submitter_is_kept_from_approving_even_if_it_held_the_clinician_role(consented, clinician):
    """Made by hand past create_api_token's refusal: an account that posts as a client app and is a
    clinician too still cannot approve what it submitted."""
    odd = make_client_app("odd-app")
    odd.groups.add(Group.objects.get(name="clinician"))
    odd = type(odd).objects.get(pk=odd.pk)  # roles are read once per user object
    tenant_grant(tenant=consented, user=odd)
    r = api_client_for(odd, consented).post(URL, event("medication.reconciled"), format="json")
    assert r.status_code == 201
    write = Write.objects.get()
    with pytest.raises(ActionRefused, match="you submitted this change"):
        write_approve(write=write, user=odd, rationale="looks right")
    assert Write.objects.get().state == WriteState.AWAITING_APPROVAL and not Approval.objects.exists()
    assert refusals(rule="four-eyes")[0].actor == "odd-app"


# -- editors ------------------------------------------------------------------------------------------


@pytest.fixture
def patient_needs_approval(db):
    # An engineer's contract choice for this tenant: demographics changes wait for a clinician.
    ContractRule.objects.filter(resource_type="Patient").update(approval_required=True)


def _patch(api) -> Write:
    r = api.post(URL, event("demographics.updated"), format="json")
    assert r.status_code == 201, r.json()
    return Write.objects.get(uid=r.json()["writes"][0]["id"])


def _conflict(write: Write):
    base = {"resourceType": "Patient", "id": "pat-1001", "telecom": [{"system": "phone", "value": "1"}]}
    theirs = {**base, "telecom": [{"system": "phone", "value": "2"}]}
    return conflicted(write, theirs=theirs, base=base)[1]


def test_whoever_reconciled_a_conflict_cannot_approve_the_result(
    consented, api, clinician, clinician2, patient_needs_approval
):
    write = _patch(api)
    third = granted_user(consented, "cy.clinician", "clinician")
    write_approve(write=write, user=third, rationale="reviewed")
    conflict = _conflict(Write.objects.get(pk=write.pk))
    new = conflict_resolve(conflict=conflict, user=clinician2, choices={"telecom": "theirs"})
    assert new.state == WriteState.AWAITING_APPROVAL
    assert list(WriteEditor.objects.filter(write=new).values_list("user__username", "how")) == [
        ("bob.clinician", "conflict_resolution")
    ]
    r = api_client_for(clinician2, consented).post(
        f"/api/v1/writes/{new.uid}/approve", {"rationale": "ok"}, format="json"
    )
    assert r.status_code == 403 and _code(r) == "four-eyes"
    assert "you reconciled this change" in r.json()["issue"][0]["diagnostics"]
    # The console offers her no button, and says why.
    page = client_for(clinician2).get(f"/writes/{new.uid}/").content.decode()
    assert f"/writes/{new.uid}/approve" not in page
    assert "You reconciled this change, so a second clinician must approve" in page
    # Nor may the initiator; a clinician who shaped nothing may.
    initiator = api_client_for(clinician, consented).post(
        f"/api/v1/writes/{new.uid}/approve", {"rationale": "ok"}, format="json"
    )
    assert initiator.status_code == 403 and _code(initiator) == "four-eyes"
    assert Approval.objects.filter(write=new).count() == 0
    ok = api_client_for(third, consented).post(
        f"/api/v1/writes/{new.uid}/approve", {"rationale": "ok"}, format="json"
    )
    assert ok.status_code == 200 and ok.json()["state"] == "pending"


def test_editors_are_inherited_by_the_write_made_in_place(consented, api, clinician, admin_user, clinician2):
    failed_write = failed(_patch(api))
    edited = dict(failed_write.payload, telecom=[{"system": "phone", "value": "+1 555 0199"}])
    replayed = write_replay(write=failed_write, user=admin_user, mode="edit", payload=edited, reason="typo")
    assert replayed.state == WriteState.PENDING
    conflict = _conflict(Write.objects.get(pk=replayed.pk))
    resolved = conflict_resolve(conflict=conflict, user=clinician2, choices={"telecom": "ours"})
    assert sorted(WriteEditor.objects.filter(write=resolved).values_list("user__username", "how")) == [
        ("ada.admin", "edit"),
        ("bob.clinician", "conflict_resolution"),
    ]
    assert set(payload_shapers(resolved)) >= {admin_user.pk, clinician2.pk}


def test_the_correcting_clinician_cannot_approve_the_correction(live, sim, api, clinician, clinician2):
    r = api.post(URL, event("medication.reconciled"), format="json")
    original = Write.objects.get(uid=r.json()["writes"][0]["id"])
    write_approve(write=original, user=clinician2, rationale="reviewed")
    original = committed(Write.objects.get(pk=original.pk), resource_id="ms-1", version="1")
    third = granted_user(live, "cy.clinician", "clinician")
    c = api_client_for(third, live)
    r = c.post(
        f"/api/v1/writes/{original.uid}/compensate",
        {"kind": "correction", "reason": "wrong dose", "data": {"dosage": [{"text": "10 mg daily"}]}},
        format="json",
    )
    assert r.status_code == 202, r.json()
    comp = Compensation.objects.get(original_write=original)
    waiting = Write.objects.filter(compensation=comp, state=WriteState.AWAITING_APPROVAL).first()
    assert waiting is not None
    assert WriteEditor.objects.filter(write=waiting, user=third, how="correction").exists()
    r = c.post(f"/api/v1/writes/{waiting.uid}/approve", {"rationale": "mine"}, format="json")
    assert r.status_code == 403 and _code(r) == "four-eyes"
    ok = api_client_for(clinician2, live).post(
        f"/api/v1/writes/{waiting.uid}/approve", {"rationale": "agreed"}, format="json"
    )
    assert ok.status_code == 200


# -- the two-phase abort ------------------------------------------------------------------------------


def test_only_the_submitting_client_app_aborts_its_referral_change(consented, api, clinician):
    r = api.post(URL, event("referral.status_changed"), format="json")
    write = Write.objects.get(uid=r.json()["writes"][0]["id"])
    intruder = make_client_app("other-portal")
    tenant_grant(tenant=consented, user=intruder)
    for who, rule in ((intruder, "not-submitter"), (clinician, "role-required")):
        refused = api_client_for(who, consented).post(
            f"/api/v1/writes/{write.uid}/abort", {"reason": "x"}, format="json"
        )
        assert refused.status_code == 403 and _code(refused) == rule
        assert Write.objects.get(pk=write.pk).state == WriteState.PENDING
        assert refusals(rule=rule, action="abort_two_phase")[0].actor == who.username
    done = api.post(f"/api/v1/writes/{write.uid}/abort", {"reason": "our side failed"}, format="json")
    assert done.status_code == 202 and done.json()["outcome"] == "cancelled"
    assert Write.objects.get(pk=write.pk).state == WriteState.RESOLVED


def test_an_auditor_token_writes_nothing(consented, auditor):
    """The hostile tester's second walk: a read-only auditor's token posts vitals."""
    r = api_client_for(auditor, consented).post(URL, event("vitals.recorded"), format="json")
    assert r.status_code == 403 and _code(r) == "role-required"
    _nothing_stored()
    (refusal,) = refusals(rule="role-required", action="submit_event")
    assert refusal.actor == "al.auditor" and refusal.tenant == "generic-main"
    # Nor a dry run: auditors only read.
    r = api_client_for(auditor, consented).post(
        f"{URL}?dry_run=true", event("vitals.recorded"), format="json"
    )
    assert r.status_code == 403
    assert len(refusals(action="submit_event")) == 2
