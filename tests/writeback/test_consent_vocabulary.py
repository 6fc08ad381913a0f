"""Consent actions are the FHIR interactions we perform (create, update, patch, delete; [] = all), each
write is checked against its own operation at intake and again by the worker, and a scope or period we
cannot honour is refused when the consent is recorded, never stored to refuse every write later."""

import importlib

import pytest
from django.apps import apps

from tests.conftest import api_client_for, granted_user
from tests.writeback.helpers import consent_for, event
from tests.writeback.sync.conftest import drain, post
from writeback.models import Alert, AuditEntry, BusinessEvent, Consent, Write
from writeback.services.compensation import write_compensate
from writeback.services.consents import consent_check, consent_revoke
from writeback.states import WriteState

URL = "/api/v1/consents"
ALLOWED_ACTIONS = "allowed: create, update, patch, delete (an empty list means all)"


def _issue(r) -> dict:
    return r.json()["issue"][0]


@pytest.fixture
def manager(tenant):
    return api_client_for(granted_user(tenant, "cleo.clinician", "clinician"), tenant)


def _consent(scope=None, period=None, patient="pat-3001") -> dict:
    body = {"tenant": "generic-main", "patient": patient}
    if scope is not None:
        body["scope"] = scope
    if period is not None:
        body["period"] = period
    return body


def _nothing_recorded() -> None:
    assert Consent.objects.count() == 0
    assert not AuditEntry.objects.filter(action="consent.created").exists()


# -- recording a consent ---------------------------------------------------------------------------------


@pytest.mark.parametrize("actions", [["write"], ["create", "read"], ["CREATE"], ["compensate"], ["all"]])
def test_an_unknown_action_is_refused_naming_the_allowed_ones(manager, actions):
    r = manager.post(URL, _consent({"actions": actions}), format="json")
    assert r.status_code == 422, r.json()
    issue = _issue(r)
    assert issue["details"]["coding"][0]["code"] == "unknown-consent-action"
    assert issue["expression"] == ["scope.actions"]
    assert ALLOWED_ACTIONS in issue["diagnostics"]
    _nothing_recorded()


@pytest.mark.parametrize("types", [["Observaton"], ["Observation", "Appointment"], ["observation"]])
def test_an_unknown_resource_type_is_refused_naming_the_allowed_ones(manager, types):
    r = manager.post(URL, _consent({"resource_types": types}), format="json")
    assert r.status_code == 422, r.json()
    issue = _issue(r)
    assert issue["details"]["coding"][0]["code"] == "unknown-resource-type"
    assert issue["expression"] == ["scope.resource_types"]
    assert (
        "allowed: AllergyIntolerance, Condition, DocumentReference, MedicationStatement"
        in (issue["diagnostics"])
    )
    _nothing_recorded()


