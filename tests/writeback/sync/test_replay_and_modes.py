"""Replay in its three labelled modes (with lineage), and the dry-run and shadow modes."""

import pytest
from django.utils import timezone

from adapters.identifiers import our_identifier_value as identifier_of
from tests.writeback.sync.conftest import drain, ours, post
from writeback.errors import DomainError
from writeback.models import AuditEntry, TenantMode, Write
from writeback.services.approvals import write_approve
from writeback.services.replay import write_replay
from writeback.services.tenants import tenant_set_mode
from writeback.states import WriteState

SYSTEM = "urn:fhir-writeback:write-id"


def _failed(api, sim, event_type="problem.confirmed", **data):
    sim.set_faults("error_5xx=1,seed=1")
    writes = post(api, event_type, **data)
    for w in writes:
        Write.objects.filter(pk=w.pk).update(max_attempts=1)
    drain()
    sim.clear_faults()
    for w in writes:
        w.refresh_from_db()
        assert w.state == WriteState.FAILED_TERMINAL
    return writes


def test_resend_requeues_the_same_write(live, sim, api, admin_user):
    w = _failed(api, sim)[0]
    Write.objects.filter(pk=w.pk).update(max_attempts=5)
    same = write_replay(write=w, user=admin_user, mode="resend", reason="vendor outage over")
    assert same.pk == w.pk and same.state == WriteState.PENDING and same.attempts == 0
    drain()
    w.refresh_from_db()
    assert w.state == WriteState.COMMITTED
    assert ours(sim) == {str(w.uid): 1}
    entry = AuditEntry.objects.get(action="write.replayed")
    assert entry.data["mode"] == "resend"


def test_rederive_makes_a_linked_write_with_the_same_identity(live, sim, api, engineer):
    w = _failed(api, sim)[0]
    new = write_replay(write=w, user=engineer, mode="rederive", reason="mapping fixed")
    assert new.pk != w.pk and new.replay_of_id == w.pk
    assert identifier_of(new.payload, SYSTEM) == str(w.uid)  # found where the original may have landed
    w.refresh_from_db()
    assert w.state == WriteState.SUPERSEDED  # history kept, stream unblocked
    drain()
    new.refresh_from_db()
    assert new.state == WriteState.COMMITTED
    assert ours(sim) == {str(w.uid): 1}


def test_rederive_never_makes_a_second_chart_entry_when_the_original_landed(
    live, sim, api, engineer, settings
):
    settings.WRITEBACK_HTTP_READ_TIMEOUT = 0.3
    sim.set_faults({"timeout_after_commit": 1, "stall_seconds": 1.5, "seed": 9})
    w = post(api, "problem.confirmed")[0]
    drain()
    sim.clear_faults()
    w.refresh_from_db()
    assert w.state == WriteState.OUTCOME_UNKNOWN and ours(sim) == {str(w.uid): 1}
    Write.objects.filter(pk=w.pk).update(state=WriteState.FAILED_TERMINAL)  # an operator gave up on it
    new = write_replay(write=w, user=engineer, mode="rederive")
    Write.objects.filter(pk=new.pk).update(last_outcome="in_flight")  # as if a worker died sending it
    drain()
    new.refresh_from_db()
    assert new.state == WriteState.COMMITTED
    assert ours(sim) == {str(w.uid): 1}


def test_edit_and_send_of_a_high_risk_write_needs_approval(live, sim, api, admin_user, clinician2):
    allergy = post(api, "allergy.recorded")[0]
    write_approve(write=allergy, user=clinician2, rationale="confirmed with patient")
    sim.set_faults("error_5xx=1,seed=1")
    Write.objects.filter(pk=allergy.pk).update(max_attempts=1)
    drain()
    sim.clear_faults()
    allergy.refresh_from_db()
    assert allergy.state == WriteState.FAILED_TERMINAL
    edited = {**allergy.payload, "criticality": "low"}
    new = write_replay(
        write=allergy, user=admin_user, mode="edit", payload=edited, reason="criticality wrong"
    )
    assert new.state == WriteState.AWAITING_APPROVAL and new.payload["criticality"] == "low"
    write_approve(write=new, user=clinician2, rationale="agreed")
    drain()
    new.refresh_from_db()
    assert new.state == WriteState.COMMITTED


def test_edit_refuses_invalid_fhir_and_ehr_owned_fields(live, sim, api, admin_user):
    w = _failed(api, sim)[0]
    with pytest.raises(DomainError, match="valid FHIR"):
        write_replay(write=w, user=admin_user, mode="edit", payload={**w.payload, "clinicalStatus": 42})
    with pytest.raises(DomainError):
        write_replay(write=w, user=admin_user, mode="edit", payload={**w.payload, "abatementString": "x"})
    assert Write.objects.count() == 1


def test_replay_of_a_committed_write_only_into_shadow(live, sim, api, engineer):
    w = post(api, "problem.confirmed")[0]
    drain()
    with pytest.raises(DomainError, match="shadow"):
        write_replay(write=w, user=engineer, mode="rederive")
    shadow = write_replay(write=w, user=engineer, mode="rederive", shadow=True)
    drain()
    shadow.refresh_from_db()
    w.refresh_from_db()
    assert shadow.state == WriteState.SHADOWED and w.state == WriteState.COMMITTED
    assert shadow.divergence["compared_with"]["id"] == w.target_resource_id
    assert ours(sim) == {str(w.uid): 1}


