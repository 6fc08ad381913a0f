"""Tenants: mode, kill switches at every level, the capability registry with two-person widening."""

import pytest

from tests.console.conftest import audit_actions, client_for, refusals
from writeback.models import Capability, CapabilityChange, KillSwitch, Tenant, TenantMode
from writeback.services.holds import current_holds

pytestmark = pytest.mark.django_db


def test_the_registry_page_shows_vendor_mode_matrix_and_history(tenant, engineer):
    body = client_for(engineer).get(f"/tenants/{tenant.slug}/").content.decode()
    assert "Generic FHIR R4" in body
    assert "Capability matrix" in body and "MedicationStatement" in body
    assert "Request a capability change" in body
    assert "Run discovery" in body
    assert b"generic-main" in client_for(engineer).get("/tenants/").content


def test_an_engineer_pauses_a_tenant(tenant, engineer):
    r = client_for(engineer).post(f"/tenants/{tenant.slug}/mode", {"mode": "paused", "reason": "EHR upgrade"})
    assert r.status_code == 302
    tenant.refresh_from_db()
    assert tenant.mode == TenantMode.PAUSED
    assert "tenant.mode_changed" in audit_actions(tenant=tenant.slug)
    assert tenant.pk in current_holds().tenants


def test_a_mode_change_needs_a_reason_and_a_change(tenant, engineer):
    c = client_for(engineer)
    c.post(f"/tenants/{tenant.slug}/mode", {"mode": "paused", "reason": ""})
    r = c.post(
        f"/tenants/{tenant.slug}/mode",
        {"mode": "live", "reason": "x"},
        HTTP_REFERER=f"http://testserver/tenants/{tenant.slug}/",
    )
    assert r.status_code == 302
    assert b"already live" in c.get(r.url).content
    tenant.refresh_from_db()
    assert tenant.mode == TenantMode.LIVE


@pytest.mark.parametrize("persona", ["admin_user", "clinician", "auditor"])
def test_only_engineers_change_the_mode(request, tenant, persona):
    r = client_for(request.getfixturevalue(persona)).post(
        f"/tenants/{tenant.slug}/mode", {"mode": "paused", "reason": "x"}
    )
    assert r.status_code == 403
    assert Tenant.objects.get(pk=tenant.pk).mode == TenantMode.LIVE
    assert refusals(action="configure_tenant", rule="role-required")


@pytest.mark.parametrize(
    "scope,extra",
    [
        ("tenant", {}),
        ("resource_type", {"resource_type": "Observation"}),
        ("stream", {"resource_type": "Observation", "patient_ref": "pat-1001"}),
    ],
)
@pytest.mark.parametrize("behaviour", ["hold", "drain"])
def test_kill_switches_at_each_level(tenant, engineer, scope, extra, behaviour):
    c = client_for(engineer)
    r = c.post(
        "/kill-switches/engage",
        {"scope": scope, "tenant": tenant.slug, "behaviour": behaviour, "reason": "incident", **extra},
    )
    assert r.status_code == 302
    switch = KillSwitch.objects.get()
    assert (switch.scope, switch.behaviour, switch.tenant) == (scope, behaviour, tenant)
    assert switch.resource_type == extra.get("resource_type", "")
    assert switch.patient_ref == extra.get("patient_ref", "")
    assert "kill_switch.engaged" in audit_actions()
    r = c.post(f"/kill-switches/{switch.uid}/release")
    switch.refresh_from_db()
    assert switch.released_at is not None and switch.released_by == engineer
    assert "kill_switch.released" in audit_actions()


def test_admins_may_use_kill_switches_too(tenant, admin_user):
    client_for(admin_user).post(
        "/kill-switches/engage",
        {"scope": "tenant", "tenant": tenant.slug, "behaviour": "hold", "reason": "x"},
    )
    assert KillSwitch.objects.count() == 1