@pytest.mark.parametrize(
    ("period", "path"),
    [
        ({"start": "2027-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "period"),
        ({"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "period"),
        ({"start": "next tuesday"}, "period.start"),
        ({"start": "03/04/2026T00:00:00Z"}, "period.start"),
        ({"end": "2026-13-45T00:00:00Z"}, "period.end"),
        ({"start": "2026-01-01T00:00:00"}, "period.start"),  # no offset: a guess
        ({"end": "2026-01-01"}, "period.end"),  # a date is not an instant
    ],
)
def test_a_malformed_period_is_refused(manager, period, path):
    r = manager.post(URL, _consent(period=period), format="json")
    assert r.status_code == 422, r.json()
    assert _issue(r)["details"]["coding"][0]["code"] == "invalid-period"
    assert _issue(r)["expression"] == [path]
    _nothing_recorded()


@pytest.mark.parametrize(
    "body",
    [
        {"tenant": "generic-main", "patient": 3001},
        {"tenant": "generic-main", "patient": "pat-3001", "scope": {"actions": "create"}},
        {"tenant": "generic-main", "patient": "pat-3001", "scope": {"actions": [1]}},
        {"tenant": "generic-main", "patient": "pat-3001", "scope": ["create"]},
        {"tenant": "generic-main", "patient": "pat-3001", "period": {"start": 20260101}},
        {"tenant": "generic-main", "patient": "pat-3001", "artifact": "a consent form"},
        {"tenant": True, "patient": "pat-3001"},
    ],
)
def test_wrong_json_types_are_refused_not_coerced(manager, body):
    r = manager.post(URL, body, format="json")
    assert r.status_code == 400, r.json()
    assert r.json()["resourceType"] == "OperationOutcome"
    _nothing_recorded()


def test_the_vocabulary_is_stored_and_audited(manager):
    scope = {"resource_types": ["Patient", "Condition"], "actions": ["patch", "create", "create"]}
    period = {"start": "2026-01-01T00:00:00-05:00", "end": None}
    r = manager.post(URL, _consent(scope, period), format="json")
    assert r.status_code == 201, r.json()
    consent = Consent.objects.get()
    assert consent.actions == ["create", "patch"] and consent.resource_types == ["Condition", "Patient"]
    assert consent.period_start.isoformat() == "2026-01-01T05:00:00+00:00" and consent.period_end is None
    created = AuditEntry.objects.get(action="consent.created")
    assert created.data["actions"] == ["create", "patch"]


@pytest.mark.parametrize(
    "artifact",
    [
        {"resourceType": "Patient", "id": "pat-3001"},
        {"resourceType": "Consent", "status": "active"},  # no scope, no category
        {"resourceType": "Consent", "status": 7, "scope": {}, "category": [{}]},
    ],
)
def test_an_artifact_that_is_not_a_valid_fhir_consent_is_refused(manager, artifact):
    r = manager.post(URL, {**_consent(), "artifact": artifact}, format="json")
    assert r.status_code == 422, r.json()
    assert _issue(r)["details"]["coding"][0]["code"] == "invalid-artifact"
    assert _issue(r)["expression"] == ["artifact"]
    _nothing_recorded()


def test_a_valid_artifact_is_kept_with_its_hash(manager):
    artifact = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "treatment"}]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "policyRule": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]
        },
    }
    r = manager.post(URL, {**_consent(), "artifact": artifact}, format="json")
    assert r.status_code == 201, r.json()
    consent = Consent.objects.get()
    assert consent.artifact == artifact and len(consent.artifact_hash) == 64


# -- each write against its own operation ------------------------------------------------------------


def test_intake_checks_each_write_against_its_operation(api, tenant, clinician):
    consent_for(tenant, actions=["create"])
    r = api.post("/api/v1/events", event("problem.confirmed", key="create-ok"), format="json")
    assert r.status_code == 201, r.json()
    assert BusinessEvent.objects.get().consent_snapshot["actions"] == ["create"]

    for event_type, what in [
        ("demographics.updated", "patch of Patient"),
        ("referral.status_changed", "update of Task"),
    ]:
        r = api.post("/api/v1/events", event(event_type, key=f"refused-{event_type}"), format="json")
        assert r.status_code == 403, r.json()
        assert _issue(r)["details"]["coding"][0]["code"] == "consent-out-of-scope"
        assert f"does not cover {what}" in _issue(r)["diagnostics"]
    assert BusinessEvent.objects.count() == 1 and Write.objects.count() == 1
    refused = AuditEntry.objects.filter(action="access.refused").values_list("data__rule", flat=True)
    assert list(refused) == ["consent-out-of-scope"] * 2


def test_a_patch_consent_allows_the_patch_and_nothing_else(api, tenant, clinician):
    consent_for(tenant, resource_types=["Patient"], actions=["patch"])
    r = api.post("/api/v1/events", event("demographics.updated", key="patch-ok"), format="json")
    assert r.status_code == 201, r.json()
    r = api.post("/api/v1/events", event("problem.confirmed", key="create-no"), format="json")
    assert r.status_code == 403 and "create of Condition" in _issue(r)["diagnostics"]


