"""POST /api/v1/events: the spec's examples, idempotency, consent, scope, dry run, transport errors."""

import json

import pytest
from django.utils import timezone
from fhir.resources.R4B import get_fhir_model_class

from adapters.identifiers import our_identifier_value as identifier_of
from tests.conftest import api_client_for, make_client_app
from tests.writeback.helpers import EVENT_TYPES, EXPECTED_WRITES, consent_for, event
from writeback.models import AuditEntry, BusinessEvent, Write
from writeback.services.audit import sha256_text, verify_chain
from writeback.services.consents import consent_revoke
from writeback.services.tenants import tenant_set_consent_policy
from writeback.states import WriteState

URL = "/api/v1/events"


@pytest.fixture
def ready(api, tenant, clinician):
    consent_for(tenant)
    return api


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_spec_example_is_stored_with_its_writes(ready, event_type):
    r = ready.post(URL, event(event_type), format="json")
    assert r.status_code == 201, r.json()
    body = r.json()
    assert body["duplicate"] is False and body["type"] == event_type
    assert [(w["resource_type"], w["operation"]) for w in body["writes"]] == EXPECTED_WRITES[event_type]
    stored = BusinessEvent.objects.get(uid=body["id"])
    assert stored.correlation_id == body["correlation_id"]
    writes = list(Write.objects.filter(event=stored).order_by("position"))
    assert len(writes) == len(EXPECTED_WRITES[event_type])
    for w in writes:
        get_fhir_model_class(w.resource_type).model_validate(w.payload)  # valid FHIR R4 in the ledger
        expected = WriteState.AWAITING_APPROVAL if w.approval_required else WriteState.PENDING
        assert w.state == expected
        if w.operation == "create":
            assert identifier_of(w.payload, "urn:fhir-writeback:write-id") == str(w.uid)
    # One audit entry for the event, one per write created, one per transition.
    assert AuditEntry.objects.filter(event_uid=str(stored.uid), action="event.received").count() == 1
    assert AuditEntry.objects.filter(action="write.created", event_uid=str(stored.uid)).count() == len(writes)
    assert verify_chain().ok


def test_high_risk_types_wait_for_approval(ready):
    r = ready.post(URL, event("medication.reconciled"), format="json")
    assert [w["state"] for w in r.json()["writes"]] == ["awaiting_approval"]
    assert r.json()["writes"][0]["risk"] == "very_high"


def test_same_key_same_content_is_a_duplicate_returning_the_original(ready):
    first = ready.post(URL, event("problem.confirmed"), format="json").json()
    again = ready.post(URL, event("problem.confirmed"), format="json")
    assert again.status_code == 200
    assert again.json()["duplicate"] is True and again.json()["id"] == first["id"]
    assert again.json()["writes"] == first["writes"]
    assert BusinessEvent.objects.count() == 1 and Write.objects.count() == 1
    assert AuditEntry.objects.filter(action="event.duplicate_suppressed").count() == 1


def test_same_key_different_content_is_refused_409(ready):
    ready.post(URL, event("problem.confirmed"), format="json")
    body = event("problem.confirmed", note="another note")
    r = ready.post(URL, body, format="json", HTTP_X_REQUEST_ID="req-409")
    assert r.status_code == 409
    assert r.json()["issue"][0]["details"]["coding"][0]["code"] == "idempotency-key-reused"
    assert BusinessEvent.objects.count() == 1 and Write.objects.count() == 1
    refused = AuditEntry.objects.get(action="event.refused")
    assert (refused.tenant, refused.actor, refused.request_id) == ("generic-main", "intake-portal", "req-409")
    assert refused.data["status"] == 409 and refused.data["rule"] == "idempotency-key-reused"
    assert refused.data["idempotency_key"] == "test-problem.confirmed"
    assert refused.data["patient"] == "pat-1001" and refused.data["type"] == "problem.confirmed"
    # The refused content is kept as a hash only.
    assert refused.data["body_sha256"] == sha256_text(body)
    assert "another note" not in json.dumps(refused.data)
    assert verify_chain().ok


