"""A tenant's consent policy: consent required by default, waivable per resource type, always audited."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tests.conftest import api_client_for, granted_user
from tests.writeback.helpers import event
from writeback.errors import DomainError
from writeback.models import AuditEntry, BusinessEvent, Tenant, Write
from writeback.services.permissions import ActionRefused
from writeback.services.tenants import tenant_set_consent_policy

URL = "/api/v1/events"


def _code(r) -> str:
    return r.json()["issue"][0]["details"]["coding"][0]["code"]


def test_waiver_is_saved_and_audited_with_before_and_after(tenant, engineer):
    tenant_set_consent_policy(
        tenant,
        required=True,
        waived_resource_types=["Observation", "Condition", "Observation"],
        actor=engineer,
        reason="vitals and problems covered by the facility's treatment consent",
    )
    tenant.refresh_from_db()
    assert tenant.consent_required is True
    assert tenant.consent_waived_resource_types == ["Condition", "Observation"]
    entry = AuditEntry.objects.get(action="tenant.consent_policy_changed")
    assert (entry.tenant, entry.actor, entry.actor_user_id) == ("generic-main", "eve.engineer", engineer.pk)
    assert entry.data["before"] == {"required": True, "waived_resource_types": []}
    assert entry.data["after"] == {"required": True, "waived_resource_types": ["Condition", "Observation"]}
    assert "treatment consent" in entry.data["reason"]
    assert tenant.history.first().history_change_reason.startswith("vitals and problems")


def test_setting_the_same_policy_again_writes_nothing(tenant):
    tenant_set_consent_policy(tenant, required=True, waived_resource_types=[], actor="tests")
    assert not AuditEntry.objects.filter(action="tenant.consent_policy_changed").exists()


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"waived_resource_types": ["Pizza"], "reason": "x"}, "unknown-resource-type"),
        ({"waived_resource_types": ["observation"], "reason": "x"}, "unknown-resource-type"),
        ({"waived_resource_types": ["Observation"], "reason": "  "}, "reason-required"),
        ({"required": False}, "reason-required"),
    ],
)
def test_invalid_policy_changes_nothing(tenant, kwargs, rule):
    kwargs = {"required": True, "actor": "tests", **kwargs}
    with pytest.raises(DomainError) as caught:
        tenant_set_consent_policy(tenant, **kwargs)
    assert caught.value.rule == rule
    fresh = Tenant.objects.get(pk=tenant.pk)
    assert fresh.consent_required is True and fresh.consent_waived_resource_types == []
    assert not AuditEntry.objects.filter(action="tenant.consent_policy_changed").exists()


def test_people_need_the_engineer_role(tenant, clinician):
    with pytest.raises(ActionRefused, match="configure_tenant"):
        tenant_set_consent_policy(
            tenant, required=True, waived_resource_types=["Observation"], actor=clinician, reason="x"
        )
    assert Tenant.objects.get(pk=tenant.pk).consent_waived_resource_types == []
    refused = AuditEntry.objects.get(action="access.refused")
    assert refused.data["action"] == "configure_tenant" and refused.tenant == "generic-main"


# -- intake honours the waiver ------------------------------------------------------------------------


def test_intake_accepts_a_waived_type_without_consent_and_refuses_the_others(api, tenant, clinician):
    tenant_set_consent_policy(
        tenant, required=True, waived_resource_types=["Condition"], actor="tests", reason="problem list"
    )
    accepted = api.post(URL, event("problem.confirmed"), format="json")
    assert accepted.status_code == 201, accepted.json()
    stored = BusinessEvent.objects.get(uid=accepted.json()["id"])
    assert stored.consent is None and stored.consent_snapshot == {"waived": True}
    assert Write.objects.filter(event=stored, resource_type="Condition").count() == 1

    refused = api.post(URL, event("vitals.recorded"), format="json")
    assert refused.status_code == 403 and _code(refused) == "consent-missing"
    assert BusinessEvent.objects.count() == 1 and Write.objects.count() == 1
    assert AuditEntry.objects.get(action="access.refused").data["rule"] == "consent-missing"


def test_consent_not_required_at_all(api, tenant, clinician):
    tenant_set_consent_policy(tenant, required=False, actor="tests", reason="research sandbox")
    r = api.post(URL, event("vitals.recorded"), format="json")
    assert r.status_code == 201, r.json()
    assert Write.objects.filter(resource_type="Observation").count() == 6


def test_create_tenant_with_a_waiver(db):
    out = StringIO()
    call_command(
        "create_tenant",
        "waived",
        "--vendor",
        "generic",
        "--base-url",
        "http://127.0.0.1:9/fhir",
        "--consent-waived",
        "Observation",
        "--consent-waived",
        "QuestionnaireResponse",
        "--consent-reason",
        "covered by the clinic's intake consent",
        stdout=out,
    )
    tenant = Tenant.objects.get(slug="waived")
    assert tenant.consent_required is True
    assert tenant.consent_waived_resource_types == ["Observation", "QuestionnaireResponse"]
    entry = AuditEntry.objects.get(action="tenant.consent_policy_changed", tenant="waived")
    assert entry.actor == "command:create_tenant"
    assert entry.data["after"]["waived_resource_types"] == ["Observation", "QuestionnaireResponse"]
    assert "waived for: Observation, QuestionnaireResponse" in out.getvalue()

    user = granted_user(tenant, "waived-app", "client_app")
    client = api_client_for(user, tenant)
    body = event("vitals.recorded", tenant="waived")
    del body["initiator"]
    assert client.post(URL, body, format="json").status_code == 201
    body = event("problem.confirmed", tenant="waived")
    del body["initiator"]
    assert client.post(URL, body, format="json").status_code == 403


def test_create_tenant_without_consent_required(db):
    call_command(
        "create_tenant",
        "open",
        "--vendor",
        "generic",
        "--base-url",
        "http://127.0.0.1:9/fhir",
        "--no-consent-required",
        "--consent-reason",
        "synthetic patients only",
        stdout=StringIO(),
    )
    assert Tenant.objects.get(slug="open").consent_required is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--consent-waived", "Pizza", "--consent-reason", "x"], "no contract row for Pizza"),
        (["--consent-waived", "Observation"], "waiving consent needs a reason"),
        (["--no-consent-required"], "waiving consent needs a reason"),
    ],
)
def test_create_tenant_with_a_bad_waiver_creates_nothing(db, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("create_tenant", "half", "--vendor", "generic", "--base-url", "http://x.org/fhir", *args)
    assert not Tenant.objects.filter(slug="half").exists()
    assert not AuditEntry.objects.filter(tenant="half").exists()