def test_dry_run_tenant_previews_and_never_sends(live, sim, api, engineer):
    tenant_set_mode(tenant=live, mode=TenantMode.DRY_RUN, actor=engineer)
    w = post(api, "problem.confirmed")[0]
    drain()
    w.refresh_from_db()
    assert w.state == WriteState.PREVIEWED
    request = w.preview["requests"][0]
    assert request["method"] == "POST" and request["url"].endswith("/Condition")
    assert request["headers"]["If-None-Exist"] == f"identifier={SYSTEM}|{w.uid}"
    assert not [r for r in sim.requests(50) if r["method"] != "GET"]


def test_shadow_tenant_compares_and_never_writes(live, sim, api, engineer):
    before = next(p for p in sim.resources("Patient") if p["id"] == "pat-1001")
    tenant_set_mode(tenant=live, mode=TenantMode.SHADOW, actor=engineer)
    w = post(api, "demographics.updated", base_version=before["meta"]["versionId"])[0]
    drain()
    w.refresh_from_db()
    assert w.state == WriteState.SHADOWED
    fields = {row["field"]: row for row in w.divergence["fields"]}
    assert fields["telecom"]["differs"] is True
    assert w.divergence["differing_fields"] == ["telecom", "address"]
    after = next(p for p in sim.resources("Patient") if p["id"] == "pat-1001")
    assert after["meta"]["versionId"] == before["meta"]["versionId"]


def test_an_approval_bound_to_another_payload_is_void(live, sim, api, clinician2):
    meds = post(api, "medication.reconciled")[0]
    write_approve(write=meds, user=clinician2, rationale="ok")
    Write.objects.filter(pk=meds.pk).update(payload_hash="changed-since-approval")
    drain()
    meds.refresh_from_db()
    assert meds.state == WriteState.AWAITING_APPROVAL
    assert meds.approvals.get().voided_at is not None
    assert ours(sim) == {}


def test_an_expired_approval_is_asked_again(live, sim, api, clinician2):
    meds = post(api, "medication.reconciled")[0]
    approval = write_approve(write=meds, user=clinician2, rationale="ok")
    approval.expires_at = timezone.now()
    approval.save()
    drain()
    meds.refresh_from_db()
    assert meds.state == WriteState.AWAITING_APPROVAL


def test_an_event_replay_resends_what_failed_and_leaves_what_is_in_the_chart(live, sim, api, engineer):
    """vitals.recorded makes six writes: replaying the event after the last two failed resends those
    two and never touches the four already in the chart."""
    from writeback.services.replay import event_replay

    writes = post(api, "vitals.recorded")
    for w in writes[4:]:
        Write.objects.filter(pk=w.pk).update(state=WriteState.FAILED_TERMINAL)
    drain()
    event = writes[0].event
    rows = event_replay(event=event, user=engineer, mode="resend", reason="vendor outage over")
    by_write = {r["write"]: r for r in rows}
    assert [by_write[str(w.uid)]["action"] for w in writes] == ["left"] * 4 + ["replayed"] * 2
    assert "in the chart already" in by_write[str(writes[2].uid)]["reason"]
    drain()
    assert set(Write.objects.filter(event=event).values_list("state", flat=True)) == {WriteState.COMMITTED}
    assert ours(sim) == {str(w.uid): 1 for w in writes}  # one chart entry per intended write


def test_an_event_rederive_adds_what_todays_mapping_produces_and_the_event_never_had(
    live, sim, api, engineer
):
    from writeback.services.replay import event_replay

    writes = post(api, "vitals.recorded")
    drain()
    # As if the event had been stored by a mapping that did not know the last two measurements yet.
    Write.objects.filter(pk__in=[w.pk for w in writes[4:]]).delete()
    rows = event_replay(event=writes[0].event, user=engineer, mode="rederive", reason="mapping learned SpO2")
    added = [r for r in rows if r["action"] == "added"]
    assert len(added) == 2 and {r["action"] for r in rows} == {"left", "added"}
    drain()
    event_writes = Write.objects.filter(event=writes[0].event)
    assert event_writes.count() == 6
    assert set(event_writes.values_list("state", flat=True)) == {WriteState.COMMITTED}
    assert sorted(event_writes.values_list("position", flat=True)) == [0, 1, 2, 3, 4, 5]
    assert entry_count("write.transition", reason="added by a re-derive of its event") == 2


def entry_count(action: str, reason: str) -> int:
    return sum(1 for e in AuditEntry.objects.filter(action=action) if e.data.get("reason") == reason)


def test_an_event_replay_needs_the_replay_role(live, sim, api, clinician):
    from writeback.services.permissions import ActionRefused
    from writeback.services.replay import event_replay

    writes = post(api, "problem.confirmed")
    with pytest.raises(ActionRefused):
        event_replay(event=writes[0].event, user=clinician, mode="resend")
    refused = AuditEntry.objects.get(action="access.refused")
    assert refused.object_id == str(writes[0].event.uid)
