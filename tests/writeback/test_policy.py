"""Per-tenant policy: contract overrides narrow at once, widen only with a second engineer's review."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.conftest import api_client_for, granted_user, make_client_app
from tests.console.conftest import client_for
from tests.writeback.helpers import consent_for, event
from tests.writeback.sync.conftest import drain, ours
from writeback.errors import DomainError
from writeback.models import (
    AuditEntry,
    ContractOverride,
    ContractOverrideChange,
    ContractRule,
    Write,
)
from writeback.services.audit import verify_chain
from writeback.services.permissions import ActionRefused
from writeback.services.policy import CHECKLIST, override_approve, override_reject, override_request
from writeback.services.tenants import tenant_grant
from writeback.states import WriteState

URL = "/api/v1/events"
ALL = list(CHECKLIST)


@pytest.fixture
def ready(api, tenant, clinician):
    consent_for(tenant)
    return api


def _post(client, key: str, tenant: str = "generic-main"):
    r = client.post(URL, event("problem.confirmed", tenant=tenant, key=key), format="json")
    assert r.status_code == 201, r.json()
    return Write.objects.get(event__uid=r.json()["id"])


def test_a_narrowing_override_takes_effect_for_the_next_event(ready, tenant, engineer):
    rule = ContractRule.objects.get(resource_type="Condition")
    assert rule.approval_required is False
    before = _post(ready, "k1")
    assert before.state == WriteState.PENDING
    assert before.contract_version == f"contract v{rule.version}"

    change = override_request(
        tenant=tenant,
        user=engineer,
        resource_type="Condition",
        approval_required=True,
        risk="high",
        note="problems reviewed by a clinician at this hospital",
    )
    assert change.status == ContractOverrideChange.Status.APPLIED and not change.widens
    after = _post(ready, "k2")
    assert after.state == WriteState.AWAITING_APPROVAL
    assert after.approval_required is True and after.risk == "high"
    assert after.contract_version == f"contract v{rule.version} + tenant override v1"
    before.refresh_from_db()
    assert before.state == WriteState.PENDING  # decided under the old policy, left alone

    entry = AuditEntry.objects.get(action="contract_override.changed")
    assert entry.actor == "eve.engineer" and entry.tenant == "generic-main"
    assert entry.data["before"]["approval_required"] is False and entry.data["before"]["risk"] == "medium"
    assert entry.data["after"]["approval_required"] is True and entry.data["after"]["risk"] == "high"
    assert verify_chain().ok


def test_another_tenant_is_unaffected(ready, tenant, other_tenant, engineer, clinician):
    override_request(
        tenant=tenant, user=engineer, resource_type="Condition", approval_required=True, note="local rule"
    )
    consent_for(other_tenant)
    tenant_grant(tenant=other_tenant, user=clinician)
    app = make_client_app("other-portal")
    other_api = api_client_for(app, other_tenant)
    w = _post(other_api, "o1", tenant="other")
    assert w.tenant == other_tenant and w.state == WriteState.PENDING and w.approval_required is False
    assert not ContractOverride.objects.filter(tenant=other_tenant).exists()


def test_narrowing_fields_refuses_the_next_event_that_writes_them(ready, tenant, engineer):
    rule = ContractRule.objects.get(resource_type="Condition")
    keep = [f for f in rule.writable_fields if f != "note"]
    override_request(
        tenant=tenant, user=engineer, resource_type="Condition", writable_fields=keep, note="no free text"
    )
    r = ready.post(URL, event("problem.confirmed", key="n1"), format="json")
    assert r.status_code == 422, r.json()
    assert "note" in str(r.json())
    assert not Write.objects.exists()


def test_a_widening_waits_for_a_second_engineer_with_the_checklist(ready, tenant, engineer, engineer2):
    override_request(
        tenant=tenant, user=engineer, resource_type="Condition", approval_required=True, note="tighten"
    )
    change = override_request(
        tenant=tenant, user=engineer, resource_type="Condition", approval_required=False, note="loosen"
    )
    assert change.widens and change.status == ContractOverrideChange.Status.PENDING
    with pytest.raises(DomainError, match="already waits"):
        override_request(tenant=tenant, user=engineer2, resource_type="Condition", risk="low", note="again")
    # Nothing changed yet: the next event still waits for approval.
    assert _post(ready, "w1").state == WriteState.AWAITING_APPROVAL

    # The requester cannot approve their own widening: refused, audited, nothing applied.
    with pytest.raises(ActionRefused):
        override_approve(change=change, user=engineer, checklist=ALL)
    refusal = AuditEntry.objects.filter(action="access.refused").last()
    assert refusal.data["rule"] == "four-eyes" and refusal.actor == "eve.engineer"
    # A second engineer must confirm every checklist item.
    with pytest.raises(Exception, match="checklist"):
        override_approve(change=change, user=engineer2, checklist=["security"])
    change.refresh_from_db()
    assert change.status == ContractOverrideChange.Status.PENDING
    assert ContractOverride.objects.get(tenant=tenant).approval_required is True

    override_approve(change=change, user=engineer2, checklist=ALL, note="reviewed")
    change.refresh_from_db()
    assert change.status == ContractOverrideChange.Status.APPLIED and change.decided_by == engineer2
    assert change.checklist == {k: True for k in CHECKLIST}
    override = ContractOverride.objects.get(tenant=tenant)
    assert override.approval_required is None and override.version == 2  # back to the contract row
    assert _post(ready, "w2").state == WriteState.PENDING
    approved = AuditEntry.objects.get(action="contract_override.change_approved")
    assert approved.actor == "ed.engineer" and approved.data["requested_by"] == "eve.engineer"
    changed = AuditEntry.objects.filter(action="contract_override.changed").last()
    assert changed.data["before"]["approval_required"] is True
    assert changed.data["after"]["approval_required"] is False
    assert override.history.count() == 2
    assert verify_chain().ok


def test_a_stale_widening_cannot_be_approved(tenant, engineer, engineer2):
    override_request(tenant=tenant, user=engineer, resource_type="Condition", risk="high", note="up")
    change = override_request(
        tenant=tenant, user=engineer, resource_type="Condition", risk="low", note="down"
    )
    assert change.widens
    # A later narrowing closes the pending widening: it was asked against the old row.
    override_request(tenant=tenant, user=engineer2, resource_type="Condition", risk="very_high", note="up")
    change.refresh_from_db()
    assert change.status == ContractOverrideChange.Status.REJECTED
    with pytest.raises(Exception, match="already"):
        override_approve(change=change, user=engineer2, checklist=ALL)
    assert ContractOverride.objects.get(tenant=tenant).risk == "very_high"


def test_reject_leaves_the_policy_unchanged(tenant, engineer, engineer2):
    change = override_request(
        tenant=tenant, user=engineer, resource_type="Condition", operations=["create"], note="no undo"
    )
    assert not change.widens
    widen = override_request(
        tenant=tenant, user=engineer, resource_type="Condition", operations=["create", "compensate"], note="w"
    )
    override_reject(change=widen, user=engineer2, note="keep it narrow")
    assert ContractOverride.objects.get(tenant=tenant).operations == ["create"]
    assert AuditEntry.objects.filter(action="contract_override.change_rejected").count() == 1


@pytest.mark.parametrize(
    "kwargs, rule",
    [
        ({"resource_type": "Nope", "risk": "high"}, "invalid-value"),
        ({"resource_type": "Condition", "risk": "catastrophic"}, "invalid-value"),
        ({"resource_type": "Condition", "operations": ["create", "delete"]}, "outside-contract"),
        ({"resource_type": "Condition", "writable_fields": ["subject", "meta.security"]}, "outside-contract"),
        ({"resource_type": "Condition", "operations": []}, "invalid-value"),
        ({"resource_type": "Condition"}, "invalid-value"),
        ({"resource_type": "Condition", "risk": "medium"}, "no-change"),
    ],
)
def test_hostile_requests_are_refused_and_change_nothing(tenant, engineer, kwargs, rule):
    with pytest.raises(DomainError) as exc:
        override_request(tenant=tenant, user=engineer, note="try", **kwargs)
    assert exc.value.rule == rule
    assert not ContractOverride.objects.exists() and not ContractOverrideChange.objects.exists()


def test_other_roles_and_tenants_may_not_change_policy(tenant, other_tenant, clinician, admin_user):
    outsider_engineer = granted_user(other_tenant, "oz.engineer", "integration_engineer")
    for user in (clinician, admin_user, outsider_engineer):
        with pytest.raises(ActionRefused):
            override_request(
                tenant=tenant, user=user, resource_type="Condition", approval_required=True, note="x"
            )
    assert not ContractOverride.objects.exists()
    assert AuditEntry.objects.filter(action="access.refused", object_type="contract_override").count() == 3


def test_command_narrows_at_once_and_widens_through_approval(tenant, engineer, engineer2, capsys):
    call_command(
        "tenant_contract",
        "generic-main",
        "--by",
        "eve.engineer",
        "--resource-type",
        "Observation",
        "--require-approval",
        "--reason",
        "vitals reviewed here",
    )
    assert ContractOverride.objects.get(tenant=tenant, resource_type="Observation").approval_required
    call_command(
        "tenant_contract",
        "generic-main",
        "--by",
        "eve.engineer",
        "--resource-type",
        "Observation",
        "--no-approval",
        "--reason",
        "back",
    )
    change = ContractOverrideChange.objects.get(status="pending")
    with pytest.raises(CommandError, match="second integration engineer"):
        call_command(
            "tenant_contract",
            "generic-main",
            "--by",
            "eve.engineer",
            "--approve",
            str(change.uid),
            "--checklist",
            ",".join(ALL),
        )
    call_command(
        "tenant_contract",
        "generic-main",
        "--by",
        "ed.engineer",
        "--approve",
        str(change.uid),
        "--checklist",
        ",".join(ALL),
    )
    assert ContractOverride.objects.get(tenant=tenant).approval_required is None
    call_command("tenant_contract", "generic-main")
    assert "Observation" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope", "--by", "eve.engineer", "--resource-type", "Observation"], "unknown tenant"),
        (["generic-main", "--by", "ghost", "--resource-type", "Observation", "--risk", "high"], "--by"),
        (
            [
                "generic-main",
                "--by",
                "eve.engineer",
                "--resource-type",
                "Observation",
                "--risk",
                "x",
                "--reason",
                "x",
            ],
            "risk must be one of",
        ),
        (["generic-main", "--by", "eve.engineer", "--resource-type", "Observation", "--risk", "high"], "why"),
        (["generic-main", "--by", "eve.engineer", "--approve", "not-a-uuid"], "no policy change"),
        (
            [
                "generic-main",
                "--by",
                "eve.engineer",
                "--resource-type",
                "Observation",
                "--operations",
                "delete",
                "--reason",
                "x",
            ],
            "not in the contract",
        ),
    ],
)
def test_command_refuses_bad_input_clearly(tenant, engineer, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("tenant_contract", *args)
    assert not ContractOverride.objects.exists()


def test_contract_rows_are_versioned_on_every_change(db):
    rule = ContractRule.objects.get(resource_type="Observation")
    v, kept = rule.version, rule.history.count()
    rule.approval_required = True
    rule.save()
    rule.refresh_from_db()
    assert rule.version == v + 1 and rule.history.count() == kept + 1


def test_console_form_narrows_and_the_write_page_shows_the_contract_version(
    ready, tenant, engineer, engineer2
):
    c1 = client_for(engineer)
    r = c1.post(
        f"/tenants/{tenant.slug}/policy",
        {"resource_type": "Condition", "approval": "1", "risk": "", "note": "review problems here"},
    )
    assert r.status_code == 302
    assert ContractOverride.objects.get(tenant=tenant).approval_required is True
    page = c1.get(f"/tenants/{tenant.slug}/").content.decode()
    assert "Per-tenant policy" in page and "tenant override v1" in page
    w = _post(ready, "c1")
    assert w.state == WriteState.AWAITING_APPROVAL
    page = c1.get(f"/writes/{w.uid}/").content.decode()
    assert "Decided under" in page and w.contract_version in page and "tenant override v1" in page

    # Widening through the form waits; the requester's approval is refused; the second engineer must tick
    # every checklist item.
    c1.post(f"/tenants/{tenant.slug}/policy", {"resource_type": "Condition", "approval": "0", "note": "undo"})
    change = ContractOverrideChange.objects.get(status="pending")
    assert c1.post(f"/policy-changes/{change.uid}/approve", {"checklist": ALL}).status_code == 403
    assert (
        "a second integration engineer must approve it" in c1.get(f"/tenants/{tenant.slug}/").content.decode()
    )
    c2 = client_for(engineer2)
    page = c2.get(f"/tenants/{tenant.slug}/").content.decode()
    assert "Approve widening" in page and "Clinical workflow" in page and "(widens)" in page
    assert c2.post(f"/policy-changes/{change.uid}/approve", {"checklist": ["security"]}).status_code == 400
    assert ContractOverride.objects.get(tenant=tenant).approval_required is True
    assert c2.post(f"/policy-changes/{change.uid}/approve", {"checklist": ALL}).status_code == 302
    assert ContractOverride.objects.get(tenant=tenant).approval_required is None


@pytest.mark.parametrize(
    "body",
    [
        {"resource_type": "Nope", "approval": "1", "note": "x"},
        {"resource_type": "Condition", "approval": "1"},
        {"resource_type": "Condition", "risk": "catastrophic", "note": "x"},
        {"resource_type": "Condition", "operations": "create,delete", "note": "x"},
        {"resource_type": "Condition", "writable_fields": "meta", "note": "x"},
        {"resource_type": "Condition", "note": "x"},
    ],
)
def test_console_form_refuses_hostile_input_with_a_message(tenant, engineer, body):
    r = client_for(engineer).post(f"/tenants/{tenant.slug}/policy", body)
    assert r.status_code in (302, 400, 409)
    assert not ContractOverride.objects.exists() and not ContractOverrideChange.objects.exists()


def test_console_policy_is_for_engineers_of_the_tenant(tenant, clinician, admin_user, outsider):
    for user in (clinician, admin_user, outsider):
        r = client_for(user).post(
            f"/tenants/{tenant.slug}/policy", {"resource_type": "Condition", "approval": "1", "note": "x"}
        )
        assert r.status_code in (403, 404)
    assert not ContractOverride.objects.exists()


def test_the_api_shows_the_contract_version(ready, tenant, engineer, app_user):
    override_request(tenant=tenant, user=engineer, resource_type="Condition", risk="high", note="t")
    w = _post(ready, "api1")
    body = ready.get(f"/api/v1/writes/{w.uid}").json()
    assert body["contract_version"].endswith("+ tenant override v1") and body["payload_purged_at"] is None


def test_narrowed_fields_also_stop_queued_writes_before_sending(live, sim, api, engineer):
    queued = _post(api, "q1")
    assert queued.state == WriteState.PENDING and "note" in queued.payload
    rule = ContractRule.objects.get(resource_type="Condition")
    keep = [f for f in rule.writable_fields if f != "note"]
    override_request(tenant=live, user=engineer, resource_type="Condition", writable_fields=keep, note="x")
    drain()
    queued.refresh_from_db()
    assert queued.state == WriteState.FAILED_TERMINAL and "capability check" in queued.last_error
    assert ours(sim) == {}