def test_reused_source_message_with_other_content_is_409_and_audited(ready):
    ready.post(URL, event("problem.confirmed", key="k1"), format="json")
    body = event("problem.confirmed", key="k2", note="other")
    body["source"]["message_id"] = "msg-k1"
    r = ready.post(URL, body, format="json")
    assert r.status_code == 409
    refused = AuditEntry.objects.get(action="event.refused")
    assert refused.data["rule"] == "source-message-reused"
    assert refused.data["issues"][0]["path"] == "source.message_id"


def test_same_source_message_id_is_a_duplicate(ready):
    first = ready.post(URL, event("problem.confirmed", key="k1"), format="json").json()
    body = event("problem.confirmed", key="k2")
    body["source"]["message_id"] = "msg-k1"
    r = ready.post(URL, body, format="json")
    assert r.status_code == 200 and r.json()["duplicate"] is True and r.json()["id"] == first["id"]
    assert BusinessEvent.objects.count() == 1


def test_a_later_occurrence_of_the_same_facts_is_not_a_duplicate(ready):
    """Timestamps are not content, but data differing only in time is still a different reading."""
    ready.post(URL, event("vitals.recorded", key="a"), format="json")
    r = ready.post(
        URL, event("vitals.recorded", key="b", effective_at="2026-11-20T15:00:00-05:00"), format="json"
    )
    assert r.status_code == 201
    assert BusinessEvent.objects.count() == 2


def test_header_and_body_keys_must_agree(ready):
    r = ready.post(URL, event("problem.confirmed"), format="json", HTTP_IDEMPOTENCY_KEY="other")
    assert r.status_code == 400
    assert r.json()["issue"][0]["details"]["coding"][0]["code"] == "idempotency-key-mismatch"


def test_key_from_header_only(ready):
    body = event("problem.confirmed")
    del body["idempotency_key"]
    r = ready.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="from-header")
    assert r.status_code == 201
    assert BusinessEvent.objects.get().idempotency_key == "from-header"


@pytest.mark.parametrize(
    ("setup", "rule"),
    [
        ("none", "consent-missing"),
        ("revoked", "consent-revoked"),
        ("expired", "consent-expired"),
        ("scope", "consent-out-of-scope"),
    ],
)
def test_consent_fails_closed(api, tenant, clinician, setup, rule):
    now = timezone.now()
    if setup == "revoked":
        consent_revoke(consent=consent_for(tenant), actor=None, reason="patient withdrew")
    elif setup == "expired":
        consent_for(
            tenant,
            period_start=now - timezone.timedelta(days=30),
            period_end=now - timezone.timedelta(days=1),
        )
    elif setup == "scope":
        consent_for(tenant, resource_types=["Observation"])
    r = api.post(URL, event("problem.confirmed"), format="json")
    assert r.status_code == 403
    assert r.json()["issue"][0]["details"]["coding"][0]["code"] == rule
    assert BusinessEvent.objects.count() == 0 and Write.objects.count() == 0
    refused = AuditEntry.objects.get(action="access.refused")
    assert refused.data["rule"] == rule


def test_consent_waived_per_resource_type(api, tenant, clinician):
    tenant_set_consent_policy(
        tenant, required=True, waived_resource_types=["Condition"], actor="tests", reason="problem list"
    )
    assert api.post(URL, event("problem.confirmed"), format="json").status_code == 201
    assert BusinessEvent.objects.get().consent_snapshot == {"waived": True}


def test_unauthenticated_is_401(client, tenant):
    r = client.post(URL, event("problem.confirmed"), content_type="application/json")
    assert r.status_code == 401
    r = client.post(
        URL, event("problem.confirmed"), content_type="application/json", HTTP_AUTHORIZATION="Token nope"
    )
    assert r.status_code == 401
    assert BusinessEvent.objects.count() == 0


