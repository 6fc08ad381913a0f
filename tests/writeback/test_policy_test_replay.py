"""Replay into a test environment: only into a test tenant of the same vendor, with lineage, audited."""

import pytest

from tests.console.conftest import client_for
from tests.writeback.helpers import consent_for, event
from writeback.errors import DomainError
from writeback.models import AuditEntry, BusinessEvent, Write
from writeback.services.permissions import ActionRefused
from writeback.services.policy import override_request
from writeback.services.sandbox import replay_into_test
from writeback.services.tenants import tenant_create, tenant_grant
from writeback.states import WriteState


@pytest.fixture
def sandbox(db):
    return tenant_create(slug="sandbox", vendor="generic", base_url="http://127.0.0.1:9/fhir", is_test=True)


@pytest.fixture
def original(api, tenant, clinician):
    consent_for(tenant)
    r = api.post("/api/v1/events", event("problem.confirmed", key="t1"), format="json")
    assert r.status_code == 201, r.json()
    return Write.objects.get(event__uid=r.json()["id"])


def _nothing_written(sandbox) -> bool:
    return (
        not BusinessEvent.objects.filter(tenant=sandbox).exists()
        and not Write.objects.filter(tenant=sandbox).exists()
    )


def test_a_write_replays_into_a_test_tenant_with_lineage(original, sandbox, admin_user, engineer):
    tenant_grant(tenant=sandbox, user=admin_user)
    tenant_grant(tenant=sandbox, user=engineer)
    # The test tenant's own policy decides: here it asks for approval where the live one does not.
    override_request(
        tenant=sandbox, user=engineer, resource_type="Condition", approval_required=True, note="t"
    )
    copies = replay_into_test(
        event=original.event, write=original, target=sandbox, user=admin_user, reason="try"
    )
    assert len(copies) == 1
    copy = Write.objects.get(pk=copies[0].pk)
    assert copy.tenant == sandbox and copy.event.tenant == sandbox and copy.uid != original.uid
    assert copy.patient_ref == original.patient_ref and copy.resource_type == "Condition"
    assert copy.state == WriteState.AWAITING_APPROVAL and "tenant override v1" in copy.contract_version
    assert copy.context["test_replay_of"] == {
        "event": str(original.event.uid),
        "tenant": "generic-main",
        "write": str(original.uid),
    }
    # Its own identifier at the target (a new write), never the original's.
    assert str(copy.uid) in str(copy.payload["identifier"]) and str(original.uid) not in str(copy.payload)
    entry = AuditEntry.objects.get(action="test_replay.created")
    assert entry.actor == "ada.admin" and entry.tenant == "sandbox"
    assert entry.data["from_event"] == str(original.event.uid) and entry.data["from_writes"] == [
        str(original.uid)
    ]
    original.refresh_from_db()
    assert original.state == WriteState.PENDING and original.tenant.slug == "generic-main"


def test_never_into_a_live_tenant_or_another_vendor(original, other_tenant, admin_user, db):
    epic_test = tenant_create(
        slug="epic-test", vendor="epic", base_url="http://127.0.0.1:9/fhir", is_test=True
    )
    for target in (other_tenant, epic_test, original.tenant):
        tenant_grant(tenant=target, user=admin_user)
        with pytest.raises(ActionRefused):
            replay_into_test(event=original.event, target=target, user=admin_user, reason="x")
    refusals = AuditEntry.objects.filter(action="access.refused", data__rule="not-a-test-tenant")
    assert refusals.count() == 3
    assert BusinessEvent.objects.count() == 1 and Write.objects.count() == 1


def test_only_admins_and_engineers_of_both_tenants(original, sandbox, clinician, admin_user):
    tenant_grant(tenant=sandbox, user=clinician)
    with pytest.raises(ActionRefused):
        replay_into_test(event=original.event, target=sandbox, user=clinician, reason="x")
    # An admin of the live tenant who may not act on the test tenant.
    with pytest.raises(ActionRefused):
        replay_into_test(event=original.event, target=sandbox, user=admin_user, reason="x")
    assert _nothing_written(sandbox)


def test_a_reason_is_required_and_the_test_tenants_contract_applies(original, sandbox, admin_user, engineer):
    tenant_grant(tenant=sandbox, user=admin_user)
    tenant_grant(tenant=sandbox, user=engineer)
    with pytest.raises(DomainError, match="say why"):
        replay_into_test(event=original.event, target=sandbox, user=admin_user, reason="  ")
    override_request(
        tenant=sandbox, user=engineer, resource_type="Condition", operations=["compensate"], note="t"
    )
    with pytest.raises(DomainError, match="sandbox"):
        replay_into_test(event=original.event, target=sandbox, user=admin_user, reason="x")
    assert _nothing_written(sandbox)


def test_the_write_page_offers_it_and_the_console_replays(original, sandbox, admin_user, other_tenant):
    tenant_grant(tenant=sandbox, user=admin_user)
    c = client_for(admin_user)
    page = c.get(f"/writes/{original.uid}/").content.decode()
    assert "Replay into a test tenant" in page and 'value="sandbox"' in page
    assert 'value="other"' not in page  # a live tenant is never offered
    r = c.post(
        f"/writes/{original.uid}/test-replay", {"target": "sandbox", "scope": "event", "reason": "check"}
    )
    assert r.status_code == 302
    copy = Write.objects.get(tenant=sandbox)
    assert r.url == f"/writes/{copy.uid}/"
    copy_page = c.get(r.url)
    assert copy_page.status_code == 200
    assert (
        "Replayed from" in copy_page.content.decode() and str(original.uid)[:8] in copy_page.content.decode()
    )
    # A hostile post naming a live tenant is refused, audited, and writes nothing more.
    tenant_grant(tenant=other_tenant, user=admin_user)
    r = c.post(f"/writes/{original.uid}/test-replay", {"target": "other", "scope": "write", "reason": "x"})
    assert r.status_code == 403
    assert not Write.objects.filter(tenant=other_tenant).exists()
    assert (
        c.post(f"/writes/{original.uid}/test-replay", {"target": "sandbox", "scope": "?"}).status_code == 302
    )
    assert (
        c.post(
            f"/writes/{original.uid}/test-replay", {"target": "nope", "scope": "write", "reason": "x"}
        ).status_code
        == 404
    )
    assert Write.objects.filter(tenant=sandbox).count() == 1
