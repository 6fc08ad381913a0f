"""Action × role for the console's operational actions: who may (database state changed as intended) and
who may not (nothing changed, and the refusal is in the audit trail)."""

import pytest
from django.utils import timezone

from tests.conftest import make_user
from tests.console.conftest import audit_actions, client_for, committed, failed, refusals
from writeback.models import (
    AuditEntry,
    BulkOperation,
    Capability,
    CapabilityChange,
    KillSwitch,
    ManualTask,
    Tenant,
    TenantMode,
)
from writeback.services.capabilities import capability_change_request
from writeback.services.killswitches import kill_switch_engage
from writeback.services.tenants import tenant_grant
from writeback.states import WriteState

pytestmark = pytest.mark.django_db

NOT_ADMINS = ["engineer", "clinician2", "auditor"]


def person(request, name):
    return request.getfixturevalue(name)


@pytest.fixture
def outside_engineer(other_tenant):
    """Every role, but only for another tenant: refusals below are about tenant scope, not roles."""
    user = make_user("oscar.outside", "integration_engineer", "admin", "clinician")
    tenant_grant(tenant=other_tenant, user=user)
    return user


# -- bulk replay: abort ------------------------------------------------------------------


@pytest.fixture
def running(make, admin_user):
    writes = [failed(make("problem.confirmed", note=f"visit {i}")) for i in range(3)]
    r = client_for(admin_user).post(
        "/bulk/start", {"uid": [str(w.uid) for w in writes], "reason": "outage over", "rate": "2"}
    )
    assert r.status_code == 302
    return BulkOperation.objects.get()


@pytest.mark.parametrize("persona", NOT_ADMINS)
def test_only_admins_abort_a_bulk_replay(request, running, persona):
    refused_before = len(refusals())
    r = client_for(person(request, persona)).post(f"/bulk/{running.uid}/abort")
    assert r.status_code == 403
    running.refresh_from_db()
    assert running.status == BulkOperation.Status.RUNNING and running.aborted_by is None
    assert running.skipped == 0
    assert "bulk.aborted" not in audit_actions(object_id=str(running.uid))
    new = refusals()[refused_before:]
    assert len(new) == 1 and new[0].object_type == "bulk" and new[0].data["rule"] == "role-required"
    assert new[0].actor == person(request, persona).username


# -- capability widening: a second engineer decides ------------------------------------------------


@pytest.fixture
def widening(tenant, engineer):
    Capability.objects.filter(
        tenant=tenant, resource_type="Observation", operation="create", source=Capability.Source.MANUAL
    ).update(allowed=False)
    return capability_change_request(
        tenant=tenant,
        user=engineer,
        resource_type="Observation",
        operation="create",
        allowed=True,
        note="fixed upstream",
    )


def observation_create(tenant) -> bool:
    return Capability.objects.get(
        tenant=tenant, resource_type="Observation", operation="create", source=Capability.Source.MANUAL
    ).allowed


@pytest.mark.parametrize("persona", ["admin_user", "clinician2", "auditor"])
@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_only_engineers_decide_a_widening(request, tenant, widening, persona, decision):
    r = client_for(person(request, persona)).post(
        f"/capability-changes/{widening.uid}/{decision}", {"note": "looks fine"}
    )
    assert r.status_code == 403
    widening.refresh_from_db()
    assert widening.status == CapabilityChange.Status.PENDING and widening.decided_by is None
    assert observation_create(tenant) is False
    (entry,) = refusals(action="configure_tenant", rule="role-required")
    assert entry.object_id == str(widening.uid) and entry.tenant == tenant.slug


def test_a_second_engineer_approves(tenant, widening, engineer2):
    r = client_for(engineer2).post(f"/capability-changes/{widening.uid}/approve")
    assert r.status_code == 302 and r.url == f"/tenants/{tenant.slug}/"
    widening.refresh_from_db()
    assert widening.status == CapabilityChange.Status.APPLIED and widening.decided_by == engineer2
    assert observation_create(tenant) is True
    assert not refusals()


def test_a_second_engineer_turns_it_down_with_a_note(tenant, widening, engineer2):
    c = client_for(engineer2)
    r = c.post(f"/capability-changes/{widening.uid}/reject", {"note": ""})
    assert r.status_code == 302
    widening.refresh_from_db()
    assert widening.status == CapabilityChange.Status.PENDING  # a reason is required
    c.post(f"/capability-changes/{widening.uid}/reject", {"note": "not validated in the sandbox"})
    widening.refresh_from_db()
    assert widening.status == CapabilityChange.Status.REJECTED and widening.decided_by == engineer2
    assert observation_create(tenant) is False
    assert "capability.change_rejected" in audit_actions(object_id=str(widening.uid))


