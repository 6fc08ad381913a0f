"""Against the generic simulator over real sockets, for every event type: the stored resource names the
mapped Practitioner, and one Provenance targets exactly the event's resources at their stored versions."""

import pytest

from tests.conftest import api_client_for
from tests.writeback.helpers import EVENT_TYPES, event
from tests.writeback.sync.conftest import drain
from writeback.fhir_mapping.authors import AUTHOR_ELEMENTS
from writeback.fhir_mapping.provenance import EVENT_SYSTEM
from writeback.models import BusinessEvent, Write
from writeback.services.authors import practitioner_map, tenant_set_author_policy
from writeback.states import WriteState

AMY = "Practitioner/prac-amy"
ORG = "Organization/org-generic"


@pytest.fixture
def attesting(live, clinician):
    practitioner_map(tenant=live, username=clinician.username, practitioner_ref=AMY, actor="tests")
    tenant_set_author_policy(
        tenant=live,
        unmapped_author="refuse",
        organization_ref=ORG,
        write_provenance=True,
        actor="tests",
    )
    return live


def _data_for(event_type: str, sim) -> dict:
    if event_type == "demographics.updated":
        patient = next(p for p in sim.resources("Patient") if p["id"] == "pat-1001")
        return {"base_version": patient["meta"]["versionId"]}
    if event_type == "referral.status_changed":
        return {"task_id": "task-1001"}
    return {}


def _stored(sim, resource_type: str, resource_id: str) -> dict:
    return next(r for r in sim.resources(resource_type) if r["id"] == resource_id)


def _post_and_send(api, sim, tenant, clinician2, body) -> BusinessEvent:
    r = api.post("/api/v1/events", body, format="json")
    assert r.status_code == 201, r.json()
    stored = BusinessEvent.objects.get(uid=r.json()["id"])
    bob = api_client_for(clinician2, tenant)
    for w in stored.writes.filter(state=WriteState.AWAITING_APPROVAL).order_by("position"):
        ok = bob.post(f"/api/v1/writes/{w.uid}/approve", {"rationale": "reviewed"}, format="json")
        assert ok.status_code == 200, ok.json()
    drain()
    return stored


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_event_type_carries_its_author_and_one_provenance(attesting, sim, api, clinician2, event_type):
    stored = _post_and_send(api, sim, attesting, clinician2, event(event_type, **_data_for(event_type, sim)))
    writes = list(stored.writes.order_by("position"))
    assert {w.state for w in writes} == {WriteState.COMMITTED}, [
        (w.resource_type, w.last_error) for w in writes
    ]
    chart, (attestation,) = writes[:-1], writes[-1:]
    assert attestation.resource_type == "Provenance" and all(w.resource_type != "Provenance" for w in chart)

    expected_targets = []
    for w in chart:
        resource = _stored(sim, w.resource_type, w.target_resource_id)
        for element in AUTHOR_ELEMENTS.get(w.resource_type, ()):
            value = resource[element]
            for ref in value if isinstance(value, list) else [value]:
                assert ref["reference"] == AMY, (element, resource)
        expected_targets.append(
            f"{w.resource_type}/{resource['id']}/_history/{resource['meta']['versionId']}"
        )

    (prov,) = sim.resources("Provenance")
    assert prov["id"] == str(attestation.uid) == attestation.target_resource_id
    assert [t["reference"] for t in prov["target"]] == expected_targets
    agents = {a["type"]["coding"][0]["code"]: a["who"] for a in prov["agent"]}
    assert agents["author"]["reference"] == AMY
    assert agents["transmitter"]["reference"] == ORG
    assert "assembler" not in agents  # a person proposed it
    assert prov["entity"][0]["what"]["identifier"] == {"system": EVENT_SYSTEM, "value": str(stored.uid)}


def test_ai_event_names_the_software_as_an_agent_of_its_own(attesting, sim, api, clinician2):
    body = event("problem.confirmed")
    body["source"]["kind"] = "ai"
    stored = _post_and_send(api, sim, attesting, clinician2, body)
    states = [(w.resource_type, w.state, w.last_error) for w in stored.writes.all()]
    assert {s for _, s, _ in states} == {WriteState.COMMITTED}, states
    (prov,) = sim.resources("Provenance")
    agents = {a["type"]["coding"][0]["code"]: a["who"] for a in prov["agent"]}
    assert agents["assembler"] == {"type": "Device", "display": "intake-portal (ai)"}
    assert agents["author"]["reference"] == AMY
    assert stored.writes.get(resource_type="Provenance").approval_required is False


