"""Alerts reach people: signed webhooks over real sockets, once when an alert fires and once when it
resolves, escalation of unacknowledged pages, threshold alerts, retries with backoff, tenant isolation."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.writeback.alert_receiver import Receiver
from tests.writeback.sync.conftest import bulk_writes, drain, post
from writeback.models import (
    Alert,
    AlertDelivery,
    AlertState,
    AuditEntry,
    Severity,
    WriteAttempt,
)
from writeback.services.alert_delivery import MAX_ATTEMPTS, deliver_due, route_add
from writeback.services.alerts import alert_acknowledge, alert_raise, alert_resolve, alerts_escalate_due
from writeback.services.thresholds import thresholds_evaluate
from writeback.states import WriteState
from writeback.sync.worker import SyncWorker

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def other_receiver():
    r = Receiver()
    yield r
    r.stop()


def webhook(name, rcv, **kwargs) -> str:
    _, secret = route_add(name=name, actor="command:test", webhook=rcv.url, **kwargs)
    return secret


def housekeeping(times: int = 3) -> None:
    """The worker's own housekeeping, run several times: a repeat never sends twice."""
    worker = SyncWorker(concurrency=1)
    for _ in range(times):
        worker.housekeeping()


def test_a_terminal_high_risk_failure_is_delivered_once_firing_and_once_resolved(
    live, sim, api, admin_user, other_tenant, receiver, other_receiver, settings
):
    settings.WRITEBACK_CONSOLE_URL = "https://console.hospital.example"
    secret = webhook("oncall", receiver, min_severity=Severity.WARNING)
    webhook("elsewhere", other_receiver, tenant=other_tenant, min_severity=Severity.INFO)

    write = post(api, "referral.status_changed", task_id="task-does-not-exist")[0]
    drain()
    write.refresh_from_db()
    assert write.state == WriteState.FAILED_TERMINAL and write.risk == "high"
    alert = Alert.objects.get(write=write)
    assert alert.state == AlertState.FIRING and alert.severity == Severity.CRITICAL
    housekeeping()

    [firing] = receiver.received
    assert firing.signed_with(secret)
    assert not firing.signed_with(secret + "x")
    body = firing.json
    assert body["state"] == "firing" and body["event"] == "firing"
    assert body["alert"] == str(alert.uid) and body["tenant"] == live.slug
    assert body["kind"] == alert.code and body["severity"] == "critical"
    assert body["raised_at"] and body["resolved_at"] is None
    assert body["link"] == f"https://console.hospital.example/alerts/{alert.uid}/"
    # The summary is built from the alert's kind and numbers: no patient, no vendor text.
    assert b"pat-1001" not in firing.body and b"task-does-not-exist" not in firing.body
    assert firing.headers["x-writeback-event"] == "firing"

    # The same failure reported again while it fires: counted, not announced.
    again = alert_raise(tenant=live, code=alert.code, message="again", severity=alert.severity, write=write)
    assert again.pk == alert.pk and again.occurrences == 2
    assert Alert.objects.filter(tenant=live, code=alert.code).count() == 1
    housekeeping()
    assert len(receiver.received) == 1

    alert_acknowledge(alert=alert, user=admin_user, note="called the referral desk")
    housekeeping()
    assert len(receiver.received) == 1  # acknowledging tells nobody: the person who acknowledged knows

    alert_resolve(alert=alert, actor=admin_user, note="task re-created by hand")
    housekeeping()
    assert len(receiver.received) == 2
    resolved = receiver.received[1]
    assert resolved.signed_with(secret)
    assert resolved.json["state"] == "resolved" and resolved.json["resolved_at"]
    assert resolved.json["acknowledged_at"] and resolved.json["occurrences"] == 2

    # Another tenant's route heard nothing; the delivery log says what was sent.
    assert other_receiver.received == []
    rows = AlertDelivery.objects.filter(alert=alert).order_by("id")
    assert [(d.route.name, d.event, d.status, d.attempts) for d in rows] == [
        ("oncall", "firing", "delivered", 1),
        ("oncall", "resolved", "delivered", 1),
    ]
    actions = list(AuditEntry.objects.filter(object_id=str(alert.uid)).values_list("action", flat=True))
    assert {"alert.raised", "alert.acknowledged", "alert.resolved"} <= set(actions)


def test_a_resolved_alert_cannot_be_resolved_again_and_sends_nothing_more(tenant, admin_user, receiver):
    webhook("oncall", receiver)
    alert = alert_raise(tenant=tenant, code="retries-exhausted", message="x", severity=Severity.WARNING)
    alert_resolve(alert=alert, actor=admin_user, note="done")
    from writeback.errors import DomainError

    with pytest.raises(DomainError) as exc:
        alert_resolve(alert=alert, actor=admin_user, note="twice")
    assert exc.value.status == 409
    with pytest.raises(DomainError):
        alert_acknowledge(alert=alert, user=admin_user, note="late")
    deliver_due()
    assert [r.json["state"] for r in receiver.received] == ["firing", "resolved"]


