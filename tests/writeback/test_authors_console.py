"""The console's side of authors: the tenant page's mapping and policy forms (engineers only, audited),
and software-proposed events marked on the write list and in the approval queue."""

import pytest
from django.test import Client

from tests.writeback.helpers import consent_for, event
from writeback.models import AuditEntry, PractitionerMapping

URL = "/api/v1/events"


def _client(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def test_an_engineer_maps_a_person_on_the_tenant_page(tenant, engineer, clinician):
    c = _client(engineer)
    page = c.get(f"/tenants/{tenant.slug}/")
    assert page.status_code == 200 and "Authors in the chart" in page.content.decode()
    r = c.post(
        f"/tenants/{tenant.slug}/practitioners",
        {"username": clinician.username, "practitioner": "Practitioner/p-9", "reason": "onboarding"},
    )
    assert r.status_code == 302
    assert PractitionerMapping.objects.get().practitioner_ref == "Practitioner/p-9"
    assert "Practitioner/p-9" in c.get(f"/tenants/{tenant.slug}/").content.decode()
    entry = AuditEntry.objects.get(action="practitioner.mapped")
    assert entry.actor == engineer.username and entry.data["after"] == "Practitioner/p-9"
    # A blank reference removes the mapping.
    c.post(f"/tenants/{tenant.slug}/practitioners", {"username": clinician.username})
    assert not PractitionerMapping.objects.exists()


@pytest.mark.parametrize(
    "body", [{"username": "amy.clinician", "practitioner": "Organization/1"}, {"username": ""}]
)
def test_hostile_mapping_forms_write_nothing(tenant, engineer, clinician, body):
    r = _client(engineer).post(f"/tenants/{tenant.slug}/practitioners", body)
    assert r.status_code in (302, 422)
    assert not PractitionerMapping.objects.exists()


def test_a_clinician_cannot_map_or_change_the_policy(tenant, clinician):
    c = _client(clinician)
    r = c.post(
        f"/tenants/{tenant.slug}/practitioners",
        {"username": clinician.username, "practitioner": "Practitioner/me"},
    )
    assert r.status_code == 403 and not PractitionerMapping.objects.exists()
    r = c.post(f"/tenants/{tenant.slug}/author-policy", {"unmapped_author": "refuse"})
    assert r.status_code == 403
    tenant.refresh_from_db()
    assert tenant.unmapped_author == "organization"
    assert AuditEntry.objects.filter(action="access.refused").count() == 2


def test_engineer_sets_the_policy(tenant, engineer):
    r = _client(engineer).post(
        f"/tenants/{tenant.slug}/author-policy",
        {"unmapped_author": "refuse", "organization_ref": "Organization/o-1", "reason": "hospital rule"},
    )
    assert r.status_code == 302
    tenant.refresh_from_db()
    assert (tenant.unmapped_author, tenant.organization_ref) == ("refuse", "Organization/o-1")
    assert AuditEntry.objects.get(action="tenant.author_policy_changed").data["before"][
        "unmapped_author"
    ] == ("organization")


def test_software_events_are_marked_and_filterable(tenant, api, clinician, clinician2):
    consent_for(tenant)
    body = event("vitals.recorded", key="ai-1")
    body["source"]["kind"] = "ai"
    assert api.post(URL, body, format="json").status_code == 201
    assert api.post(URL, event("problem.confirmed", key="human-1"), format="json").status_code == 201
    c = _client(clinician2)
    everything = c.get("/writes/").content.decode()
    assert "AI-proposed" in everything and "Condition" in everything
    only_ai = c.get("/writes/?source_kind=ai").content.decode()
    assert "AI-proposed" in only_ai and "<strong>Condition</strong>" not in only_ai
    queue = c.get("/approvals/").content.decode()
    assert "Proposed by" in queue and "AI-proposed" in queue
