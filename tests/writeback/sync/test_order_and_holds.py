"""Per-stream order, parked streams, the kill switch at each level, and the second check."""

from datetime import timedelta

from django.utils import timezone

from tests.writeback.sync.conftest import drain, ours, post
from writeback.models import Alert, Capability, KillSwitch, TenantMode, Write
from writeback.services.consents import consent_revoke
from writeback.services.holds import current_holds
from writeback.services.tenants import tenant_set_mode
from writeback.states import WriteState
from writeback.sync.claim import claim_due, due_writes, has_open_work


def _patient(api, patient, key, event_type="problem.confirmed", **data):
    from tests.writeback.helpers import event

    body = event(event_type, key=key, **data)
    body["patient"] = {"id": patient}
    r = api.post("/api/v1/events", body, format="json")
    assert r.status_code == 201, r.json()
    return Write.objects.get(uid=r.json()["writes"][0]["id"])


def test_a_stream_is_sent_in_event_order_and_others_flow(live, api):
    first = _patient(api, "pat-1001", "a1", note="first")
    second = _patient(api, "pat-1001", "a2", note="second")
    other = _patient(api, "pat-1002", "b1")
    # The first is retrying (not due yet): the second waits for it, the other patient does not.
    Write.objects.filter(pk=first.pk).update(
        state=WriteState.FAILED_RETRYABLE, next_attempt_at=timezone.now() + timedelta(minutes=5)
    )
    due = list(due_writes().values_list("pk", flat=True))
    assert due == [other.pk]
    assert second.pk not in [w.pk for w in claim_due("w", 10)]


def test_a_poison_write_parks_only_its_own_stream(live, sim, api):
    poison = _patient(api, "pat-1001", "p1", event_type="referral.status_changed", task_id="task-nope")
    behind = _patient(api, "pat-1001", "p2", event_type="referral.status_changed", task_id="task-1001")
    other = _patient(api, "pat-1002", "p3", event_type="referral.status_changed", task_id="task-1002")
    drain()
    assert Write.objects.get(pk=poison.pk).state == WriteState.FAILED_TERMINAL
    assert Write.objects.get(pk=behind.pk).state == WriteState.PENDING  # parked behind the poison write
    assert Write.objects.get(pk=other.pk).state == WriteState.COMMITTED
    assert not has_open_work(holds=current_holds())  # parked is not work a worker can do


def test_paused_tenant_sends_nothing_and_resumes(live, sim, api, engineer):
    tenant_set_mode(tenant=live, mode=TenantMode.PAUSED, actor=engineer, reason="EHR upgrade")
    writes = post(api, "problem.confirmed")
    drain()
    assert Write.objects.get(pk=writes[0].pk).state == WriteState.PENDING
    assert ours(sim) == {} and not [r for r in sim.requests(20) if r["method"] == "POST"]
    tenant_set_mode(tenant=live, mode=TenantMode.LIVE, actor=engineer, reason="upgrade done")
    drain()
    assert Write.objects.get(pk=writes[0].pk).state == WriteState.COMMITTED


def test_pause_after_claim_holds_the_write_at_the_door(live, sim, api, engineer):
    from writeback.sync.process import WriteProcessor
    from writeback.sync.worker import AdapterCache

    writes = post(api, "problem.confirmed")
    claimed = claim_due("w1", 10)
    tenant_set_mode(tenant=live, mode=TenantMode.PAUSED, actor=engineer)
    result = WriteProcessor("w1", AdapterCache()).process(claimed[0])
    assert result.label == "held"
    w = Write.objects.get(pk=writes[0].pk)
    assert w.state == WriteState.PENDING and w.lease_owner == "" and w.last_outcome == ""
    assert ours(sim) == {}


def test_resource_type_kill_switch_hold_and_drain(live, sim, api, engineer):
    vitals = post(api, "vitals.recorded")
    problem = post(api, "problem.confirmed")
    switch = KillSwitch.objects.create(
        scope="resource_type",
        tenant=live,
        resource_type="Observation",
        behaviour="hold",
        reason="flowsheet mapping broken",
        created_by=engineer,
    )
    drain()
    assert {Write.objects.get(pk=w.pk).state for w in vitals} == {WriteState.PENDING}
    assert Write.objects.get(pk=problem[0].pk).state == WriteState.COMMITTED
    # drain: writes already claimed finish; nothing new is claimed.
    switch.behaviour = "drain"
    switch.save()
    assert claim_due("w", 10) == []
    switch.released_at = timezone.now()
    switch.save()
    drain()
    assert {Write.objects.get(pk=w.pk).state for w in vitals} == {WriteState.COMMITTED}


