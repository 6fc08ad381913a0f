"""POST /api/v1/consents and /consents/{id}/revoke: tenant scope and the `manage_consent` role."""

import pytest

from tests.conftest import api_client_for, granted_user, make_user
from tests.writeback.helpers import consent_for
from writeback.models import AuditEntry, Consent
from writeback.services.permissions import grant_action_permission
from writeback.services.tenants import tenant_grant

URL = "/api/v1/consents"


def _body(tenant: str = "generic-main", patient: str = "pat-2001") -> dict:
    return {
        "tenant": tenant,
        "patient": patient,
        "scope": {"resource_types": ["Observation"], "actions": ["create"]},
        "period": {"start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"},
    }


def _code(r) -> str:
    return r.json()["issue"][0]["details"]["coding"][0]["code"]


def _refusals(**filters) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action="access.refused", **filters).order_by("seq"))


@pytest.fixture
def consent_app(app_user, tenant):
    """The client app that records consents: granted the permission by create_api_token --manage-consent."""
    grant_action_permission(app_user, "manage_consent", actor="tests")
    return api_client_for(app_user, tenant)


def test_client_app_with_the_permission_creates_and_revokes(consent_app, tenant):
    r = consent_app.post(URL, _body(), format="json")
    assert r.status_code == 201, r.json()
    consent = Consent.objects.get(uid=r.json()["id"])
    assert (consent.tenant, consent.patient_ref, consent.status) == (tenant, "pat-2001", "active")
    assert consent.resource_types == ["Observation"] and consent.created_by.username == "intake-portal"
    revoked = consent_app.post(f"{URL}/{consent.uid}/revoke", {"reason": "patient asked"}, format="json")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    consent.refresh_from_db()
    assert consent.status == "revoked" and consent.revoke_reason == "patient asked"
    actions = AuditEntry.objects.filter(object_id=str(consent.uid)).values_list("action", flat=True)
    assert list(actions) == ["consent.created", "consent.revoked"]


def test_grant_is_audited(app_user):
    grant_action_permission(app_user, "manage_consent", actor="tests")
    entry = AuditEntry.objects.get(action="permission.granted", data__permission="writeback.change_consent")
    assert entry.object_id == "intake-portal"
    assert entry.data["permission"] == "writeback.change_consent"
    assert app_user.has_perm("writeback.change_consent")


def test_client_app_without_the_permission_is_refused(api, tenant):
    r = api.post(URL, _body(), format="json")
    assert r.status_code == 403
    assert _code(r) == "role-required"
    assert "writeback.change_consent" in r.json()["issue"][0]["diagnostics"]
    assert Consent.objects.count() == 0
    [refused] = _refusals(tenant="generic-main")
    assert refused.data["action"] == "manage_consent" and refused.data["rule"] == "role-required"
    assert refused.actor == "intake-portal"


def test_client_app_without_the_permission_cannot_revoke(api, tenant):
    consent = consent_for(tenant)
    r = api.post(f"{URL}/{consent.uid}/revoke", {"reason": "x"}, format="json")
    assert r.status_code == 403 and _code(r) == "role-required"
    consent.refresh_from_db()
    assert consent.status == "active" and consent.revoked_at is None
    [refused] = _refusals(object_id=str(consent.uid))
    assert refused.object_type == "consent" and refused.data["action"] == "manage_consent"


@pytest.mark.parametrize(("role", "status"), [("clinician", 201), ("admin", 201), ("auditor", 403)])
def test_people_need_a_consent_role(tenant, role, status):
    user = granted_user(tenant, f"someone-{role}", role)
    r = api_client_for(user, tenant).post(URL, _body(), format="json")
    assert r.status_code == status, r.json()
    assert Consent.objects.count() == (1 if status == 201 else 0)
    assert len(_refusals()) == (0 if status == 201 else 1)


def test_engineer_cannot_revoke(engineer, tenant):
    consent = consent_for(tenant)
    r = api_client_for(engineer, tenant).post(f"{URL}/{consent.uid}/revoke", {}, format="json")
    assert r.status_code == 403 and _code(r) == "role-required"
    assert Consent.objects.get(pk=consent.pk).status == "active"


def test_revoking_another_tenants_consent_is_403_and_audited(consent_app, other_tenant):
    theirs = consent_for(other_tenant)
    r = consent_app.post(f"{URL}/{theirs.uid}/revoke", {"reason": "not mine"}, format="json")
    assert r.status_code == 403
    assert _code(r) == "tenant-forbidden"
    theirs.refresh_from_db()
    assert theirs.status == "active" and theirs.revoked_at is None and theirs.revoke_reason == ""
    [refused] = _refusals()
    assert (refused.tenant, refused.object_type, refused.object_id) == ("other", "consent", str(theirs.uid))
    assert refused.data["action"] == "manage_consent" and refused.data["rule"] == "tenant-forbidden"
    assert not AuditEntry.objects.filter(action="consent.revoked").exists()


def test_a_consent_manager_of_both_tenants_limited_by_the_token(other_tenant, tenant):
    """The user may manage both tenants, but this token names only one: the other is still refused."""
    user = granted_user(tenant, "carl.clinician", "clinician")
    tenant_grant(tenant=other_tenant, user=user)
    theirs = consent_for(other_tenant)
    r = api_client_for(user, tenant).post(f"{URL}/{theirs.uid}/revoke", {}, format="json")
    assert r.status_code == 403 and _code(r) == "tenant-forbidden"
    assert Consent.objects.get(pk=theirs.pk).status == "active"


def test_revoking_a_nonexistent_consent_is_404_without_audit(consent_app):
    before = AuditEntry.objects.count()
    r = consent_app.post(f"{URL}/00000000-0000-0000-0000-000000000000/revoke", {}, format="json")
    assert r.status_code == 404
    assert r.json()["resourceType"] == "OperationOutcome" and _code(r) == "not-found"
    assert AuditEntry.objects.count() == before


def test_creating_for_another_tenant_is_403_and_audited(consent_app, other_tenant):
    r = consent_app.post(URL, _body(tenant="other"), format="json")
    assert r.status_code == 403 and _code(r) == "tenant-forbidden"
    assert Consent.objects.count() == 0
    [refused] = _refusals(tenant="other")
    assert refused.data["action"] == "manage_consent"


def test_unknown_tenant_and_bad_period_are_422(consent_app):
    r = consent_app.post(URL, _body(tenant="nope"), format="json")
    assert r.status_code == 422 and _code(r) == "unknown-tenant"
    body = _body()
    body["period"] = {"start": "2027-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}
    r = consent_app.post(URL, body, format="json")
    assert r.status_code == 422 and _code(r) == "invalid-period"
    assert Consent.objects.count() == 0


def test_a_user_without_any_tenant_grant_is_refused(db, tenant):
    loner = make_user("loner", "clinician")  # holds manage_consent by role, but no tenant
    client = api_client_for(loner)
    r = client.post(URL, _body(), format="json")
    assert r.status_code == 403 and _code(r) == "tenant-forbidden"
    assert Consent.objects.count() == 0
