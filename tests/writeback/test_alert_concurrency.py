"""Several workers at once: one alert per firing subject, one message per delivery, one escalation."""

import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tests.writeback.alert_receiver import Receiver
from writeback.models import Alert, AlertDelivery, AuditEntry
from writeback.services.alert_delivery import deliver_due, route_add
from writeback.services.alerts import alert_raise, alerts_escalate_due
from writeback.services.audit import verify_chain

pytestmark = pytest.mark.django_db(transaction=True)


def together(n: int, fn: Callable[[], object]) -> list[object]:
    barrier = threading.Barrier(n)
    results: list[object] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            results.append(fn())
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def test_the_same_alert_raised_at_once_is_one_alert_and_one_message(tenant, receiver):
    route_add(name="oncall", actor="command:test", webhook=receiver.url)
    together(
        4,
        lambda: (
            alert_raise(
                tenant=tenant, code="outbound-refused", subject="u", message="x", severity="critical"
            ).pk
        ),
    )
    [alert] = Alert.objects.all()
    assert alert.occurrences == 4
    assert AlertDelivery.objects.filter(alert=alert).count() == 1
    assert AuditEntry.objects.filter(action="alert.raised").count() == 1
    deliver_due()
    assert len(receiver.received) == 1
    assert verify_chain().ok


def test_workers_sweeping_at_once_send_each_delivery_once(tenant, receiver):
    route_add(name="oncall", actor="command:test", webhook=receiver.url)
    for i in range(6):
        alert_raise(tenant=tenant, code="retries-exhausted", subject=str(i), message="x", severity="warning")
    together(3, deliver_due)
    counts = Counter(r.json["alert"] for r in receiver.received)
    assert len(counts) == 6 and set(counts.values()) == {1}
    assert set(AlertDelivery.objects.values_list("status", "attempts")) == {("delivered", 1)}


def test_workers_escalating_at_once_escalate_once(tenant, receiver):
    route_add(name="duty-manager", actor="command:test", webhook=receiver.url, escalation=True)
    alert_raise(tenant=tenant, code="retries-exhausted", message="x", severity="page")
    later = timezone.now() + timedelta(minutes=20)
    assert sum(together(3, lambda: alerts_escalate_due(later))) == 1
    assert AlertDelivery.objects.filter(event="escalation").count() == 1
    assert AuditEntry.objects.filter(action="alert.escalated").count() == 1
