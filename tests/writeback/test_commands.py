"""The create_tenant and create_api_token management commands."""

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from tests.conftest import make_user
from tests.writeback.helpers import consent_for, event
from writeback.models import ApiToken, AuditEntry, BusinessEvent, Capability, Consent, Tenant
from writeback.services.access import user_may_access


def _run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def _client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


# -- create_tenant -----------------------------------------------------------------------------------


def test_create_tenant_stores_vendor_mode_auth_and_capabilities(db):
    out = _run(
        "create_tenant",
        "athena-main",
        "--vendor",
        "athena",
        "--base-url",
        "https://api.example.org/fhir/r4/",
        "--auth",
        "smart",
        "--client-id",
        "client-1",
        "--token-url",
        "https://api.example.org/oauth2/token",
        "--private-key-ref",
        "env:ATHENA_KEY",
        "--mode",
        "shadow",
        "--setting",
        "practice_id=195900",
        "--setting",
        "department_id=1",
    )
    tenant = Tenant.objects.get(slug="athena-main")
    assert (tenant.vendor, tenant.mode, tenant.auth_mode) == ("athena", "shadow", "smart")
    assert tenant.base_url == "https://api.example.org/fhir/r4"  # trailing slash dropped
    assert (tenant.client_id, tenant.token_url, tenant.private_key_ref) == (
        "client-1",
        "https://api.example.org/oauth2/token",
        "env:ATHENA_KEY",
    )
    assert tenant.settings == {"practice_id": "195900", "department_id": "1"}
    assert tenant.consent_required is True and tenant.consent_waived_resource_types == []
    assert Capability.objects.filter(tenant=tenant, source="manual").exists()
    entry = AuditEntry.objects.get(action="tenant.created", tenant="athena-main")
    assert entry.actor == "command:create_tenant" and entry.data["vendor"] == "athena"
    assert "created tenant athena-main" in out


def test_create_tenant_defaults(db):
    _run("create_tenant", "plain", "--vendor", "generic", "--base-url", "http://127.0.0.1:9/fhir")
    tenant = Tenant.objects.get(slug="plain")
    assert (tenant.vendor, tenant.mode, tenant.auth_mode) == ("generic", "live", "none")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--vendor", "cerner", "--base-url", "http://x.org/fhir"], "invalid choice: 'cerner'"),
        (["--vendor", "generic", "--base-url", "http://x.org", "--mode", "off"], "invalid choice: 'off'"),
        (["--vendor", "generic", "--base-url", "http://x.org", "--auth", "basic"], "invalid choice"),
        (["--vendor", "generic"], "--base-url"),
        (["--vendor", "generic", "--base-url", "not a url"], "base_url"),
        (["--vendor", "epic", "--base-url", "http://x.org", "--auth", "smart"], "--auth smart needs"),
        (["--vendor", "generic", "--base-url", "http://x.org", "--setting", "nokey"], "KEY=VALUE"),
    ],
)
def test_create_tenant_bad_arguments(db, args, message):
    audit_before = AuditEntry.objects.count()
    with pytest.raises(CommandError, match=message):
        _run("create_tenant", "bad-one", *args)
    assert not Tenant.objects.filter(slug="bad-one").exists()
    assert Capability.objects.count() == 0
    assert AuditEntry.objects.count() == audit_before


def test_create_tenant_duplicate_slug(tenant):
    with pytest.raises(CommandError, match="tenant 'generic-main' already exists"):
        _run("create_tenant", "generic-main", "--vendor", "epic", "--base-url", "http://x.org/fhir")
    assert Tenant.objects.get(slug="generic-main").vendor == "generic"
    assert AuditEntry.objects.filter(action="tenant.created").count() == 1


# -- create_api_token --------------------------------------------------------------------------------


def test_token_acts_on_its_tenant_only(tenant, other_tenant, clinician):
    make_user("portal-app")
    key = _run(
        "create_api_token", "portal-app", "--tenant", "generic-main", "--name", "portal", "--on-behalf"
    ).strip()
    token = ApiToken.objects.get(user__username="portal-app")
    assert token.name == "portal" and list(token.tenants.values_list("slug", flat=True)) == ["generic-main"]
    assert token.key_hash != key and key.startswith(token.prefix)
    user = User.objects.get(username="portal-app")
    assert user_may_access(user, tenant) and not user_may_access(user, other_tenant)
    assert AuditEntry.objects.get(action="api_token.created").data["tenants"] == ["generic-main"]
    granted = AuditEntry.objects.filter(action="permission.granted", object_id="portal-app")
    assert [(e.data.get("role"), e.data.get("permission")) for e in granted] == [
        ("client_app", None),
        (None, "writeback.submit_on_behalf"),
    ]

    consent_for(tenant)
    consent_for(other_tenant)
    client = _client(key)
    r = client.post("/api/v1/events", event("problem.confirmed"), format="json")
    assert r.status_code == 201, r.json()
    refused = client.post(
        "/api/v1/events", event("problem.confirmed", tenant="other", key="o"), format="json"
    )
    assert refused.status_code == 403
    assert refused.json()["issue"][0]["details"]["coding"][0]["code"] == "tenant-forbidden"
    assert client.get("/api/v1/writes", {"tenant": "other"}).status_code == 403
    assert {w["tenant"] for w in client.get("/api/v1/writes").json()["results"]} == {"generic-main"}


