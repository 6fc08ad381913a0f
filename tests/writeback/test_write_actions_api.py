"""POST /api/v1/writes/{id}/approve|reject|replay|compensate|resolve: each role allowed or refused."""

import pytest

from tests.conftest import api_client_for
from tests.writeback.helpers import consent_for, event
from tests.writeback.sync.conftest import drain
from writeback.models import Approval, AuditEntry, Compensation, Write
from writeback.services.permissions import grant_action_permission
from writeback.states import WriteState


@pytest.fixture
def meds(api, tenant, clinician):
    consent_for(tenant)
    r = api.post("/api/v1/events", event("medication.reconciled"), format="json")
    return Write.objects.get(uid=r.json()["writes"][0]["id"])


def _code(r):
    return r.json()["issue"][0]["details"]["coding"][0]["code"]


def test_a_second_clinician_approves(meds, clinician2, tenant):
    r = api_client_for(clinician2, tenant).post(
        f"/api/v1/writes/{meds.uid}/approve", {"rationale": "reviewed"}, format="json"
    )
    assert r.status_code == 200, r.json()
    assert r.json()["state"] == "pending"
    approval = Approval.objects.get(write=meds)
    assert approval.approver == clinician2 and approval.payload_hash == meds.payload_hash
    assert AuditEntry.objects.filter(action="write.approved", write_uid=str(meds.uid)).count() == 1


def test_the_initiator_cannot_approve(meds, clinician, tenant):
    r = api_client_for(clinician, tenant).post(
        f"/api/v1/writes/{meds.uid}/approve", {"rationale": "mine"}, format="json"
    )
    assert r.status_code == 403 and _code(r) == "four-eyes"
    assert Write.objects.get(pk=meds.pk).state == WriteState.AWAITING_APPROVAL
    assert AuditEntry.objects.filter(action="access.refused", object_id=str(meds.uid)).count() == 1


@pytest.mark.parametrize("who", ["admin_user", "engineer", "auditor"])
def test_other_roles_cannot_approve_or_reject(meds, tenant, who, request):
    client = api_client_for(request.getfixturevalue(who), tenant)
    for action in ("approve", "reject"):
        r = client.post(f"/api/v1/writes/{meds.uid}/{action}", {"rationale": "x"}, format="json")
        assert r.status_code == 403 and _code(r) == "role-required"
    assert Write.objects.get(pk=meds.pk).state == WriteState.AWAITING_APPROVAL


def test_rejection_needs_a_rationale_and_is_final(meds, clinician2, tenant):
    client = api_client_for(clinician2, tenant)
    assert (
        client.post(f"/api/v1/writes/{meds.uid}/reject", {"rationale": " "}, format="json").status_code == 400
    )
    r = client.post(
        f"/api/v1/writes/{meds.uid}/reject", {"rationale": "not what we discussed"}, format="json"
    )
    assert r.status_code == 200 and r.json()["state"] == "rejected"
    again = client.post(f"/api/v1/writes/{meds.uid}/approve", {"rationale": "changed my mind"}, format="json")
    assert again.status_code == 409


def test_an_outsider_is_refused_everything(meds, outsider, other_tenant):
    client = api_client_for(outsider, other_tenant)
    body = {"rationale": "x", "note": "x", "kind": "rollback", "reason": "x"}
    for action in ("approve", "reject", "replay", "compensate", "resolve"):
        r = client.post(f"/api/v1/writes/{meds.uid}/{action}", body, format="json")
        assert r.status_code == 403 and _code(r) == "tenant-forbidden"
    assert client.get(f"/api/v1/writes/{meds.uid}").status_code == 403
    assert Write.objects.get(pk=meds.pk).state == WriteState.AWAITING_APPROVAL
    assert AuditEntry.objects.filter(action="access.refused", actor=outsider.username).count() == 6


def test_resolve_is_for_admins_with_a_note(live, sim, api, admin_user, engineer):
    r = api.post("/api/v1/events", event("referral.status_changed", task_id="task-none"), format="json")
    write = Write.objects.get(uid=r.json()["writes"][0]["id"])
    drain()
    assert Write.objects.get(pk=write.pk).state == WriteState.FAILED_TERMINAL
    refused = api_client_for(engineer, live).post(
        f"/api/v1/writes/{write.uid}/resolve", {"note": "x"}, format="json"
    )
    assert refused.status_code == 403
    client = api_client_for(admin_user, live)
    assert client.post(f"/api/v1/writes/{write.uid}/resolve", {}, format="json").status_code == 400
    ok = client.post(
        f"/api/v1/writes/{write.uid}/resolve", {"note": "task re-created in the EHR by hand"}, format="json"
    )
    assert ok.status_code == 200 and ok.json()["state"] == "resolved"


def test_replay_and_compensate_over_the_api(live, sim, api, admin_user, clinician2):
    r = api.post("/api/v1/events", event("problem.confirmed"), format="json")
    write = Write.objects.get(uid=r.json()["writes"][0]["id"])
    drain()
    client = api_client_for(admin_user, live)
    shadow = client.post(
        f"/api/v1/writes/{write.uid}/replay", {"mode": "rederive", "shadow": True}, format="json"
    )
    assert shadow.status_code == 202 and shadow.json()["state"] == "pending"
    bad = client.post(
        f"/api/v1/writes/{write.uid}/compensate", {"kind": "undo", "reason": "x"}, format="json"
    )
    assert bad.status_code == 400
    comp = client.post(
        f"/api/v1/writes/{write.uid}/compensate", {"kind": "rollback", "reason": "wrong chart"}, format="json"
    )
    assert comp.status_code == 202, comp.json()
    assert comp.json()["kind"] == "rollback" and len(comp.json()["writes"]) == 1
    correction = api_client_for(clinician2, live).post(
        f"/api/v1/writes/{write.uid}/compensate",
        {"kind": "correction", "reason": "x", "data": {"note": []}},
        format="json",
    )
    assert correction.status_code == 409  # one compensation at a time
    assert Compensation.objects.count() == 1


