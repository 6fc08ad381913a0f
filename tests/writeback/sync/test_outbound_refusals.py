"""The worker and discovery meet an EHR that points elsewhere (a next link, a redirect): nothing reaches
the other host, the write is not resent on an unread page, and one alert names the refusal."""

import pytest
from django.utils import timezone

from tests.adapters.servers import Answer, RecordingServer, bundle
from tests.writeback.helpers import consent_for
from tests.writeback.sync.conftest import drain, post
from writeback.models import Alert, AuditEntry, Write
from writeback.services.alerts import alert_acknowledge
from writeback.services.discovery import capabilities_discover
from writeback.services.record import Recorder
from writeback.states import WriteState

pytestmark = pytest.mark.django_db


@pytest.fixture
def elsewhere():
    server = RecordingServer()
    yield server
    server.stop()


def unknown_outcome(api, tenant, key: str) -> Write:
    """A note whose last try may have landed (a timeout after sending)."""
    consent_for(tenant)
    write = post(api, "note.signed", key=key)[0]
    Recorder("worker:tests").ambiguous(write, exchanges=[], message="read timeout after sending")
    Write.objects.filter(pk=write.pk).update(next_attempt_at=timezone.now())
    return Write.objects.get(pk=write.pk)


def test_a_check_by_read_whose_next_page_is_elsewhere_never_resends(
    api, tenant, clinician, elsewhere, admin_user
):
    page = bundle(next_url=f"{elsewhere.origin}/fhir/DocumentReference?_offset=50")
    with RecordingServer(lambda method, path: Answer(200, page)) as ehr:
        write = unknown_outcome(api, tenant, "outbound-1")
        tenant.base_url = f"{ehr.origin}/fhir"
        tenant.save()
        drain()
        Write.objects.filter(pk=write.pk).update(next_attempt_at=timezone.now())
        drain()
        methods = [s.method for s in ehr.seen]
    assert elsewhere.seen == []
    assert methods and set(methods) == {"GET"}  # looked up twice, never sent again
    write.refresh_from_db()
    assert write.state == WriteState.OUTCOME_UNKNOWN
    assert any(a.error.startswith("refused:") for a in write.attempts_log.all())
    # One alert while it is open, an audit entry for every refusal.
    [alert] = Alert.objects.filter(code="outbound-refused")
    assert alert.write_id == write.pk and alert.tenant == tenant and alert.is_open
    refused = list(AuditEntry.objects.filter(action="outbound.refused").order_by("seq"))
    assert [e.data["alerted"] for e in refused] == [True, False]
    assert all(e.actor.startswith("worker:") and e.write_uid == str(write.uid) for e in refused)
    assert {e.data["source"] for e in refused} == {"next-link"}
    # Acknowledged, the next refusal alerts again.
    alert_acknowledge(alert=alert, user=admin_user, note="asked the EHR vendor about its paging links")
    with RecordingServer(lambda method, path: Answer(200, page)) as ehr:
        tenant.base_url = f"{ehr.origin}/fhir"
        tenant.save()
        Write.objects.filter(pk=write.pk).update(next_attempt_at=timezone.now())
        drain()
    assert Alert.objects.filter(code="outbound-refused", acknowledged_at__isnull=True).count() == 1


def test_a_redirect_of_a_write_to_another_host_is_not_followed(api, tenant, clinician, elsewhere):
    consent_for(tenant)
    moved = Answer(307, headers={"Location": f"{elsewhere.origin}/fhir/DocumentReference"})
    with RecordingServer(lambda method, path: moved) as ehr:
        tenant.base_url = f"{ehr.origin}/fhir"
        tenant.save()
        write = post(api, "note.signed", key="outbound-2")[0]
        drain()
        assert [s.method for s in ehr.seen] == ["POST"]
    assert elsewhere.seen == []
    write.refresh_from_db()
    assert write.state == WriteState.FAILED_TERMINAL
    assert "not followed" in write.last_error
    assert Alert.objects.filter(code="outbound-refused", write=write).count() == 1
    assert AuditEntry.objects.filter(action="outbound.refused", write_uid=str(write.uid)).count() == 1


def test_discovery_redirected_elsewhere_is_alerted(tenant, elsewhere, engineer):
    moved = Answer(302, headers={"Location": f"{elsewhere.origin}/fhir/metadata"})
    with RecordingServer(lambda method, path: moved) as ehr:
        tenant.base_url = f"{ehr.origin}/fhir"
        tenant.save()
        report = capabilities_discover(tenant=tenant, actor=engineer)
    assert not report.ok and "not followed" in report.error
    assert elsewhere.seen == []
    [alert] = Alert.objects.filter(code="outbound-refused")
    assert alert.tenant == tenant and alert.write is None
    [entry] = AuditEntry.objects.filter(action="outbound.refused")
    assert (
        entry.actor == "eve.engineer" and entry.object_type == "tenant" and entry.data["source"] == "redirect"
    )
