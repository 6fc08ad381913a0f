"""The author in the chart: people mapped to the EHR's Practitioners per tenant, the tenant's policy for
people without one, and the author element every resource we write carries."""

import pytest
from django.core.management import CommandError, call_command
from fhir.resources.R4B import get_fhir_model_class

from tests.conftest import api_client_for, granted_user
from tests.writeback.helpers import EVENT_TYPES, consent_for, event
from tests.writeback.sync.conftest import drain
from writeback.fhir_mapping.authors import AUTHOR_ELEMENTS
from writeback.models import AuditEntry, BusinessEvent, PractitionerMapping, Write
from writeback.services.authors import practitioner_map, tenant_set_author_policy
from writeback.services.permissions import ActionRefused
from writeback.states import WriteState

URL = "/api/v1/events"
AMY = "Practitioner/prac-amy"


def _authors(payload: dict) -> list[dict]:
    """Every Reference in the resource's author elements."""
    found = []
    for element in AUTHOR_ELEMENTS.get(payload["resourceType"], ()):
        value = payload.get(element)
        found += value if isinstance(value, list) else [value] if value else []
    return found


@pytest.fixture
def mapped(tenant, clinician):
    consent_for(tenant)
    call_command("tenant_map_user", tenant.slug, clinician.username, "--practitioner", AMY)
    return tenant


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_resource_names_the_initiators_practitioner(mapped, api, event_type):
    r = api.post(URL, event(event_type), format="json")
    assert r.status_code == 201, r.json()
    stored = BusinessEvent.objects.get(uid=r.json()["id"])
    assert stored.author == {"reference": AMY, "display": "amy.clinician"}
    for w in Write.objects.filter(event=stored):
        get_fhir_model_class(w.resource_type).model_validate(w.payload)
        expected = len(AUTHOR_ELEMENTS.get(w.resource_type, ()))
        authors = _authors(w.payload)
        assert len(authors) == expected and all(a["reference"] == AMY for a in authors), w.payload


def test_unmapped_initiator_is_refused_where_the_tenant_says_so(tenant, api, clinician):
    consent_for(tenant)
    tenant_set_author_policy(tenant=tenant, unmapped_author="refuse", organization_ref="", actor="tests")
    r = api.post(URL, event("problem.confirmed"), format="json")
    assert r.status_code == 422
    issues = r.json()["issue"]
    assert any("practitioner-unmapped" in str(i) for i in issues), issues
    assert not BusinessEvent.objects.exists() and not Write.objects.exists()
    refusal = AuditEntry.objects.get(action="event.refused")
    assert "practitioner-unmapped" in str(refusal.data)
    # Mapped, the same event goes in.
    practitioner_map(tenant=tenant, username=clinician.username, practitioner_ref=AMY, actor="tests")
    assert api.post(URL, event("problem.confirmed"), format="json").status_code == 201


def test_unmapped_initiator_is_attributed_to_the_organization(tenant, api, clinician):
    consent_for(tenant)
    tenant_set_author_policy(
        tenant=tenant, unmapped_author="organization", organization_ref="Organization/org-1", actor="tests"
    )
    for event_type in ("vitals.recorded", "problem.confirmed", "note.signed"):
        r = api.post(URL, event(event_type), format="json")
        assert r.status_code == 201, r.json()
    obs = Write.objects.filter(resource_type="Observation").first().payload
    assert obs["performer"] == [{"reference": "Organization/org-1", "display": "generic-main"}]
    doc = Write.objects.get(resource_type="DocumentReference").payload
    assert doc["author"][0]["reference"] == "Organization/org-1"
    # R4 lets a Condition's recorder and asserter name people only: no Organization there.
    cond = Write.objects.get(resource_type="Condition").payload
    assert "recorder" not in cond and "asserter" not in cond
    assert (
        BusinessEvent.objects.filter(type="problem.confirmed").get().author["reference"]
        == "Organization/org-1"
    )


def test_without_an_organization_reference_the_tenant_is_named_by_display(tenant, api, clinician):
    consent_for(tenant)
    assert api.post(URL, event("vitals.recorded"), format="json").status_code == 201
    obs = Write.objects.filter(resource_type="Observation").first().payload
    assert obs["performer"] == [{"type": "Organization", "display": "generic-main"}]
    get_fhir_model_class("Observation").model_validate(obs)


