"""Intake's SQL per event, and that what it reads once per event (token, roles, tenant access, the
initiator) or keeps in memory (the tenant's contract) never outlives a change: each change below takes
effect for the very next event, which fails closed, is audited, and writes nothing."""

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.conftest import api_client_for, make_client_app
from tests.writeback.helpers import consent_for, event
from writeback.models import (
    ApiToken,
    AuditEntry,
    BusinessEvent,
    Capability,
    ContractRule,
    ContractStamp,
    PatientIdentity,
    Write,
)
from writeback.services.policy import override_request
from writeback.services.tenants import tenant_revoke
from writeback.services.tokens import api_token_revoke
from writeback.states import WriteState

URL = "/api/v1/events"
# Token with its user's roles; the tenant with access, duplicate and identity flags and the contract
# stamp; the initiator with roles, grant and Practitioner; consent; then the event, the writes (inserted
# already queued), the audit chain's head and the audit entries (one INSERT each). PostgreSQL adds the
# audit chain's advisory lock; a patient's first event adds the INSERT of its identity.
STATEMENTS = 8


@pytest.fixture
def per_event(db) -> int:
    return STATEMENTS + (connection.vendor == "postgresql")


@pytest.fixture
def ready(api, tenant, clinician):
    consent_for(tenant)
    # Warm: the contract is read once, then kept while the stamp stays the same.
    assert api.post(URL, event("problem.confirmed", key="warm-up"), format="json").status_code == 201
    return api


def _vitals(key: str, measurements: int) -> dict:
    body = event("vitals.recorded", key=key)
    body["data"]["measurements"] = body["data"]["measurements"][:measurements]
    return body


def _statements(client, body) -> tuple[int, list[str]]:
    with CaptureQueriesContext(connection) as ctx:
        r = client.post(URL, body, format="json")
    assert r.status_code == 201, r.json()
    # The test's own transaction makes intake's atomic block a savepoint: not a statement of intake's.
    sql = [q["sql"] for q in ctx.captured_queries if "SAVEPOINT" not in q["sql"]]
    return len(sql), sql


def _charts_identity(sql: str) -> bool:
    # PostgreSQL: INSERT ... ON CONFLICT DO NOTHING; SQLite: INSERT OR IGNORE.
    return sql.lstrip().startswith("INSERT") and '"writeback_patientidentity"' in sql.split("(")[0]


@pytest.mark.parametrize("measurements", [1, 6])
def test_an_event_costs_the_same_statements_whatever_its_writes(ready, measurements, per_event):
    count, sql = _statements(ready, _vitals(f"v{measurements}", measurements))
    assert count == per_event, "\n".join(sql)
    assert Write.objects.filter(resource_type="Observation").count() == measurements
    # One INSERT for the writes (already in their queue: no UPDATE), one INSERT for every audit entry.
    assert sum(s.lstrip().startswith('INSERT INTO "writeback_write"') for s in sql) == 1
    assert not any(s.lstrip().startswith('UPDATE "writeback_write"') for s in sql)
    assert sum(s.lstrip().startswith('INSERT INTO "writeback_auditentry"') for s in sql) == 1
    # The patient's identity was charted by the warm-up event: nothing to add.
    assert not any(_charts_identity(s) for s in sql)
    # event.received, and per write write.created + write.transition, in that one INSERT.
    assert AuditEntry.objects.filter(action="write.created").count() == measurements + 1
    writes = Write.objects.filter(event__idempotency_key=f"v{measurements}")
    assert {w.state for w in writes} == {WriteState.PENDING}
    # The trail still says both steps of each write: created validated, then queued.
    for w in writes:
        trail = [
            (e.action, e.data.get("state") or (e.data["from"], e.data["to"], e.data["reason"]))
            for e in AuditEntry.objects.filter(write_uid=str(w.uid)).order_by("seq")
        ]
        assert trail == [
            ("write.created", WriteState.VALIDATED),
            ("write.transition", (WriteState.VALIDATED, WriteState.PENDING, "validated at intake")),
        ]


def test_a_patients_first_event_charts_its_identity_with_one_more_statement(ready, tenant, per_event):
    consent_for(tenant, patient="pat-1002")
    body = _vitals("first", 1)
    body["patient"]["id"] = "pat-1002"
    body["patient"]["identifier"]["value"] = "MRN-1002"
    count, sql = _statements(ready, body)
    assert count == per_event + 1, "\n".join(sql)
    assert sum(_charts_identity(s) for s in sql) == 1
    assert PatientIdentity.objects.filter(
        tenant=tenant, patient_ref="pat-1002", identifier_system=body["patient"]["identifier"]["system"],
        identifier_value="MRN-1002",
    ).exists()  # fmt: skip
    again = _vitals("second", 1)
    again["patient"] = body["patient"]
    assert _statements(ready, again)[0] == per_event
    assert PatientIdentity.objects.filter(tenant=tenant, patient_ref="pat-1002").count() == 1


def test_a_contract_change_is_read_by_the_next_event_then_kept_again(ready, tenant, engineer, per_event):
    first, _ = _statements(ready, _vitals("c1", 1))
    override_request(tenant=tenant, user=engineer, resource_type="Observation", risk="high", note="review")
    reloaded, sql = _statements(ready, _vitals("c2", 1))
    again, _ = _statements(ready, _vitals("c3", 1))
    assert first == again == per_event
    # The contract rows, the tenant's overrides and its capabilities: three more, once.
    assert reloaded == per_event + 3, "\n".join(sql)
    assert list(
        Write.objects.filter(event__idempotency_key__in=["c2", "c3"]).values_list("risk", flat=True)
    ) == [
        "high",
        "high",
    ]


