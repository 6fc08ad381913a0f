"""GET /api/v1/events/{id} and GET /api/v1/writes with its filters."""

from datetime import UTC, datetime

import pytest

from tests.conftest import api_client_for, make_client_app
from tests.writeback.helpers import consent_for, event
from writeback.models import BusinessEvent, Write
from writeback.services.tenants import tenant_grant

EVENTS = "/api/v1/events"
WRITES = "/api/v1/writes"


@pytest.fixture
def ready(api, tenant, clinician):
    consent_for(tenant)
    consent_for(tenant, patient="pat-1002")
    return api


def _post(client, event_type: str, key: str, patient: str = "pat-1001", tenant: str = "generic-main"):
    body = event(event_type, tenant=tenant, key=key)
    body["patient"] = {"id": patient}
    r = client.post(EVENTS, body, format="json")
    assert r.status_code == 201, r.json()
    return r.json()


def _ids(r) -> set[str]:
    assert r.status_code == 200, r.json()
    return {w["id"] for w in r.json()["results"]}


def _code(r) -> str:
    return r.json()["issue"][0]["details"]["coding"][0]["code"]


def test_event_detail(ready):
    posted = _post(ready, "problem.confirmed", "p1")
    r = ready.get(f"{EVENTS}/{posted['id']}")
    assert r.status_code == 200
    body = r.json()
    stored = BusinessEvent.objects.get(uid=posted["id"])
    assert body["id"] == posted["id"] and body["tenant"] == "generic-main"
    assert body["type"] == "problem.confirmed" and body["kind"] == stored.kind
    assert body["idempotency_key"] == "p1" and body["source_message_id"] == "msg-p1"
    assert body["source_system"] == "intake-portal"
    assert body["patient_ref"] == "pat-1001" and body["encounter_ref"] == "enc-77"
    assert body["initiator_name"] == "amy.clinician" and body["acting_system"] == "intake-portal"
    assert body["content_hash"] == stored.content_hash and len(body["content_hash"]) == 64
    assert body["correlation_id"] == posted["correlation_id"]
    assert body["canonical_payload"]["data"]["code"]["system"] == "http://snomed.info/sct"
    assert body["consent_snapshot"]["id"] == str(stored.consent.uid)
    write = Write.objects.get(event=stored)
    assert body["writes"] == [
        {
            "id": str(write.uid),
            "resource_type": "Condition",
            "operation": "create",
            "state": "pending",
            "risk": "medium",
        }
    ]


def test_event_detail_of_an_unknown_id_is_404(ready):
    r = ready.get(f"{EVENTS}/00000000-0000-0000-0000-000000000000")
    assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"


def test_writes_since(ready):
    old = _post(ready, "problem.confirmed", "old")["writes"][0]["id"]
    new = _post(ready, "note.signed", "new")["writes"][0]["id"]
    Write.objects.filter(uid=old).update(created_at=datetime(2026, 1, 1, tzinfo=UTC))
    Write.objects.filter(uid=new).update(created_at=datetime(2026, 3, 1, tzinfo=UTC))
    assert _ids(ready.get(WRITES, {"since": "2026-02-01T00:00:00+00:00"})) == {new}
    assert _ids(ready.get(WRITES, {"since": "2026-03-01T00:00:00Z"})) == {new}  # inclusive
    # The same instant written with another offset.
    assert _ids(ready.get(WRITES, {"since": "2026-02-28T19:00:00-05:00"})) == {new}
    assert _ids(ready.get(WRITES, {"since": "2025-12-31T00:00:00Z"})) == {old, new}
    assert _ids(ready.get(WRITES, {"since": "2026-03-02T00:00:00Z"})) == set()


def test_writes_by_patient(ready):
    first = _post(ready, "problem.confirmed", "a", patient="pat-1001")["writes"][0]["id"]
    second = _post(ready, "problem.confirmed", "b", patient="pat-1002")["writes"][0]["id"]
    assert _ids(ready.get(WRITES, {"patient": "pat-1001"})) == {first}
    assert _ids(ready.get(WRITES, {"patient": "pat-1002"})) == {second}
    assert _ids(ready.get(WRITES, {"patient": "pat-9999"})) == set()


def test_writes_by_tenant(tenant, other_tenant, clinician):
    """A token over two tenants: `tenant=` narrows the list to exactly that tenant's writes."""
    user = make_client_app("two-tenant-app")
    tenant_grant(tenant=tenant, user=user)
    tenant_grant(tenant=other_tenant, user=user)
    tenant_grant(tenant=other_tenant, user=clinician)
    consent_for(tenant)
    consent_for(other_tenant)
    client = api_client_for(user, tenant, other_tenant)
    here = _post(client, "problem.confirmed", "t1")["writes"][0]["id"]
    there = _post(client, "problem.confirmed", "t2", tenant="other")["writes"][0]["id"]
    assert _ids(client.get(WRITES, {"tenant": "generic-main"})) == {here}
    assert _ids(client.get(WRITES, {"tenant": "other"})) == {there}
    assert _ids(client.get(WRITES)) == {here, there}
    assert _ids(client.get(WRITES, {"tenant": "no-such-tenant"})) == set()


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-13-45T00:00:00Z"}, "since"),
        ({"until": "03/04/2025"}, "until"),
        ({"since": "2026-02-01T00:00:00"}, "since"),  # no offset: refused, not read in the server's zone
        ({"until": "2026-02-01"}, "until"),
        ({"state": "bogus"}, "state"),
        ({"risk": "extreme"}, "risk"),
    ],
)
def test_bad_filter_values_are_400(ready, params, path):
    _post(ready, "problem.confirmed", "p1")
    r = ready.get(WRITES, params)
    assert r.status_code == 400
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [path]
    assert _code(r) == "bad-request"


def test_writes_by_ehr_reference_as_the_console_shows_it(ready):
    note = _post(ready, "note.signed", "n")["writes"][0]["id"]
    problem = _post(ready, "problem.confirmed", "p")["writes"][0]["id"]
    Write.objects.filter(uid=note).update(target_resource_id="doc-7", target_version="3")
    Write.objects.filter(uid=problem).update(target_resource_id="doc-7", target_version="1")
    assert _ids(ready.get(WRITES, {"q": "doc-7"})) == {note, problem}
    assert _ids(ready.get(WRITES, {"q": "DocumentReference/doc-7"})) == {note}
    assert _ids(ready.get(WRITES, {"q": "DocumentReference/doc-7/_history/3"})) == {note}
    assert _ids(ready.get(WRITES, {"q": "DocumentReference/doc-7/_history/1"})) == set()
    assert _ids(ready.get(WRITES, {"q": "Condition/doc-7/_history/1"})) == {problem}