def test_token_for_tenant_a_cannot_write_or_read_tenant_b(ready, tenant, other_tenant, db):
    consent_for(other_tenant)
    r = ready.post(URL, event("problem.confirmed", tenant="other"), format="json")
    assert r.status_code == 403
    assert r.json()["issue"][0]["details"]["coding"][0]["code"] == "tenant-forbidden"
    assert AuditEntry.objects.filter(action="access.refused", tenant="other").count() == 1
    assert BusinessEvent.objects.count() == 0 and Write.objects.count() == 0
    # Tenant B's writes and events are refused to A's token (403, audited).
    user_b = make_client_app("b-app")
    b_api = api_client_for(user_b, other_tenant)
    body_b = event("problem.confirmed", tenant="other")
    del body_b["initiator"]
    created = b_api.post(URL, body_b, format="json")
    assert created.status_code == 201, created.json()
    write_b = created.json()["writes"][0]["id"]
    before = AuditEntry.objects.filter(action="access.refused").count()
    assert ready.get(f"/api/v1/writes/{write_b}").status_code == 403
    assert ready.get(f"/api/v1/events/{created.json()['id']}").status_code == 403
    assert ready.get("/api/v1/writes", {"tenant": "other"}).status_code == 403
    assert ready.post(f"/api/v1/writes/{write_b}/resolve", {"note": "x"}, format="json").status_code == 403
    assert AuditEntry.objects.filter(action="access.refused").count() == before + 4
    assert all(w["tenant"] == "generic-main" for w in ready.get("/api/v1/writes").json()["results"])
    assert ready.get("/api/v1/writes/00000000-0000-0000-0000-000000000000").status_code == 404


def test_unknown_tenant_is_422(ready):
    r = ready.post(URL, event("problem.confirmed", tenant="nope"), format="json")
    assert r.status_code == 422
    issue = r.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "unknown-tenant" and issue["expression"] == ["tenant"]


def test_initiator_must_be_a_user_of_the_tenant(ready):
    body = event("problem.confirmed")
    body["initiator"] = {"user": "mallory"}
    r = ready.post(URL, body, format="json")
    assert r.status_code == 403
    assert r.json()["issue"][0]["details"]["coding"][0]["code"] == "initiator-forbidden"


def test_dry_run_stores_nothing_and_shows_the_resources(ready):
    audit_before = AuditEntry.objects.count()
    r = ready.post(f"{URL}?dry_run=true", event("vitals.recorded"), format="json")
    assert r.status_code == 200
    body = r.json()
    assert body["dry_run"] is True
    assert body["canonical"]["data"]["measurements"][2]["unit"] == "kg"  # 180 lb, canonicalized
    assert len(body["writes"]) == 6 and body["writes"][0]["resource"]["resourceType"] == "Observation"
    assert body["writes"][0]["contract"]["allowed"] is True
    assert BusinessEvent.objects.count() == 0 and Write.objects.count() == 0
    assert AuditEntry.objects.count() == audit_before


def test_demographics_touching_ehr_owned_fields_is_refused(ready):
    r = ready.post(URL, event("demographics.updated", name=[{"family": "Smith"}]), format="json")
    assert r.status_code == 422
    issue = r.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "field-not-writable"
    assert issue["expression"] == ["data.name"]
    assert Write.objects.count() == 0


def test_demographics_touching_identifiers_is_refused_and_audited(ready):
    body = event("demographics.updated", identifier=[{"system": "urn:example:mrn", "value": "MRN7777"}])
    r = ready.post(URL, body, format="json")
    assert r.status_code == 422
    errors = [i for i in r.json()["issue"] if i["severity"] == "error"]
    assert [(i["details"]["coding"][0]["code"], i["expression"]) for i in errors] == [
        ("field-not-writable", ["data.identifier"])
    ]
    assert "identifier" in errors[0]["diagnostics"]
    assert BusinessEvent.objects.count() == 0 and Write.objects.count() == 0
    refused = AuditEntry.objects.get(action="event.refused")
    assert refused.tenant == "generic-main" and refused.data["status"] == 422
    assert refused.data["rule"] == "field-not-writable"
    assert refused.data["issues"] == [
        {"rule": "field-not-writable", "path": "data.identifier", "reason": errors[0]["diagnostics"]}
    ]
    assert "MRN7777" not in json.dumps(refused.data)
    assert refused.data["body_sha256"] == sha256_text(body)