def test_every_change_to_the_contract_tables_changes_the_stamp(tenant):
    def stamp() -> int:
        return ContractStamp.objects.get().value

    seen = [stamp()]
    cap = Capability.objects.filter(tenant=tenant, source="manual").first()
    Capability.objects.filter(pk=cap.pk).update(allowed=False)
    seen.append(stamp())
    cap.delete()
    seen.append(stamp())
    ContractRule.objects.filter(resource_type="Observation").update(approval_required=True)
    seen.append(stamp())
    assert len(set(seen)) == len(seen), seen


def _refused_next(client, key: str, status: int) -> dict:
    before = Write.objects.count(), BusinessEvent.objects.count()
    r = client.post(URL, _vitals(key, 1), format="json")
    assert r.status_code == status, r.content
    assert (Write.objects.count(), BusinessEvent.objects.count()) == before
    return r.json()


def test_a_revoked_token_refuses_the_next_event(ready, app_user):
    api_token_revoke(token=ApiToken.objects.get(user=app_user), actor="tests")
    _refused_next(ready, "t1", 401)
    entry = AuditEntry.objects.filter(action="access.refused").latest("seq")
    assert entry.data["rule"] == "token-revoked"


def test_a_revoked_tenant_grant_refuses_the_next_event(ready, tenant, app_user):
    tenant_revoke(tenant=tenant, user=app_user, actor="tests")
    _refused_next(ready, "g1", 403)
    entry = AuditEntry.objects.filter(action="access.refused").latest("seq")
    assert (entry.tenant, entry.data["rule"]) == ("generic-main", "tenant-forbidden")


def test_a_removed_role_refuses_the_next_event(ready, app_user):
    app_user.groups.remove(Group.objects.get(name="client_app"))
    _refused_next(ready, "r1", 403)
    entry = AuditEntry.objects.filter(action="access.refused").latest("seq")
    assert entry.data["rule"] == "role-required"


def test_the_initiator_losing_their_role_refuses_the_next_event(ready, clinician):
    clinician.groups.remove(Group.objects.get(name="clinician"))
    _refused_next(ready, "i1", 403)
    entry = AuditEntry.objects.filter(action="access.refused").latest("seq")
    assert (entry.data["rule"], entry.object_id) == ("initiator-forbidden", "amy.clinician")


def test_the_initiator_losing_the_tenant_refuses_the_next_event(ready, tenant, clinician):
    tenant_revoke(tenant=tenant, user=clinician, actor="tests")
    _refused_next(ready, "i2", 403)
    entry = AuditEntry.objects.filter(action="access.refused").latest("seq")
    assert entry.data["rule"] == "initiator-forbidden"


def test_a_narrowing_override_refuses_the_next_event(ready, tenant, engineer):
    assert ready.post(URL, _vitals("o0", 1), format="json").status_code == 201  # kept in memory now
    override_request(
        tenant=tenant, user=engineer, resource_type="Observation", operations=["compensate"], note="stop"
    )
    body = _refused_next(ready, "o1", 422)
    assert "operation-not-supported" in str(body)
    assert AuditEntry.objects.filter(action="event.refused").latest("seq").data["rule"] == (
        "operation-not-supported"
    )


@pytest.mark.parametrize("how", ["update", "delete"])
def test_a_capability_turned_off_refuses_the_next_event(ready, tenant, how):
    """Whatever path changes the capability (here a bare queryset, as a SQL session would): the
    database changes the stamp, so the contract kept in memory is not used again."""
    assert ready.post(URL, _vitals("x0", 1), format="json").status_code == 201
    rows = Capability.objects.filter(tenant=tenant, resource_type="Observation", operation="create")
    rows.update(allowed=False) if how == "update" else rows.delete()
    _refused_next(ready, "x1", 422)
    refused = AuditEntry.objects.filter(action="event.refused").latest("seq")
    assert refused.data["rule"] in ("operation-not-supported", "capability-not-granted")


def test_a_contract_row_changed_in_place_reaches_the_next_event(ready):
    assert ready.post(URL, _vitals("a0", 1), format="json").json()["writes"][0]["state"] == "pending"
    ContractRule.objects.filter(resource_type="Observation").update(approval_required=True)
    r = ready.post(URL, _vitals("a1", 1), format="json")
    assert r.status_code == 201
    assert Write.objects.get(event__uid=r.json()["id"]).state == WriteState.AWAITING_APPROVAL


def test_another_tenants_token_never_reaches_this_tenant(tenant, other_tenant, clinician):
    consent_for(tenant)
    other_app = make_client_app("other-app")
    client = api_client_for(other_app, other_tenant)
    _refused_next(client, "ot1", 403)
    assert AuditEntry.objects.filter(action="access.refused").latest("seq").data["rule"] == "tenant-forbidden"


def test_the_on_behalf_permission_withdrawn_refuses_the_next_event(ready, app_user):
    from django.contrib.auth.models import Permission

    app_user.user_permissions.remove(Permission.objects.get(codename="submit_on_behalf"))
    _refused_next(ready, "b1", 403)
    entry = AuditEntry.objects.filter(action="access.refused").latest("seq")
    assert (entry.data["rule"], entry.object_id) == ("initiator-forbidden", "amy.clinician")