def test_a_repeat_after_acknowledgement_is_news_again(tenant, admin_user, receiver):
    webhook("oncall", receiver)
    first = alert_raise(tenant=tenant, code="outbound-refused", subject="u", message="x", severity="critical")
    alert_acknowledge(alert=first, user=admin_user, note="looking")
    second = alert_raise(
        tenant=tenant, code="outbound-refused", subject="u", message="x", severity="critical"
    )
    assert second.pk != first.pk
    deliver_due()
    assert [r.json["alert"] for r in receiver.received] == [str(first.uid), str(second.uid)]


def _attempts(write, n: int, outcome: str, at) -> None:
    WriteAttempt.objects.bulk_create(
        [WriteAttempt(write=write, number=i + 1, outcome=outcome, started_at=at) for i in range(n)]
    )


def test_a_conflict_rate_threshold_fires_once_and_resolves_once(
    tenant, other_tenant, receiver, other_receiver
):
    secret = webhook("ops", receiver, tenant=tenant, min_severity=Severity.INFO)
    webhook("elsewhere", other_receiver, tenant=other_tenant, min_severity=Severity.INFO)
    [write] = bulk_writes(tenant, 1)
    now = timezone.now()
    _attempts(write, 12, WriteAttempt.Outcome.CONFLICT, now - timedelta(minutes=5))
    _attempts(write, 12, WriteAttempt.Outcome.COMMITTED, now - timedelta(minutes=5))

    assert thresholds_evaluate(now)["fired"] == 1
    assert thresholds_evaluate(now + timedelta(seconds=30))["fired"] == 0  # still above: nothing new
    alert = Alert.objects.get(tenant=tenant, code="conflict-rate")
    assert alert.state == AlertState.FIRING and alert.details["value"] == 0.5
    deliver_due(now)
    deliver_due(now + timedelta(minutes=1))

    # The window moves on: the attempts inside it are all committed now.
    later = now + timedelta(minutes=20)
    _attempts(write, 30, WriteAttempt.Outcome.COMMITTED, later - timedelta(minutes=2))
    assert thresholds_evaluate(later) == {"fired": 0, "resolved": 1}
    assert thresholds_evaluate(later + timedelta(seconds=30)) == {"fired": 0, "resolved": 0}
    deliver_due(later)
    deliver_due(later + timedelta(minutes=5))

    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED and alert.resolved_by is None
    assert [(r.json["kind"], r.json["state"]) for r in receiver.received] == [
        ("conflict-rate", "firing"),
        ("conflict-rate", "resolved"),
    ]
    assert all(r.signed_with(secret) for r in receiver.received)
    assert Alert.objects.filter(code="conflict-rate").count() == 1
    assert other_receiver.received == []


def test_thresholds_are_configured_per_tenant_and_too_few_attempts_are_not_judged(tenant):
    [write] = bulk_writes(tenant, 1)
    now = timezone.now()
    _attempts(write, 5, WriteAttempt.Outcome.CONFLICT, now - timedelta(minutes=1))
    assert thresholds_evaluate(now)["fired"] == 0  # 5 attempts: below min_attempts (20)
    _attempts(write, 5, WriteAttempt.Outcome.COMMITTED, now - timedelta(minutes=1))
    tenant.settings = {**tenant.settings, "alerts": {"min_attempts": 10, "conflict_rate": 0.6}}
    tenant.save()
    assert thresholds_evaluate(now)["fired"] == 0  # 0.5 < 0.6
    tenant.settings["alerts"]["conflict_rate"] = 0.5
    tenant.save()
    assert thresholds_evaluate(now)["fired"] == 1
    assert Alert.objects.get(code="conflict-rate").details["limit"] == 0.5


def test_queue_measures_fire_and_resolve(tenant, receiver):
    webhook("ops", receiver, min_severity=Severity.INFO)
    writes = bulk_writes(tenant, 3)
    now = timezone.now()
    tenant.settings = {**tenant.settings, "alerts": {"queue_depth": 3, "oldest_pending_minutes": 10}}
    tenant.save()
    from writeback.models import Write

    Write.objects.filter(pk=writes[0].pk).update(next_attempt_at=now - timedelta(minutes=11))
    assert thresholds_evaluate(now)["fired"] == 2
    assert set(Alert.objects.values_list("code", flat=True)) == {"queue-depth", "oldest-pending"}
    Write.objects.filter(pk__in=[w.pk for w in writes]).update(state=WriteState.COMMITTED)
    assert thresholds_evaluate(now)["resolved"] == 2
    deliver_due()
    assert sorted((r.json["kind"], r.json["state"]) for r in receiver.received) == [
        ("oldest-pending", "firing"),
        ("oldest-pending", "resolved"),
        ("queue-depth", "firing"),
        ("queue-depth", "resolved"),
    ]


