"""Alerts by severity, acknowledgement, and the held queue it releases."""

import pytest

from tests.console.conftest import audit_actions, client_for, failed, refusals
from writeback.models import Alert, Severity
from writeback.services.approvals import write_approve
from writeback.services.holds import current_holds

pytestmark = pytest.mark.django_db


@pytest.fixture
def paged(make, clinician2) -> Alert:
    """A very-high-risk medication that failed for good: a page alert holding its queue."""
    med = make("medication.reconciled")
    write_approve(write=med, user=clinician2, rationale="reviewed")
    med.refresh_from_db()
    failed(med, "gave up after 3 attempts")
    alert = Alert.objects.get(write=med)
    assert alert.severity == Severity.PAGE and alert.holds_queue
    return alert


def held(alert) -> bool:
    return (alert.tenant_id, alert.resource_type) in current_holds().resource_types


def test_alerts_are_listed_by_severity_with_the_held_queue(paged, make, admin_user):
    failed(make("note.signed"))  # medium risk: a warning
    body = client_for(admin_user).get("/alerts/").content.decode()
    assert body.index("sev-border-page") < body.index("sev-border-warning")
    assert "Holding the generic-main × MedicationStatement queue" in body
    assert "Acknowledge and release the queue" in body


def test_acknowledging_a_page_releases_the_held_queue(paged, clinician2):
    assert held(paged)
    r = client_for(clinician2).post(f"/alerts/{paged.uid}/acknowledge", {"note": "Pharmacy re-entered it."})
    assert r.status_code == 302
    paged.refresh_from_db()
    assert paged.acknowledged_by == clinician2 and paged.acknowledged_at is not None
    assert paged.ack_note == "Pharmacy re-entered it."
    assert not held(paged)
    entry = [a for a in audit_actions(tenant="generic-main") if a == "alert.acknowledged"]
    assert entry
    page = client_for(clinician2).get("/alerts/?status=acknowledged").content.decode()
    assert "Acknowledged by <strong>bob.clinician</strong>" in page


@pytest.mark.parametrize("persona", ["admin_user", "engineer"])
def test_admins_and_engineers_acknowledge(request, paged, persona):
    client_for(request.getfixturevalue(persona)).post(f"/alerts/{paged.uid}/acknowledge", {"note": "ok"})
    paged.refresh_from_db()
    assert paged.acknowledged_at is not None


def test_auditors_cannot_acknowledge(paged, auditor):
    r = client_for(auditor).post(f"/alerts/{paged.uid}/acknowledge", {"note": "seen"})
    assert r.status_code == 403
    paged.refresh_from_db()
    assert paged.acknowledged_at is None and held(paged)
    assert refusals(action="acknowledge_alert")


def test_acknowledging_needs_a_note_and_happens_once(paged, admin_user):
    c = client_for(admin_user)
    c.post(f"/alerts/{paged.uid}/acknowledge", {"note": ""})
    paged.refresh_from_db()
    assert paged.acknowledged_at is None
    c.post(f"/alerts/{paged.uid}/acknowledge", {"note": "first"})
    r = c.post(
        f"/alerts/{paged.uid}/acknowledge", {"note": "second"}, HTTP_REFERER="http://testserver/alerts/"
    )
    assert b"already acknowledged" in c.get(r.url).content
    paged.refresh_from_db()
    assert paged.ack_note == "first"


def test_an_outsider_cannot_acknowledge(paged, outsider):
    assert client_for(outsider).post(f"/alerts/{paged.uid}/acknowledge", {"note": "x"}).status_code == 403
    paged.refresh_from_db()
    assert paged.acknowledged_at is None
