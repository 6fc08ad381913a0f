"""Live EHR reads from the console (chart comparison, plan prediction): only on a POST with a CSRF token,
only for the roles that act on them, rate-limited per person, audited with the actor, and a next link
that leaves the tenant is alerted."""

import threading
from datetime import timedelta

import pytest
from django.db import close_old_connections
from django.test import Client

from tests.adapters.servers import Answer, RecordingServer, bundle
from tests.conftest import granted_user
from tests.console.conftest import HTMX, client_for, refusals
from tests.writeback.sync.conftest import post
from writeback.models import Alert, AuditEntry, RateBucket
from writeback.services.ratelimits import rate_take

pytestmark = pytest.mark.django_db


def fhir_reads(sim) -> int:
    return sum(1 for r in sim.requests(2000) if r.get("method") == "GET" and "/_sim" not in r.get("path", ""))


def ehr_reads(**data) -> list[AuditEntry]:
    entries = AuditEntry.objects.filter(action="ehr.read").order_by("seq")
    return [e for e in entries if all(e.data.get(k) == v for k, v in data.items())]


def test_opening_the_chart_and_plan_pages_reads_nothing(live, api, sim, clinician2, auditor):
    med = post(api, "medication.reconciled", key="read-get")[0]
    before = fhir_reads(sim)
    for person in (clinician2, auditor):
        c = client_for(person)
        for url in (f"/writes/{med.uid}/chart", f"/writes/{med.uid}/plan", f"/writes/{med.uid}/"):
            assert c.get(url).status_code == 200, url
            assert c.get(url, **HTMX).status_code == 200, url
    assert fhir_reads(sim) == before
    assert ehr_reads() == []
    # The plan without a read still shows every request the worker would make.
    body = client_for(auditor).get(f"/writes/{med.uid}/plan").content.decode()
    assert f"{live.base_url}/MedicationStatement" in body and "Waiting for a clinician" in body
    assert "Read the EHR to predict the outcome" not in body  # not offered to an auditor
    assert "Reading the EHR live is for clinicians" in body
    assert (
        "Read the EHR to predict the outcome"
        in client_for(clinician2).get(f"/writes/{med.uid}/plan").content.decode()
    )


def test_a_clinician_reads_the_chart_once_and_it_is_audited(live, api, sim, clinician2):
    med = post(api, "medication.reconciled", key="read-chart")[0]
    before = fhir_reads(sim)
    r = client_for(clinician2).post(f"/writes/{med.uid}/chart", HTTP_X_REQUEST_ID="req-chart-1", **HTMX)
    assert r.status_code == 200 and b"Current chart" in r.content
    assert fhir_reads(sim) == before + 1
    [entry] = ehr_reads()
    assert entry.actor == "bob.clinician" and entry.actor_user_id == clinician2.pk
    assert (entry.tenant, entry.write_uid, entry.request_id) == ("generic-main", str(med.uid), "req-chart-1")
    assert entry.correlation_id == med.correlation_id
    assert entry.data["view"] == "chart"
    assert entry.data["asked_for"] == "MedicationStatement?patient=pat-1001"


def test_an_admin_reads_the_plan_and_an_engineer_too(live, api, sim, admin_user, engineer):
    write = post(api, "demographics.updated", key="read-plan", base_version="1")[0]
    for person in (admin_user, engineer):
        r = client_for(person).post(f"/writes/{write.uid}/plan", **HTMX)
        assert r.status_code == 200 and b"Predicted outcome" in r.content
    entries = ehr_reads(view="plan")
    assert [e.actor for e in entries] == ["ada.admin", "eve.engineer"]
    assert {e.data["asked_for"] for e in entries} == {"Patient/pat-1001"}
    assert {e.data["read"] for e in entries} == {"Patient/pat-1001"}


def test_an_auditor_cannot_read_the_ehr(live, api, sim, auditor):
    med = post(api, "medication.reconciled", key="read-auditor")[0]
    before = fhir_reads(sim)
    c = client_for(auditor)
    assert c.post(f"/writes/{med.uid}/chart").status_code == 403
    r = c.post(f"/writes/{med.uid}/plan", **HTMX)
    assert r.status_code == 403 and r["HX-Retarget"] == "#flash"
    assert fhir_reads(sim) == before
    assert ehr_reads() == []
    refused = refusals(action="read_ehr", rule="role-required", channel="console")
    assert [e.actor for e in refused] == ["al.auditor", "al.auditor"]
    assert {e.object_id for e in refused} == {str(med.uid)}


def test_another_tenants_person_cannot_read_its_ehr(live, api, sim, outsider):
    med = post(api, "medication.reconciled", key="read-outsider")[0]
    before = fhir_reads(sim)
    for url in (f"/writes/{med.uid}/chart", f"/writes/{med.uid}/plan"):
        assert client_for(outsider).post(url).status_code == 403
    assert fhir_reads(sim) == before and ehr_reads() == []
    assert len(refusals(rule="tenant-forbidden", channel="console")) == 2