def test_the_global_switch_needs_access_to_every_tenant(tenant, engineer, other_tenant):
    c = client_for(engineer)
    r = c.post("/kill-switches/engage", {"scope": "global", "behaviour": "hold", "reason": "stop everything"})
    assert r.status_code == 403
    assert not KillSwitch.objects.exists()
    assert refusals(rule="tenant-forbidden", action="kill_switch")


def test_the_global_switch(tenant, engineer):
    r = client_for(engineer).post(
        "/kill-switches/engage", {"scope": "global", "behaviour": "drain", "reason": "x"}
    )
    assert r.status_code == 302
    assert KillSwitch.objects.get().scope == KillSwitch.Scope.GLOBAL
    assert current_holds().everything == "drain"
    assert b"Sending is stopped for all tenants" in client_for(engineer).get("/tenants/").content


def test_kill_switch_input_errors_are_messages(tenant, engineer):
    c = client_for(engineer)
    back = {"HTTP_REFERER": f"http://testserver/tenants/{tenant.slug}/"}
    for data in (
        {"scope": "tenant", "tenant": tenant.slug, "behaviour": "hold", "reason": ""},
        {
            "scope": "stream",
            "tenant": tenant.slug,
            "behaviour": "hold",
            "reason": "x",
            "resource_type": "Observation",
        },
        {"scope": "resource_type", "tenant": tenant.slug, "behaviour": "hold", "reason": "x"},
    ):
        assert c.post("/kill-switches/engage", data, **back).status_code == 302
    assert not KillSwitch.objects.exists()
    c.post(
        "/kill-switches/engage",
        {"scope": "tenant", "tenant": tenant.slug, "behaviour": "hold", "reason": "x"},
    )
    r = c.post(
        "/kill-switches/engage",
        {"scope": "tenant", "tenant": tenant.slug, "behaviour": "drain", "reason": "y"},
        **back,
    )
    assert b"already engaged" in c.get(r.url).content
    assert KillSwitch.objects.count() == 1


@pytest.mark.parametrize("persona", ["clinician", "auditor"])
def test_clinicians_and_auditors_cannot_stop_sending(request, tenant, engineer, persona):
    c = client_for(request.getfixturevalue(persona))
    r = c.post(
        "/kill-switches/engage",
        {"scope": "tenant", "tenant": tenant.slug, "behaviour": "hold", "reason": "x"},
    )
    assert r.status_code == 403
    assert not KillSwitch.objects.exists()
    client_for(engineer).post(
        "/kill-switches/engage",
        {"scope": "tenant", "tenant": tenant.slug, "behaviour": "hold", "reason": "x"},
    )
    switch = KillSwitch.objects.get()
    assert c.post(f"/kill-switches/{switch.uid}/release").status_code == 403
    switch.refresh_from_db()
    assert switch.released_at is None
    assert len(refusals(action="kill_switch")) == 2


def manual(tenant, rtype, op) -> Capability:
    return Capability.objects.get(
        tenant=tenant, resource_type=rtype, operation=op, source=Capability.Source.MANUAL
    )


def test_narrowing_applies_at_once(tenant, engineer):
    r = client_for(engineer).post(
        f"/tenants/{tenant.slug}/capabilities",
        {"resource_type": "Observation", "operation": "create", "allowed": "0", "note": "bad units upstream"},
    )
    assert r.status_code == 302
    assert manual(tenant, "Observation", "create").allowed is False
    change = CapabilityChange.objects.get()
    assert change.status == CapabilityChange.Status.APPLIED and not change.widens
    assert {"capability.change_requested", "capability.changed"} <= set(audit_actions(tenant=tenant.slug))
    history = manual(tenant, "Observation", "create").history.first()
    assert history.history_user == engineer and history.allowed is False