def test_a_consent_covers_its_own_tenant_and_patient_only(api, tenant, other_tenant, clinician):
    """The same patient id with an all-covering consent at another tenant, or another patient's consent
    here, lets nothing through."""
    consent_for(other_tenant, patient="pat-1001")
    consent_for(tenant, patient="pat-1002")
    r = api.post("/api/v1/events", event("problem.confirmed", key="elsewhere"), format="json")
    assert r.status_code == 403 and _issue(r)["details"]["coding"][0]["code"] == "consent-missing"
    assert BusinessEvent.objects.count() == 0
    assert AuditEntry.objects.get(action="access.refused").data["rule"] == "consent-missing"


def test_an_operation_outside_the_vocabulary_is_never_covered(tenant):
    """The ledger's word `compensate` is not an interaction: a caller passing it fails closed, even
    against a consent that allows everything."""
    consent_for(tenant)
    assert consent_check(tenant=tenant, patient_ref="pat-1001", writes=[("Condition", "create")]).ok
    decision = consent_check(tenant=tenant, patient_ref="pat-1001", writes=[("Condition", "compensate")])
    assert not decision.ok and decision.rule == "consent-out-of-scope"


def _only(live, actions: list[str]) -> None:
    for consent in live.consents.filter(patient_ref="pat-1001"):
        consent_revoke(consent=consent, actor=None, reason="narrowed for the test")
    consent_for(live, actions=actions)


@pytest.mark.parametrize(("actions", "sent"), [(["create"], False), (["create", "update"], True)])
def test_the_worker_checks_a_rollback_as_the_update_it_sends(live, sim, api, admin_user, actions, sent):
    _only(live, actions)
    [original] = post(api, "problem.confirmed")
    drain()
    original.refresh_from_db()
    assert original.state == WriteState.COMMITTED
    comp = write_compensate(write=original, user=admin_user, kind="rollback", reason="wrong chart")
    compensating = comp.writes.get()
    assert compensating.operation == "compensate"
    drain()
    compensating.refresh_from_db()
    stored = next(c for c in sim.resources("Condition") if c["id"] == original.target_resource_id)
    status = stored.get("verificationStatus", {}).get("coding", [{}])[0].get("code")
    if sent:
        assert compensating.state == WriteState.COMMITTED and status == "entered-in-error"
    else:
        assert compensating.state == WriteState.FAILED_TERMINAL
        assert compensating.last_error.startswith("consent-out-of-scope")
        assert "update of Condition" in compensating.last_error
        assert status != "entered-in-error"  # nothing was sent
        assert not compensating.attempts_log.exclude(outcome="terminal").exists()
        entries = AuditEntry.objects.filter(write_uid=str(compensating.uid))
        assert any(e.data.get("code") == "consent-out-of-scope" for e in entries)
        assert Alert.objects.get(write=compensating).code == "consent-out-of-scope"


# -- the data migration -------------------------------------------------------------------------------


def test_the_migration_maps_write_to_every_write(tenant):
    migration = importlib.import_module("writeback.migrations.0009_consent_actions_vocabulary")
    old = Consent.objects.create(tenant=tenant, patient_ref="pat-1001", actions=["write"])
    mixed = Consent.objects.create(tenant=tenant, patient_ref="pat-1002", actions=["read", "write"])
    never = Consent.objects.create(tenant=tenant, patient_ref="pat-1003", actions=["read"])
    migration.write_means_all(apps, None)
    assert Consent.objects.get(pk=old.pk).actions == [] and Consent.objects.get(pk=mixed.pk).actions == []
    assert Consent.objects.get(pk=never.pk).actions == ["read"]  # it allowed no write, and still allows none
    writes = [("Condition", "create"), ("Patient", "patch"), ("Task", "update")]
    assert consent_check(tenant=tenant, patient_ref="pat-1001", writes=writes).ok
    assert not consent_check(tenant=tenant, patient_ref="pat-1003", writes=writes).ok