def test_the_requester_cannot_approve_their_own_widening(tenant, widening, engineer):
    r = client_for(engineer).post(f"/capability-changes/{widening.uid}/approve")
    assert r.status_code == 403
    assert b"the requester cannot approve it" in r.content
    widening.refresh_from_db()
    assert widening.status == CapabilityChange.Status.PENDING
    assert observation_create(tenant) is False
    (entry,) = refusals(rule="four-eyes")
    assert entry.actor == engineer.username and entry.object_id == str(widening.uid)


def test_the_requester_may_withdraw_their_own_widening(tenant, widening, engineer):
    # The service lets a requester turn down (withdraw) their own request; it never widens anything.
    client_for(engineer).post(f"/capability-changes/{widening.uid}/reject", {"note": "asked too early"})
    widening.refresh_from_db()
    assert widening.status == CapabilityChange.Status.REJECTED and widening.decided_by == engineer
    assert observation_create(tenant) is False


# -- discovery, audit verification ----------------------------------------------------------------


@pytest.mark.parametrize("persona", ["clinician", "auditor", "admin_user"])
def test_only_engineers_run_discovery(request, tenant, persona):
    r = client_for(person(request, persona)).post(f"/tenants/{tenant.slug}/discover")
    assert r.status_code == 403
    assert not Capability.objects.filter(tenant=tenant, source=Capability.Source.DISCOVERED).exists()
    assert not {"capabilities.discovered", "capabilities.discovery_failed"} & set(audit_actions())
    (entry,) = refusals(action="configure_tenant", rule="role-required")
    assert entry.tenant == tenant.slug


@pytest.mark.parametrize("persona", ["auditor", "admin_user"])
def test_auditors_and_admins_verify_the_audit_chain(request, make, persona):
    committed(make("note.signed"))
    r = client_for(person(request, persona)).post("/audit/verify")
    assert r.status_code == 302 and r.url == "/audit/"
    check = AuditEntry.objects.get(action="audit.chain_verified")
    assert check.actor == person(request, persona).username and check.data["ok"] is True
    assert not refusals()


@pytest.mark.parametrize("persona", ["clinician", "engineer"])
def test_others_may_not_verify_the_audit_chain(request, tenant, persona):
    r = client_for(person(request, persona)).post("/audit/verify")
    assert r.status_code == 403
    assert not AuditEntry.objects.filter(action="audit.chain_verified").exists()
    (entry,) = refusals(action="view_audit", rule="role-required")
    assert entry.actor == person(request, persona).username


# -- manual tasks, kill switches ----------------------------------------------------------------------


@pytest.fixture
def task(make):
    note = committed(make("note.signed"))
    return ManualTask.objects.create(
        tenant=note.tenant,
        write=note,
        role="clinician",
        title="Mark the note entered-in-error in the EHR",
        instructions="Open the chart, find the note, choose 'Entered in error'.",
    )


def test_a_clinician_confirms_a_clinicians_manual_task(request, task):
    persona = "clinician2"
    who = person(request, persona)
    before = timezone.now()
    r = client_for(who).post(f"/tasks/{task.uid}/confirm", {"note": "  Marked entered-in-error at 10:02.  "})
    assert r.status_code == 302 and r.url == "/tasks/"
    task.refresh_from_db()
    assert task.status == ManualTask.Status.DONE
    assert task.confirmed_by == who
    assert before <= task.confirmed_at <= timezone.now()
    assert task.confirmation_note == "Marked entered-in-error at 10:02."
    entry = AuditEntry.objects.get(action="manual_task.confirmed", object_id=str(task.uid))
    assert entry.actor == who.username
    assert "Confirmed by " + who.username in client_for(who).get("/tasks/?status=done").content.decode()


@pytest.fixture
def switch(tenant, engineer):
    return kill_switch_engage(
        user=engineer, scope="tenant", behaviour="hold", reason="EHR upgrade", tenant=tenant
    )