def test_capability_drift_fires_when_metadata_declares_less_than_we_write(tenant):
    from writeback.models import Capability

    def discovered(allowed: bool) -> None:
        Capability.objects.update_or_create(
            tenant=tenant,
            resource_type="Observation",
            operation="create",
            source="discovered",
            defaults={"allowed": allowed},
        )

    discovered(False)
    assert thresholds_evaluate()["fired"] == 0  # refused, but we write no Observation: no drift
    bulk_writes(tenant, 1)
    assert thresholds_evaluate()["fired"] == 1
    assert Alert.objects.get(code="capability-drift").details["value"] == 1
    discovered(True)
    assert thresholds_evaluate()["resolved"] == 1


def test_an_unacknowledged_page_escalates_exactly_once(tenant, admin_user, receiver, other_receiver):
    webhook("oncall", receiver, min_severity=Severity.PAGE)
    escalation_secret = webhook("duty-manager", other_receiver, escalation=True)
    now = timezone.now()
    page = alert_raise(tenant=tenant, code="retries-exhausted", subject="a", message="x", severity="page")
    acked = alert_raise(tenant=tenant, code="retries-exhausted", subject="b", message="x", severity="page")
    alert_acknowledge(alert=acked, user=admin_user, note="on it")
    deliver_due()
    assert len(receiver.received) == 2 and other_receiver.received == []  # escalation routes wait

    assert alerts_escalate_due(now + timedelta(minutes=14)) == 0
    assert alerts_escalate_due(now + timedelta(minutes=16)) == 1
    assert alerts_escalate_due(now + timedelta(minutes=30)) == 0
    deliver_due(now + timedelta(minutes=16))
    deliver_due(now + timedelta(minutes=40))

    [escalated] = other_receiver.received
    assert escalated.signed_with(escalation_secret)
    assert escalated.json["alert"] == str(page.uid) and escalated.json["escalation"] is True
    assert escalated.json["state"] == "firing"
    assert len(receiver.received) == 2  # the ordinary route is not told twice
    page.refresh_from_db()
    assert page.escalated_at is not None
    assert AuditEntry.objects.filter(action="alert.escalated", object_id=str(page.uid)).count() == 1


def test_escalation_time_is_the_tenants(tenant, other_receiver):
    webhook("duty-manager", other_receiver, escalation=True)
    tenant.settings = {**tenant.settings, "alerts": {"escalation_minutes": 5}}
    tenant.save()
    now = timezone.now()
    alert_raise(tenant=tenant, code="retries-exhausted", message="x", severity="page")
    alert_raise(tenant=tenant, code="critical-only", message="x", severity="critical")  # never escalates
    assert alerts_escalate_due(now + timedelta(minutes=6)) == 1
    deliver_due(now + timedelta(minutes=6))
    assert [r.json["kind"] for r in other_receiver.received] == ["retries-exhausted"]


def test_a_failing_receiver_is_retried_with_backoff_and_the_log_shows_it(tenant, admin_user):
    rcv = Receiver(answers=[500, 503, 200])
    try:
        webhook("flaky", rcv)
        alert = alert_raise(tenant=tenant, code="retries-exhausted", message="x", severity="warning")
        t0 = timezone.now()
        assert deliver_due(t0) == 1
        assert deliver_due(t0 + timedelta(seconds=10)) == 0  # not due: backing off
        d = AlertDelivery.objects.get(alert=alert)
        assert d.status == "pending" and d.attempts == 1 and d.next_attempt_at == t0 + timedelta(seconds=30)
        assert deliver_due(t0 + timedelta(seconds=31)) == 1
        d.refresh_from_db()
        assert d.next_attempt_at == t0 + timedelta(seconds=31 + 60)  # doubled
        assert deliver_due(t0 + timedelta(seconds=60)) == 0
        assert deliver_due(t0 + timedelta(seconds=92)) == 1
        d.refresh_from_db()
        assert d.status == "delivered" and d.attempts == 3
        assert [(e["status"], e["ok"]) for e in d.log] == [(500, False), (503, False), (200, True)]
        assert len(rcv.received) == 3
        assert len({r.body for r in rcv.received}) == 1  # the same message each time
    finally:
        rcv.stop()

    from django.test import Client

    client = Client()
    client.force_login(admin_user)
    page = client.get(f"/alerts/{alert.uid}/").content.decode()
    assert "HTTP 500" in page and "HTTP 503" in page and "delivered" in page