def test_create_user_makes_a_service_account(tenant):
    key = _run("create_api_token", "new-app", "--create-user", "--tenant", "generic-main").strip()
    user = User.objects.get(username="new-app")
    assert not user.has_usable_password()
    assert list(user.groups.values_list("name", flat=True)) == ["client_app"]
    assert not user.has_perm("writeback.submit_on_behalf")
    assert _client(key).get("/api/v1/writes").status_code == 200


def test_a_client_app_without_on_behalf_posts_only_in_its_own_name(tenant, clinician):
    key = _run("create_api_token", "own-app", "--create-user", "--tenant", "generic-main").strip()
    consent_for(tenant)
    client = _client(key)
    r = client.post("/api/v1/events", event("problem.confirmed"), format="json")  # names amy.clinician
    assert r.status_code == 403
    assert r.json()["issue"][0]["details"]["coding"][0]["code"] == "initiator-forbidden"
    body = event("problem.confirmed", key="own")
    del body["initiator"]
    assert client.post("/api/v1/events", body, format="json").status_code == 201
    assert BusinessEvent.objects.get().initiator.username == "own-app"


@pytest.mark.parametrize("flag", ["--client-app", "--on-behalf", "--manage-consent"])
def test_a_persons_account_is_never_made_a_client_app(tenant, clinician, flag):
    audit_before = AuditEntry.objects.count()
    with pytest.raises(CommandError, match="holds the role clinician: a client app needs its own account"):
        _run("create_api_token", "amy.clinician", "--tenant", "generic-main", flag)
    assert list(clinician.groups.values_list("name", flat=True)) == ["clinician"]
    assert not User.objects.get(pk=clinician.pk).user_permissions.exists()
    assert ApiToken.objects.count() == 0
    assert AuditEntry.objects.count() == audit_before


def test_manage_consent_flag_lets_the_app_record_consent(tenant):
    key = _run(
        "create_api_token", "consent-app", "--create-user", "--tenant", "generic-main", "--manage-consent"
    ).strip()
    assert User.objects.get(username="consent-app").has_perm("writeback.change_consent")
    r = _client(key).post("/api/v1/consents", {"tenant": "generic-main", "patient": "pat-1"}, format="json")
    assert r.status_code == 201, r.json()
    assert Consent.objects.filter(patient_ref="pat-1", tenant=tenant).count() == 1


def test_without_manage_consent_the_app_may_not_record_consent(tenant):
    key = _run("create_api_token", "plain-app", "--create-user", "--tenant", "generic-main").strip()
    r = _client(key).post("/api/v1/consents", {"tenant": "generic-main", "patient": "pat-1"}, format="json")
    assert r.status_code == 403
    assert Consent.objects.count() == 0


def test_unknown_user(tenant):
    with pytest.raises(CommandError, match="no user 'ghost'"):
        _run("create_api_token", "ghost", "--tenant", "generic-main")
    assert ApiToken.objects.count() == 0


@pytest.mark.parametrize("extra", [[], ["--create-user", "--manage-consent"]])
def test_unknown_tenant_leaves_nothing_behind(tenant, extra):
    audit_before = AuditEntry.objects.count()
    with pytest.raises(CommandError, match="no tenant 'nope'"):
        _run("create_api_token", "half-app", "--tenant", "generic-main", "--tenant", "nope", *extra)
    assert not User.objects.filter(username="half-app").exists()
    assert ApiToken.objects.count() == 0
    assert AuditEntry.objects.count() == audit_before


def test_unknown_tenant_grants_an_existing_user_nothing(tenant):
    user = make_user("existing-app")
    with pytest.raises(CommandError, match="no tenant 'nope'"):
        _run("create_api_token", "existing-app", "--tenant", "generic-main", "--tenant", "nope")
    assert not user_may_access(user, tenant)
    assert ApiToken.objects.count() == 0