def test_an_admin_releases_a_kill_switch(tenant, switch, admin_user):
    r = client_for(admin_user).post(f"/kill-switches/{switch.uid}/release", {"note": "upgrade done"})
    assert r.status_code == 302 and r.url == f"/tenants/{tenant.slug}/"
    switch.refresh_from_db()
    assert switch.released_by == admin_user and switch.released_at is not None
    entry = AuditEntry.objects.get(action="kill_switch.released", object_id=str(switch.uid))
    assert entry.actor == admin_user.username and entry.data["scope"] == "tenant"
    assert not refusals()


# -- another tenant's people ------------------------------------------------------------------------


def test_an_outsider_cannot_change_the_mode(tenant, outside_engineer):
    r = client_for(outside_engineer).post(f"/tenants/{tenant.slug}/mode", {"mode": "paused", "reason": "x"})
    assert r.status_code == 403
    assert Tenant.objects.get(pk=tenant.pk).mode == TenantMode.LIVE
    assert "tenant.mode_changed" not in audit_actions()
    (entry,) = refusals(rule="tenant-forbidden")
    assert entry.tenant == tenant.slug and entry.object_type == "tenant"


def test_an_outsider_cannot_run_discovery(tenant, outside_engineer):
    assert client_for(outside_engineer).post(f"/tenants/{tenant.slug}/discover").status_code == 403
    assert not Capability.objects.filter(tenant=tenant, source=Capability.Source.DISCOVERED).exists()
    assert [e.tenant for e in refusals(rule="tenant-forbidden")] == [tenant.slug]


def test_an_outsider_cannot_request_a_capability_change(tenant, outside_engineer):
    r = client_for(outside_engineer).post(
        f"/tenants/{tenant.slug}/capabilities",
        {"resource_type": "Observation", "operation": "create", "allowed": "0", "note": "x"},
    )
    assert r.status_code == 403
    assert not CapabilityChange.objects.exists()
    assert observation_create(tenant) is True
    assert [e.tenant for e in refusals(rule="tenant-forbidden")] == [tenant.slug]


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_an_outsider_cannot_decide_a_widening(tenant, widening, outside_engineer, decision):
    r = client_for(outside_engineer).post(f"/capability-changes/{widening.uid}/{decision}", {"note": "x"})
    assert r.status_code == 403
    widening.refresh_from_db()
    assert widening.status == CapabilityChange.Status.PENDING
    assert observation_create(tenant) is False
    (entry,) = refusals(rule="tenant-forbidden")
    assert entry.object_type == "capability_change" and entry.object_id == str(widening.uid)


def test_an_outsider_cannot_engage_or_release_a_kill_switch(tenant, switch, outside_engineer):
    c = client_for(outside_engineer)
    r = c.post(
        "/kill-switches/engage",
        {"scope": "tenant", "tenant": tenant.slug, "behaviour": "hold", "reason": "x"},
    )
    assert r.status_code == 403
    assert KillSwitch.objects.count() == 1
    assert c.post(f"/kill-switches/{switch.uid}/release").status_code == 403
    switch.refresh_from_db()
    assert switch.released_at is None
    assert [e.tenant for e in refusals(rule="tenant-forbidden")] == [tenant.slug, tenant.slug]


@pytest.mark.parametrize("persona", ["admin_user", "engineer"])
def test_only_the_tasks_role_can_say_it_was_done_in_the_ehr(request, task, persona):
    """The confirmation attests that the change was made in the EHR: a task for a clinician is
    confirmed by a clinician, not by an admin or an engineer on their behalf."""
    who = person(request, persona)
    r = client_for(who).post(f"/tasks/{task.uid}/confirm", {"note": "done"})
    assert r.status_code == 403
    task.refresh_from_db()
    assert task.status == ManualTask.Status.OPEN and task.confirmed_by is None
    (entry,) = refusals(action="confirm_manual_task", rule="role-required")
    assert entry.actor == who.username and "for a clinician" in entry.data["reason"]


def test_an_outsider_cannot_confirm_a_manual_task(task, outside_engineer):
    r = client_for(outside_engineer).post(f"/tasks/{task.uid}/confirm", {"note": "done"})
    assert r.status_code == 403
    task.refresh_from_db()
    assert task.status == ManualTask.Status.OPEN and task.confirmed_by is None
    (entry,) = refusals(rule="tenant-forbidden")
    assert entry.object_type == "manual_task" and entry.object_id == str(task.uid)
    assert task.write.state == WriteState.COMMITTED