def test_a_read_without_the_csrf_token_is_refused(live, api, sim, clinician2):
    med = post(api, "medication.reconciled", key="read-csrf")[0]
    c = Client(enforce_csrf_checks=True)
    c.force_login(clinician2)
    before = fhir_reads(sim)
    assert c.post(f"/writes/{med.uid}/chart", **HTMX).status_code == 403
    assert c.post(f"/writes/{med.uid}/plan").status_code == 403
    assert fhir_reads(sim) == before and ehr_reads() == []


def test_other_methods_are_not_allowed(live, api, clinician2):
    med = post(api, "medication.reconciled", key="read-put")[0]
    assert client_for(clinician2).put(f"/writes/{med.uid}/chart").status_code == 405
    assert client_for(clinician2).delete(f"/writes/{med.uid}/plan").status_code == 405


def test_reads_are_rate_limited_per_person(live, api, sim, clinician2, admin_user, settings):
    settings.WRITEBACK_CONSOLE_EHR_READS_PER_MINUTE = 2
    med = post(api, "medication.reconciled", key="read-rate")[0]
    c = client_for(clinician2)
    before = fhir_reads(sim)
    assert c.post(f"/writes/{med.uid}/chart", **HTMX).status_code == 200
    assert c.post(f"/writes/{med.uid}/plan", **HTMX).status_code == 200
    r = c.post(f"/writes/{med.uid}/chart", **HTMX)
    assert r.status_code == 429
    assert 1 <= int(r["Retry-After"]) <= 30
    assert r["HX-Retarget"] == "#flash" and b"At most 2 EHR reads a minute" in r.content
    page = c.post(f"/writes/{med.uid}/chart")  # without htmx: a page saying so
    assert page.status_code == 429 and b"try again in" in page.content
    assert fhir_reads(sim) == before + 2
    assert len(ehr_reads()) == 2
    assert len(refusals(action="read_ehr", rule="rate-limited")) == 2
    # Another person has a bucket of their own.
    assert client_for(admin_user).post(f"/writes/{med.uid}/chart", **HTMX).status_code == 200
    # A minute later the bucket has refilled.
    bucket = RateBucket.objects.get(key=f"ehr-read:user:{clinician2.pk}")
    RateBucket.objects.filter(pk=bucket.pk).update(updated_at=bucket.updated_at - timedelta(seconds=61))
    assert c.post(f"/writes/{med.uid}/chart", **HTMX).status_code == 200


def test_a_next_link_off_the_tenant_during_a_chart_read_is_alerted(make, tenant, clinician2):
    with RecordingServer() as elsewhere:
        page = bundle(next_url=f"{elsewhere.origin}/fhir/DocumentReference?page=2")
        with RecordingServer(lambda method, path: Answer(200, page)) as ehr:
            note = make("note.signed")
            tenant.base_url = f"{ehr.origin}/fhir"
            tenant.save()
            r = client_for(clinician2).post(f"/writes/{note.uid}/chart", **HTMX)
            assert r.status_code == 200 and b"reading the EHR failed" in r.content
            assert len(ehr.seen) == 1
        assert elsewhere.seen == []
    alert = Alert.objects.get(code="outbound-refused")
    assert alert.tenant == tenant and alert.write_id == note.pk and alert.severity == "critical"
    assert elsewhere.origin in alert.message
    [refused] = AuditEntry.objects.filter(action="outbound.refused")
    assert refused.actor == "bob.clinician" and refused.write_uid == str(note.uid)
    assert refused.data["source"] == "next-link" and refused.data["alerted"] is True
    assert AuditEntry.objects.filter(action="alert.raised", object_id=str(alert.uid)).exists()
    [read] = ehr_reads()
    assert read.target_ack is False and "outside the tenant" in read.data["error"]


@pytest.mark.django_db(transaction=True)
def test_the_bucket_holds_under_concurrent_takers():
    granted, lock = [], threading.Lock()
    start = threading.Barrier(8)

    def take():
        try:
            start.wait()
            wait = rate_take("test:concurrent", capacity=3, per_seconds=3600)
            with lock:
                granted.append(wait == 0.0)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(granted) == [False] * 5 + [True] * 3
    assert RateBucket.objects.get(key="test:concurrent").tokens < 1


def test_a_second_clinician_of_the_tenant_may_read(live, api, sim, tenant):
    other = granted_user(tenant, "cy.clinician", "clinician")
    med = post(api, "medication.reconciled", key="read-cy")[0]
    assert client_for(other).post(f"/writes/{med.uid}/chart", **HTMX).status_code == 200
    assert [e.actor for e in ehr_reads()] == ["cy.clinician"]