def test_operation_the_tenant_narrowed_is_refused(ready, tenant):
    tenant.capabilities.filter(resource_type="Condition", operation="create", source="manual").update(
        allowed=False, notes="problem list writes are off during go-live"
    )
    r = ready.post(URL, event("problem.confirmed"), format="json")
    assert r.status_code == 422
    issue = r.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "operation-not-supported"
    assert "go-live" in issue["diagnostics"]
    assert BusinessEvent.objects.count() == 0 and Write.objects.count() == 0
    refused = AuditEntry.objects.get(action="event.refused")
    assert refused.data["rule"] == "operation-not-supported" and refused.tenant == "generic-main"
    assert refused.data["issues"][0]["path"] == "data"


def test_plain_validation_errors_and_dry_runs_leave_no_refusal_entry(ready, tenant):
    bad = event("vitals.recorded", measurements=[{"kind": "heart_rate", "value": 400, "unit": "bpm"}])
    assert ready.post(URL, bad, format="json").status_code == 422
    tenant.capabilities.filter(resource_type="Condition", operation="create", source="manual").update(
        allowed=False
    )
    assert ready.post(f"{URL}?dry_run=true", event("problem.confirmed"), format="json").status_code == 422
    assert not AuditEntry.objects.filter(action="event.refused").exists()


def test_discovery_saying_no_refuses_a_fhir_write(ready, tenant):
    from writeback.models import Capability

    Capability.objects.create(
        tenant=tenant, resource_type="Condition", operation="create", source="discovered", allowed=False
    )
    r = ready.post(URL, event("problem.confirmed"), format="json")
    assert r.status_code == 422
    assert "CapabilityStatement" in r.json()["issue"][0]["diagnostics"]


def test_identity_mismatch_with_the_chart(ready):
    ready.post(URL, event("problem.confirmed", key="k1"), format="json")
    body = event("problem.confirmed", key="k2", note="x")
    body["patient"]["identifier"]["value"] = "MRN9999"
    r = ready.post(URL, body, format="json")
    assert r.status_code == 422
    issue = r.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "patient-identity-mismatch"
    assert issue["expression"] == ["patient.identifier"]


def test_amended_note_supersedes_the_earlier_one(ready):
    first = ready.post(URL, event("note.signed", key="n1"), format="json").json()
    r = ready.post(URL, event("note.signed", key="n2", text="Corrected text", amends="n1"), format="json")
    assert r.status_code == 201, r.json()
    amended = Write.objects.get(uid=r.json()["writes"][0]["id"])
    assert str(amended.supersedes.uid) == first["writes"][0]["id"]
    relates = amended.payload["relatesTo"][0]
    assert relates["code"] == "replaces"
    assert relates["target"]["identifier"]["value"] == first["writes"][0]["id"]


def test_amending_an_unknown_note_is_422(ready):
    r = ready.post(URL, event("note.signed", amends="never-sent"), format="json")
    assert r.status_code == 422
    assert r.json()["issue"][0]["details"]["coding"][0]["code"] == "amended-note-unknown"


# -- transport ---------------------------------------------------------------------------------------


def test_body_too_large_is_413(ready, settings):
    settings.WRITEBACK_MAX_EVENT_BYTES = 1000
    body = event("note.signed", text="x" * 2000)
    r = ready.post(URL, body, format="json")
    assert r.status_code == 413
    assert r.json()["resourceType"] == "OperationOutcome"


def test_wrong_content_type_is_415(ready):
    r = ready.post(URL, "tenant=x", content_type="application/x-www-form-urlencoded")
    assert r.status_code == 415


def test_malformed_json_is_400(ready):
    r = ready.post(URL, '{"tenant": ', content_type="application/json")
    assert r.status_code == 400
    assert r.json()["issue"][0]["details"]["coding"][0]["code"] == "invalid-json"


def test_unknown_type_and_missing_envelope_fields_are_400(ready):
    body = event("problem.confirmed")
    body["type"] = "pizza.ordered"
    r = ready.post(URL, body, format="json")
    assert r.status_code == 400
    assert r.json()["issue"][0]["details"]["coding"][0]["code"] == "unknown-type"
    body = event("problem.confirmed")
    del body["patient"]
    r = ready.post(URL, body, format="json")
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["patient"]


def test_json_array_body_is_400(ready):
    r = ready.post(URL, json.dumps([1, 2]), content_type="application/json")
    assert r.status_code == 400