def test_drain_lets_claimed_writes_finish(live, sim, api, engineer):
    from writeback.sync.process import WriteProcessor
    from writeback.sync.worker import AdapterCache

    post(api, "problem.confirmed")
    claimed = claim_due("w1", 10)
    KillSwitch.objects.create(scope="global", behaviour="drain", reason="maintenance", created_by=engineer)
    assert WriteProcessor("w1", AdapterCache()).process(claimed[0]).label == "committed"
    post(api, "problem.confirmed", key="later", note="later")
    assert claim_due("w1", 10) == []


def test_stream_kill_switch(live, api, engineer):
    mine = _patient(api, "pat-1001", "s1")
    other = _patient(api, "pat-1002", "s2")
    KillSwitch.objects.create(
        scope="stream",
        tenant=live,
        patient_ref="pat-1001",
        resource_type="Condition",
        behaviour="hold",
        reason="chart merge in progress",
        created_by=engineer,
    )
    assert [w.pk for w in claim_due("w", 10)] == [other.pk]
    assert Write.objects.get(pk=mine.pk).state == WriteState.PENDING


def test_consent_revoked_since_intake_fails_closed(live, sim, api):
    writes = post(api, "problem.confirmed")
    for consent in live.consents.filter(patient_ref="pat-1001"):
        consent_revoke(consent=consent, actor=None, reason="patient withdrew")
    drain()
    w = Write.objects.get(pk=writes[0].pk)
    assert w.state == WriteState.FAILED_TERMINAL
    assert w.last_error.startswith("consent-revoked")
    assert ours(sim) == {}
    assert Alert.objects.get(write=w).code == "consent-revoked"


def test_capability_narrowed_since_intake_is_refused(live, sim, api):
    writes = post(api, "problem.confirmed")
    Capability.objects.filter(
        tenant=live, resource_type="Condition", operation="create", source="manual"
    ).update(allowed=False)
    drain()
    w = Write.objects.get(pk=writes[0].pk)
    assert w.state == WriteState.FAILED_TERMINAL and "capability" in w.last_error
    assert ours(sim) == {}


def test_unacknowledged_very_high_risk_alert_holds_its_queue(live, sim, api, clinician2):
    from writeback.services.approvals import write_approve

    meds = post(api, "medication.reconciled")
    write_approve(write=meds[0], user=clinician2, rationale="reviewed with patient")
    alert = Alert.objects.create(
        tenant=live,
        resource_type="MedicationStatement",
        severity="page",
        code="retries-exhausted",
        message="earlier medication write failed",
        holds_queue=True,
    )
    drain()
    assert Write.objects.get(pk=meds[0].pk).state == WriteState.PENDING
    alert.acknowledged_at, alert.acknowledged_by = timezone.now(), clinician2
    alert.save()
    drain()
    assert Write.objects.get(pk=meds[0].pk).state == WriteState.COMMITTED


def test_a_resource_type_hold_engaged_after_the_claim_stops_the_write_at_the_door(live, sim, api, engineer):
    """A long-running worker re-reads holds at least once a second: a write it claimed before an
    engineer held its resource type is given back untouched, not sent."""
    import time

    from writeback.sync.process import WriteProcessor
    from writeback.sync.worker import AdapterCache

    first = _patient(api, "pat-1001", "k-first", "vitals.recorded")
    second = _patient(api, "pat-1002", "k-second", "vitals.recorded")
    processor = WriteProcessor("w1", AdapterCache())
    claimed = {w.pk: w for w in claim_due("w1", 20)}
    assert processor.process(claimed.pop(first.pk)).label == "committed"  # the holds are now cached
    KillSwitch.objects.create(
        scope="resource_type",
        tenant=live,
        resource_type="Observation",
        behaviour="hold",
        reason="flowsheet mapping broken",
        created_by=engineer,
    )
    time.sleep(1.05)  # RecentHolds' default time to live
    assert processor.process(claimed.pop(second.pk)).label == "held"
    w = Write.objects.get(pk=second.pk)
    assert w.state == WriteState.PENDING and w.lease_owner == ""
    assert ours(sim) == {str(first.uid): 1}