def test_write_detail_has_attempts_and_audit(live, sim, api):
    r = api.post("/api/v1/events", event("problem.confirmed"), format="json")
    drain()
    detail = api.get(f"/api/v1/writes/{r.json()['writes'][0]['id']}").json()
    assert detail["state"] == "committed"
    assert [a["method"] for a in detail["attempts_log"]] == ["POST"]  # its answer is the read-back
    actions = [a["action"] for a in detail["audit"]]
    assert actions[:3] == ["write.created", "write.transition", "write.transition"]
    assert all(a["correlation_id"] == r.json()["correlation_id"] for a in detail["audit"])


def test_write_list_filters_and_paginates(live, sim, api):
    for i in range(3):
        api.post(
            "/api/v1/events",
            event("vitals.recorded", key=f"v{i}", effective_at=f"2026-11-20T1{i}:00:00Z"),
            format="json",
        )
    listing = api.get("/api/v1/writes", {"resource_type": "Observation", "page_size": 5}).json()
    assert len(listing["results"]) == 5 and listing["next"]
    second = api.get(listing["next"]).json()
    assert len(second["results"]) == 5
    assert api.get("/api/v1/writes", {"state": "committed"}).json()["results"] == []
    assert api.get("/api/v1/writes", {"state": "bogus"}).status_code == 400


def test_consents_create_and_revoke(api, app_user, tenant):
    grant_action_permission(app_user, "manage_consent")
    r = api.post(
        "/api/v1/consents",
        {
            "tenant": tenant.slug,
            "patient": "pat-1009",
            "scope": {"resource_types": ["Observation"], "actions": ["create"]},
            "period": {"start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"},
        },
        format="json",
    )
    assert r.status_code == 201, r.json()
    consent_id = r.json()["id"]
    bad = api.post(
        "/api/v1/consents",
        {
            "tenant": tenant.slug,
            "patient": "p",
            "period": {"start": "2027-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
        },
        format="json",
    )
    assert bad.status_code == 422
    revoked = api.post(f"/api/v1/consents/{consent_id}/revoke", {"reason": "patient asked"}, format="json")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert AuditEntry.objects.filter(action__in=["consent.created", "consent.revoked"]).count() == 2


def test_openapi_schema_is_served(api):
    r = api.get("/api/schema/")
    assert r.status_code == 200
    assert b"/api/v1/events" in r.content


def test_the_sending_app_aborts_a_referral_change_over_the_api(live, sim, api, app_user, tenant):
    r = api.post("/api/v1/events", event("referral.status_changed", task_id="task-1001"), format="json")
    write = Write.objects.get(uid=r.json()["writes"][0]["id"])
    drain()
    assert Write.objects.get(pk=write.pk).state == WriteState.COMMITTED

    assert api.post(f"/api/v1/writes/{write.uid}/abort", {}, format="json").status_code == 400
    r = api.post(f"/api/v1/writes/{write.uid}/abort", {"reason": "referral system failed"}, format="json")
    assert r.status_code == 202, r.json()
    assert r.json()["outcome"] == "compensating"
    drain()
    assert Write.objects.get(pk=write.pk).state == WriteState.COMPENSATED
    assert next(t for t in sim.resources("Task") if t["id"] == "task-1001")["status"] == "requested"
    # Aborting again changes nothing: the write is closed.
    again = api.post(f"/api/v1/writes/{write.uid}/abort", {"reason": "again"}, format="json")
    assert again.status_code == 409 and _code(again) == "invalid-transition"
    assert Compensation.objects.filter(original_write=write).count() == 1


def test_an_outsider_cannot_abort_or_replay_an_event(live, api, outsider, other_tenant):
    r = api.post("/api/v1/events", event("referral.status_changed", task_id="task-1001"), format="json")
    write = Write.objects.get(uid=r.json()["writes"][0]["id"])
    client = api_client_for(outsider, other_tenant)
    assert client.post(f"/api/v1/writes/{write.uid}/abort", {"reason": "x"}, format="json").status_code == 403
    replay = client.post(f"/api/v1/events/{write.event.uid}/replay", {"mode": "resend"}, format="json")
    assert replay.status_code == 403
    assert Write.objects.get(pk=write.pk).state == WriteState.PENDING
    assert AuditEntry.objects.filter(action="access.refused").count() == 2


def test_an_event_replay_over_the_api(live, sim, api, engineer, tenant):
    r = api.post("/api/v1/events", event("problem.confirmed"), format="json")
    write = Write.objects.get(uid=r.json()["writes"][0]["id"])
    Write.objects.filter(pk=write.pk).update(state=WriteState.FAILED_TERMINAL)
    client = api_client_for(engineer, tenant)
    bad = client.post(f"/api/v1/events/{write.event.uid}/replay", {"mode": "edit"}, format="json")
    assert bad.status_code == 400
    r = client.post(f"/api/v1/events/{write.event.uid}/replay", {"mode": "resend"}, format="json")
    assert r.status_code == 202, r.json()
    assert r.json()["writes"] == [{"write": str(write.uid), "action": "replayed", "replay": str(write.uid)}]
    drain()
    assert Write.objects.get(pk=write.pk).state == WriteState.COMMITTED
    assert sim.count_by_identifier("urn:fhir-writeback:write-id") == {str(write.uid): 1}