def test_command_maps_changes_and_removes_with_history_and_audit(tenant, clinician, capsys):
    call_command("tenant_map_user", tenant.slug, clinician.username, "--practitioner", AMY)
    call_command("tenant_map_user", tenant.slug, clinician.username, "--practitioner", "Practitioner/p2")
    assert PractitionerMapping.objects.get().practitioner_ref == "Practitioner/p2"
    call_command("tenant_map_user", tenant.slug, clinician.username, "--remove", "--reason", "left")
    assert not PractitionerMapping.objects.exists()
    assert PractitionerMapping.history.count() == 3  # created, changed, deleted
    entries = list(AuditEntry.objects.filter(action__startswith="practitioner.").order_by("seq"))
    assert [(e.action, e.data["before"], e.data["after"]) for e in entries] == [
        ("practitioner.mapped", None, AMY),
        ("practitioner.mapped", AMY, "Practitioner/p2"),
        ("practitioner.unmapped", "Practitioner/p2", None),
    ]
    call_command("tenant_map_user", tenant.slug, "--unmapped", "refuse", "--organization", "Organization/o1")
    tenant.refresh_from_db()
    assert (tenant.unmapped_author, tenant.organization_ref) == ("refuse", "Organization/o1")
    policy = AuditEntry.objects.get(action="tenant.author_policy_changed")
    assert policy.data["before"]["unmapped_author"] == "organization"
    assert policy.data["after"] == {
        "unmapped_author": "refuse",
        "organization_ref": "Organization/o1",
        "write_provenance": False,
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["generic-main", "amy.clinician", "--practitioner", "Patient/1"], "not a Practitioner"),
        (["generic-main", "amy.clinician", "--practitioner", "Practitioner/a b"], "not a Practitioner"),
        (["generic-main", "nobody", "--practitioner", AMY], "no user"),
        (["generic-main", "intake-portal", "--practitioner", AMY], "client app"),
        (["nowhere", "amy.clinician", "--practitioner", AMY], "no tenant"),
        (["generic-main", "--organization", "Practitioner/x"], "not an Organization"),
        (["generic-main", "amy.clinician"], "give USERNAME"),
    ],
)
def test_command_refuses_bad_input_and_writes_nothing(tenant, clinician, app_user, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("tenant_map_user", *args)
    assert not PractitionerMapping.objects.exists()
    tenant.refresh_from_db()
    assert tenant.organization_ref == ""
    assert not AuditEntry.objects.filter(action__startswith="practitioner.").exists()


def test_only_an_engineer_of_the_tenant_maps_people(tenant, other_tenant, clinician, engineer):
    other_engineer = granted_user(other_tenant, "oz.engineer", "integration_engineer")
    for who in (clinician, other_engineer):
        with pytest.raises(ActionRefused):
            practitioner_map(tenant=tenant, username=clinician.username, practitioner_ref=AMY, actor=who)
    assert not PractitionerMapping.objects.exists()
    assert AuditEntry.objects.filter(action="access.refused").count() == 2
    practitioner_map(tenant=tenant, username=clinician.username, practitioner_ref=AMY, actor=engineer)
    assert PractitionerMapping.objects.get().set_by == engineer


def test_a_mapping_belongs_to_its_tenant(tenant, other_tenant, clinician, api):
    """amy mapped at another tenant is unmapped here: a refusing tenant refuses her events."""
    consent_for(tenant)
    practitioner_map(tenant=other_tenant, username=clinician.username, practitioner_ref=AMY, actor="tests")
    tenant_set_author_policy(tenant=tenant, unmapped_author="refuse", organization_ref="", actor="tests")
    r = api.post(URL, event("vitals.recorded"), format="json")
    assert r.status_code == 422 and not Write.objects.exists()


# -- source.kind: software proposes, people decide ----------------------------------------------------


def test_unknown_source_kind_is_a_422_and_stores_nothing(mapped, api):
    body = event("vitals.recorded")
    body["source"]["kind"] = "robot"
    r = api.post(URL, body, format="json")
    assert r.status_code == 422, r.json()
    assert "unknown-source-kind" in str(r.json())
    assert not BusinessEvent.objects.exists()


@pytest.mark.parametrize("kind", ["ai", "automation"])
def test_software_events_wait_for_approval_whatever_the_contract(mapped, api, kind):
    body = event("vitals.recorded")  # low risk: the contract sends vitals straight through
    body["source"]["kind"] = kind
    r = api.post(URL, body, format="json")
    assert r.status_code == 201, r.json()
    assert r.json()["source_kind"] == kind
    assert {w["state"] for w in r.json()["writes"]} == {WriteState.AWAITING_APPROVAL}
    assert BusinessEvent.objects.get().source_kind == kind
    # A person's vitals go straight through.
    human = api.post(URL, event("vitals.recorded", key="human-vitals"), format="json").json()
    assert {w["state"] for w in human["writes"]} == {WriteState.PENDING}


def test_same_facts_from_ai_are_not_a_duplicate_of_a_persons(mapped, api):
    first = api.post(URL, event("problem.confirmed", key="k1"), format="json")
    body = event("problem.confirmed", key="k1")
    body["source"]["kind"] = "ai"
    again = api.post(URL, body, format="json")
    assert first.status_code == 201 and again.status_code == 409


def test_ai_vitals_wait_and_the_submitter_cannot_approve(live, sim, clinician, clinician2):
    """amy posts AI-proposed vitals herself: she cannot approve them (403, audited, nothing sent);
    bob can, and only then do they reach the EHR."""
    practitioner_map(tenant=live, username=clinician.username, practitioner_ref=AMY, actor="tests")
    amy = api_client_for(clinician, live)
    body = event("vitals.recorded")
    del body["initiator"]
    body["source"]["kind"] = "ai"
    r = amy.post(URL, body, format="json")
    assert r.status_code == 201, r.json()
    writes = list(Write.objects.filter(event__uid=r.json()["id"]).order_by("position"))
    assert {w.state for w in writes} == {WriteState.AWAITING_APPROVAL}
    drain()
    assert sim.resources("Observation", patient="pat-1001") == []
    denied = amy.post(f"/api/v1/writes/{writes[0].uid}/approve", {"rationale": "mine"}, format="json")
    assert denied.status_code == 403
    assert AuditEntry.objects.filter(action="access.refused", object_id=str(writes[0].uid)).exists()
    drain()
    assert sim.resources("Observation", patient="pat-1001") == []
    bob = api_client_for(clinician2, live)
    for w in writes:
        ok = bob.post(f"/api/v1/writes/{w.uid}/approve", {"rationale": "checked"}, format="json")
        assert ok.status_code == 200, ok.json()
    drain()
    stored = sim.resources("Observation", patient="pat-1001")
    assert len(stored) == len(writes)
    assert all(o["performer"] == [{"reference": AMY, "display": "amy.clinician"}] for o in stored)
