"""The audit log for auditors: search, chain verification, per-write exports."""

import pytest
from fhir.resources.R4B.bundle import Bundle

from tests.console.conftest import audit_actions, client_for, committed, refusals
from writeback.models import AuditEntry

pytestmark = pytest.mark.django_db


@pytest.fixture
def note(make):
    return committed(make("note.signed"), resource_id="doc-9", version="2")


def test_the_log_is_searchable(note, auditor):
    c = client_for(auditor)
    assert b"write.transition" in c.get("/audit/").content
    by_write = c.get(f"/audit/?object_id={note.uid}").content.decode()
    assert f"write {str(note.uid)[:8]}" in by_write
    assert "entries" in by_write
    by_action = c.get("/audit/?action=write.created").content.decode()
    assert "write.created" in by_action and "write.transition" not in by_action.split("<tbody>")[1]
    assert note.correlation_id[:8] in c.get(f"/audit/?correlation_id={note.correlation_id}").content.decode()
    assert b"No entry matches" in c.get("/audit/?actor=nobody").content
    assert c.get("/audit/?since=not-a-date").status_code == 200  # a form error, not a 500


def test_an_auditor_scoped_to_one_tenant_sees_only_its_entries(note, outsider, other_tenant):
    from tests.conftest import make_user
    from writeback.services.tenants import tenant_grant

    other_auditor = make_user("oz.auditor", "auditor")
    tenant_grant(tenant=other_tenant, user=other_auditor)
    body = client_for(other_auditor).get("/audit/?action=write.").content.decode()
    assert str(note.uid)[:8] not in body


def test_verifying_the_chain_records_the_verdict(note, auditor):
    c = client_for(auditor)
    assert b"has not been verified from the console yet" in c.get("/audit/").content
    r = c.post("/audit/verify")
    assert r.status_code == 302
    check = AuditEntry.objects.filter(action="audit.chain_verified").get()
    assert check.data["ok"] is True and check.data["checked"] > 0
    page = c.get("/audit/").content.decode()
    assert "Intact" in page and f"{check.data['checked']} entries verified" in page


def test_verifying_is_for_auditors_and_admins(clinician):
    assert client_for(clinician).post("/audit/verify").status_code == 403
    assert not AuditEntry.objects.filter(action="audit.chain_verified").exists()


def test_json_export_of_one_write(note, auditor):
    r = client_for(auditor).get(f"/writes/{note.uid}/export?format=json")
    assert r.status_code == 200
    assert r["Content-Disposition"].startswith("attachment")
    body = r.json()
    assert body["write"]["id"] == str(note.uid)
    assert body["event"]["type"] == "note.signed"
    assert body["attempts"][0]["response_status"] == 201
    actions = [e["action"] for e in body["audit_entries"]]
    assert "write.created" in actions and "write.transition" in actions
    assert all(e["hash"] for e in body["audit_entries"])
    assert "audit.exported" in audit_actions(write_uid=str(note.uid))


def test_fhir_export_is_a_valid_bundle_of_audit_events_and_provenance(note, admin_user):
    r = client_for(admin_user).get(f"/writes/{note.uid}/export?format=fhir")
    assert r.status_code == 200 and r["Content-Type"] == "application/fhir+json"
    bundle = r.json()
    Bundle.model_validate(bundle)
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert "AuditEvent" in kinds and "Provenance" in kinds
    provenance = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Provenance")
    assert provenance["target"][0]["reference"] == "DocumentReference/doc-9/_history/2"


@pytest.mark.parametrize("persona", ["clinician", "engineer"])
def test_exports_are_for_auditors_and_admins(request, note, persona):
    r = client_for(request.getfixturevalue(persona)).get(f"/writes/{note.uid}/export?format=fhir")
    assert r.status_code == 403
    assert refusals(action="view_audit")


def test_an_unknown_export_format_is_a_clear_error(note, auditor):
    r = client_for(auditor).get(f"/writes/{note.uid}/export?format=xml")
    assert r.status_code == 400
    assert b"Format must be json or fhir" in r.content