def test_a_receiver_that_never_answers_well_is_given_up_and_audited(tenant):
    rcv = Receiver(answers=[500])
    try:
        webhook("broken", rcv)
        alert = alert_raise(tenant=tenant, code="retries-exhausted", message="x", severity="warning")
        at = timezone.now()
        for _ in range(MAX_ATTEMPTS + 3):
            deliver_due(at)
            at += timedelta(hours=2)
        d = AlertDelivery.objects.get(alert=alert)
        assert d.status == "failed" and d.attempts == MAX_ATTEMPTS and len(rcv.received) == MAX_ATTEMPTS
        assert (
            AuditEntry.objects.filter(action="alert.delivery_failed", object_id=str(alert.uid)).count() == 1
        )
    finally:
        rcv.stop()


def test_a_closed_port_is_a_failed_try_not_a_crash(tenant):
    rcv = Receiver()
    webhook("gone", rcv)
    rcv.stop()  # nothing listens there any more
    alert = alert_raise(tenant=tenant, code="retries-exhausted", message="x", severity="warning")
    assert deliver_due() == 1
    d = AlertDelivery.objects.get(alert=alert)
    assert d.status == "pending" and d.attempts == 1 and d.last_error.startswith("ConnectError")


def test_a_route_below_the_alerts_severity_or_removed_gets_nothing(tenant, receiver, other_receiver):
    from writeback.services.alert_delivery import route_remove

    webhook("pages-only", receiver, min_severity=Severity.PAGE)
    webhook("removed", other_receiver)
    route_remove(name="removed", actor="command:test")
    alert_raise(tenant=tenant, code="retries-exhausted", message="x", severity="critical")
    deliver_due()
    assert receiver.received == [] and other_receiver.received == []


def test_email_routes_use_django_mail(tenant, mailoutbox, admin_user):
    route_add(name="mail", actor="command:test", email="oncall@hospital.example")
    alert = alert_raise(
        tenant=tenant, code="retries-exhausted", message="pat-1001 details", severity="warning"
    )
    deliver_due()
    alert_resolve(alert=alert, actor=admin_user, note="ok")
    deliver_due()
    assert [m.to for m in mailoutbox] == [["oncall@hospital.example"]] * 2
    assert "firing" in mailoutbox[0].subject and "resolved" in mailoutbox[1].subject
    assert "pat-1001" not in mailoutbox[0].body and str(alert.uid) in mailoutbox[0].body


def test_housekeeping_keeps_escalating_when_a_step_fails(tenant, other_receiver, monkeypatch, settings):
    from writeback.services import thresholds

    settings.WRITEBACK_ALERT_EVALUATE_SECONDS = 0

    def broken(now=None):
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(thresholds, "thresholds_evaluate", broken)
    webhook("duty-manager", other_receiver, escalation=True)
    alert = alert_raise(tenant=tenant, code="retries-exhausted", message="x", severity="page")
    Alert.objects.filter(pk=alert.pk).update(created_at=timezone.now() - timedelta(hours=1))
    housekeeping(times=2)
    assert len(other_receiver.received) == 1


def test_an_old_unknown_outcome_and_an_overdue_approval_fire(tenant, settings):
    from writeback.models import Write

    writes = bulk_writes(tenant, 2)
    now = timezone.now()
    Write.objects.filter(pk=writes[0].pk).update(
        state=WriteState.OUTCOME_UNKNOWN, state_changed_at=now - timedelta(minutes=40)
    )
    Write.objects.filter(pk=writes[1].pk).update(
        state=WriteState.AWAITING_APPROVAL,
        state_changed_at=now - timedelta(hours=settings.WRITEBACK_APPROVAL_TTL_HOURS, minutes=1),
    )
    assert thresholds_evaluate(now)["fired"] == 2
    fired = {a.code: a for a in Alert.objects.all()}
    assert set(fired) == {"outcome-unknown-age", "approval-overdue"}
    assert fired["outcome-unknown-age"].severity == Severity.CRITICAL
    assert fired["outcome-unknown-age"].details["value"] >= 40
    # An hour earlier neither had waited long enough.
    Alert.objects.all().delete()
    assert thresholds_evaluate(now - timedelta(minutes=30))["fired"] == 0


def test_a_pass_stops_starting_sends_once_its_budget_is_spent(tenant, receiver):
    webhook("oncall", receiver)
    for i in range(3):
        alert_raise(tenant=tenant, code="retries-exhausted", subject=str(i), message="x", severity="warning")
    # No budget left after the first send: the others wait for the next pass, and none is lost.
    assert deliver_due(budget_seconds=0) == 1
    assert AlertDelivery.objects.filter(status="pending", attempts=0).count() == 2
    assert deliver_due() == 2
    assert len(receiver.received) == 3