def test_provenance_waits_for_the_events_other_writes(attesting, sim, api, clinician2):
    """A medication waits for a clinician: its Provenance is not sent before it, and then names it."""
    r = api.post("/api/v1/events", event("medication.reconciled"), format="json")
    assert r.status_code == 201
    drain()
    assert sim.resources("Provenance") == []
    prov_write = Write.objects.get(resource_type="Provenance")
    assert prov_write.state == WriteState.PENDING and prov_write.attempts == 0
    med = Write.objects.get(resource_type="MedicationStatement")
    bob = api_client_for(clinician2, attesting)
    assert (
        bob.post(f"/api/v1/writes/{med.uid}/approve", {"rationale": "ok"}, format="json").status_code == 200
    )
    drain()
    med.refresh_from_db()
    (prov,) = sim.resources("Provenance")
    assert [t["reference"] for t in prov["target"]] == [
        f"MedicationStatement/{med.target_resource_id}/_history/{med.target_version}"
    ]


def test_a_rejected_event_gets_no_provenance(attesting, sim, api, clinician2):
    r = api.post("/api/v1/events", event("allergy.recorded"), format="json")
    assert r.status_code == 201
    allergy = Write.objects.get(resource_type="AllergyIntolerance")
    bob = api_client_for(clinician2, attesting)
    assert (
        bob.post(f"/api/v1/writes/{allergy.uid}/reject", {"rationale": "wrong"}, format="json").status_code
        == 200
    )
    drain()
    assert sim.resources("Provenance") == [] and sim.resources("AllergyIntolerance", patient="pat-1001") == []
    prov_write = Write.objects.get(resource_type="Provenance")
    assert prov_write.state == WriteState.FAILED_TERMINAL and "nothing" in prov_write.last_error


def test_provenance_only_where_the_vendor_writes_it(db, engineer):
    from django.core.management import CommandError, call_command

    from writeback.services.tenants import tenant_create

    tenant_create(slug="epic-x", vendor="epic", base_url="http://127.0.0.1:9/fhir")
    with pytest.raises(CommandError, match="writes no Provenance"):
        call_command("tenant_map_user", "epic-x", "--provenance", "on")


def test_an_edited_provenance_payload_cannot_point_elsewhere(attesting, sim, api, clinician2):
    """Someone rewrites the queued Provenance's targets in the database to another patient's resource:
    what goes out still names exactly what this event wrote (the targets come from the ledger)."""
    r = api.post("/api/v1/events", event("problem.confirmed"), format="json")
    assert r.status_code == 201
    prov = Write.objects.get(resource_type="Provenance")
    forged = {**prov.payload, "target": [{"reference": "Condition/someone-else/_history/1"}]}
    Write.objects.filter(pk=prov.pk).update(payload=forged)
    drain()
    condition = Write.objects.get(resource_type="Condition")
    (stored,) = sim.resources("Provenance")
    assert [t["reference"] for t in stored["target"]] == [
        f"Condition/{condition.target_resource_id}/_history/{condition.target_version}"
    ]


def test_a_rollback_is_attested_by_a_provenance_of_its_own(attesting, sim, api, clinician2, admin_user):
    """A Provenance is never erased: rolling back the event's Condition writes a second Provenance that
    names the entered-in-error version, the admin who asked (by the tenant's policy) and the rollback."""
    from writeback.errors import DomainError
    from writeback.services.compensation import write_compensate

    stored = _post_and_send(api, sim, attesting, clinician2, event("problem.confirmed"))
    condition = stored.writes.get(resource_type="Condition")
    comp = write_compensate(write=condition, user=admin_user, kind="rollback", reason="wrong patient chart")
    drain()
    undo = Write.objects.get(event=comp.event, resource_type="Condition")
    attest = Write.objects.get(event=comp.event, resource_type="Provenance")
    assert undo.state == attest.state == WriteState.COMMITTED, (undo.last_error, attest.last_error)
    current = _stored(sim, "Condition", condition.target_resource_id)
    assert current["verificationStatus"]["coding"][0]["code"] == "entered-in-error"
    second = _stored(sim, "Provenance", str(attest.uid))
    assert [t["reference"] for t in second["target"]] == [
        f"Condition/{condition.target_resource_id}/_history/{current['meta']['versionId']}"
    ]
    assert second["activity"]["coding"][0]["code"] == "UPDATE"
    assert second["entity"][0]["what"]["identifier"]["value"] == str(comp.event.uid)
    agents = {a["type"]["coding"][0]["code"]: a["who"] for a in second["agent"]}
    assert agents["author"]["reference"] == ORG  # the admin has no Practitioner: the Organization
    assert len(sim.resources("Provenance")) == 2

    # The Provenance itself is never rolled back: a clear 422, and nothing is queued.
    first = stored.writes.get(resource_type="Provenance")
    queued = Write.objects.count()
    with pytest.raises(DomainError) as refused:
        write_compensate(write=first, user=admin_user, kind="rollback", reason="try it")
    assert refused.value.status == 422 and "Provenance" in str(refused.value)
    assert Write.objects.count() == queued