def test_widening_waits_for_a_second_engineer(tenant, engineer, engineer2):
    cap = manual(tenant, "Observation", "create")
    Capability.objects.filter(pk=cap.pk).update(allowed=False)
    c1, c2 = client_for(engineer), client_for(engineer2)
    c1.post(
        f"/tenants/{tenant.slug}/capabilities",
        {"resource_type": "Observation", "operation": "create", "allowed": "1", "note": "fixed upstream"},
    )
    change = CapabilityChange.objects.get()
    assert change.status == CapabilityChange.Status.PENDING and change.widens
    assert manual(tenant, "Observation", "create").allowed is False
    page = c1.get(f"/tenants/{tenant.slug}/").content.decode()
    assert "a second integration engineer must approve it" in page
    r = c1.post(f"/capability-changes/{change.uid}/approve")
    assert r.status_code == 403
    assert refusals(rule="four-eyes", action="configure_tenant")
    assert manual(tenant, "Observation", "create").allowed is False
    assert "Approve widening" in c2.get(f"/tenants/{tenant.slug}/").content.decode()
    c2.post(f"/capability-changes/{change.uid}/approve")
    change.refresh_from_db()
    assert change.status == CapabilityChange.Status.APPLIED and change.decided_by == engineer2
    assert manual(tenant, "Observation", "create").allowed is True
    assert manual(tenant, "Observation", "create").history.first().history_user == engineer2
    assert "capability.change_approved" in audit_actions(tenant=tenant.slug)


def test_a_widening_can_be_turned_down(tenant, engineer, engineer2):
    Capability.objects.filter(pk=manual(tenant, "Observation", "create").pk).update(allowed=False)
    client_for(engineer).post(
        f"/tenants/{tenant.slug}/capabilities",
        {"resource_type": "Observation", "operation": "create", "allowed": "1", "note": "please"},
    )
    change = CapabilityChange.objects.get()
    client_for(engineer2).post(f"/capability-changes/{change.uid}/reject", {"note": "not validated yet"})
    change.refresh_from_db()
    assert change.status == CapabilityChange.Status.REJECTED
    assert manual(tenant, "Observation", "create").allowed is False


def test_a_widening_past_the_contract_is_refused_with_the_reason(tenant, engineer):
    c = client_for(engineer)
    r = c.post(
        f"/tenants/{tenant.slug}/capabilities",
        {"resource_type": "Condition", "operation": "update", "allowed": "1", "note": "x"},
        HTTP_REFERER=f"http://testserver/tenants/{tenant.slug}/",
    )
    assert b"The contract allows create" in c.get(r.url).content
    assert not CapabilityChange.objects.exists()


@pytest.mark.parametrize("persona", ["admin_user", "clinician", "auditor"])
def test_only_engineers_change_capabilities(request, tenant, persona):
    r = client_for(request.getfixturevalue(persona)).post(
        f"/tenants/{tenant.slug}/capabilities",
        {"resource_type": "Observation", "operation": "create", "allowed": "0", "note": "x"},
    )
    assert r.status_code == 403
    assert manual(tenant, "Observation", "create").allowed is True
    assert not CapabilityChange.objects.exists()


def test_discovery_records_the_capability_statement(live, engineer):
    r = client_for(engineer).post(f"/tenants/{live.slug}/discover")
    assert r.status_code == 302
    assert Capability.objects.filter(tenant=live, source=Capability.Source.DISCOVERED).exists()
    assert "capabilities.discovered" in audit_actions(tenant=live.slug)
    page = client_for(engineer).get(f"/tenants/{live.slug}/").content.decode()
    assert "discovered ✓" in page


def test_a_failing_discovery_is_a_message(tenant, engineer):
    c = client_for(engineer)
    r = c.post(f"/tenants/{tenant.slug}/discover")
    assert r.status_code == 302
    assert b"Discovery failed" in c.get(r.url).content
    assert "capabilities.discovery_failed" in audit_actions(tenant=tenant.slug)


def test_discovery_is_for_engineers(tenant, admin_user):
    assert client_for(admin_user).post(f"/tenants/{tenant.slug}/discover").status_code == 403
