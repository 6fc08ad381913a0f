"""discover_capabilities: /metadata of every simulator profile recorded as discovered rows, failures
recorded and not fatal, manual capabilities never touched."""

import io

import httpx
import pytest
import respx
from django.core.management import CommandError, call_command

from adapters.simulator import start_simulator
from tests.adapters.intended import write_request
from writeback.models import AuditEntry, Capability
from writeback.services.discovery import capabilities_discover
from writeback.services.targets import adapter_for, conditional_create_registry, target_config_for
from writeback.services.tenants import tenant_create

PROFILES = ("generic", "epic", "athena", "veradigm")


@pytest.fixture(scope="module")
def sims():
    handles = {p: start_simulator(p, seed="none") for p in PROFILES}
    yield handles
    for h in handles.values():
        h.stop()


def _tenant(slug, vendor, base_url):
    return tenant_create(slug=slug, vendor=vendor, base_url=base_url, settings={"practice_id": "195900"})


def _rows(tenant, source):
    return {
        (c.resource_type, c.operation): c.allowed
        for c in Capability.objects.filter(tenant=tenant, source=source)
    }


def _manual_snapshot(tenant) -> dict:
    rows = Capability.objects.filter(tenant=tenant, source=Capability.Source.MANUAL).order_by(
        "resource_type", "operation"
    )
    return {
        "rows": [(c.resource_type, c.operation, c.allowed, c.notes, c.set_by_id, c.set_at) for c in rows],
        "history": Capability.history.filter(tenant_id=tenant.pk, source=Capability.Source.MANUAL).count(),
    }


def _run(slug) -> str:
    out = io.StringIO()
    call_command("discover_capabilities", slug, stdout=out)
    return out.getvalue()


EXPECTED = {
    # (type, operation) -> what each profile's /metadata declares
    "generic": {
        ("Observation", "conditional_create"): True,
        ("Patient", "patch"): True,
        ("Task", "update"): True,
    },
    "epic": {
        ("Observation", "create"): True,
        ("Observation", "conditional_create"): False,
        ("MedicationStatement", "create"): False,
        ("Patient", "patch"): False,
    },
    "athena": {
        ("QuestionnaireResponse", "create"): True,
        ("Observation", "create"): False,
        ("Patient", "read"): True,
    },
    # Veradigm over-advertises: its FHIR API refuses these writes.
    "veradigm": {
        ("Observation", "create"): True,
        ("QuestionnaireResponse", "create"): True,
        ("Patient", "update"): False,
    },
}


@pytest.mark.django_db
@pytest.mark.parametrize("profile", PROFILES)
def test_discovery_records_each_profile(sims, profile):
    tenant = _tenant(f"{profile}-disc", profile, sims[profile].fhir_base)
    manual_before = _rows(tenant, Capability.Source.MANUAL)
    output = _run(tenant.slug)
    discovered = _rows(tenant, Capability.Source.DISCOVERED)
    assert "Discovered" in output
    for key, allowed in EXPECTED[profile].items():
        assert discovered[key] is allowed, key
    # Manual rows are never touched, whatever /metadata claims.
    assert _rows(tenant, Capability.Source.MANUAL) == manual_before
    tenant.refresh_from_db()
    assert tenant.settings["last_discovery"]["ok"] is True
    assert tenant.settings["practice_id"] == "195900"
    entry = AuditEntry.objects.filter(action="capabilities.discovered", tenant=tenant.slug).get()
    assert entry.data["allowed"] + entry.data["refused"] == len(discovered)


@pytest.mark.django_db
def test_veradigm_advertising_does_not_widen_the_manual_registry(sims):
    tenant = _tenant("veradigm-wide", "veradigm", sims["veradigm"].fhir_base)
    _run(tenant.slug)
    assert _rows(tenant, Capability.Source.DISCOVERED)[("QuestionnaireResponse", "create")] is True
    manual = Capability.objects.get(
        tenant=tenant, resource_type="QuestionnaireResponse", operation="create", source="manual"
    )
    assert manual.allowed is False


@pytest.mark.django_db
def test_rediscovery_changes_nothing_and_a_narrowed_server_narrows(sims):
    tenant = _tenant("generic-again", "generic", sims["generic"].fhir_base)
    first = capabilities_discover(tenant=tenant, actor="test")
    second = capabilities_discover(tenant=tenant, actor="test")
    assert first.counts["created"] > 0 and second.counts["created"] == second.counts["changed"] == 0
    tenant.base_url = sims["athena"].fhir_base  # same tenant, now a server that declares less
    tenant.save()
    third = capabilities_discover(tenant=tenant, actor="test")
    assert third.counts["changed"] > 0
    assert _rows(tenant, Capability.Source.DISCOVERED)[("Observation", "create")] is False


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("base", "reason"),
    [
        ("{origin}/no-fhir-here", "404"),  # no /metadata at all
        ("http://127.0.0.1:9/fhir", "could not connect"),  # nothing listening
    ],
)
def test_failures_are_recorded_and_not_fatal(sims, base, reason):
    tenant = _tenant("broken", "generic", base.format(origin=sims["generic"].origin))
    # An engineer narrowed the registry by hand before discovery ran.
    Capability.objects.filter(
        tenant=tenant, resource_type="Observation", operation="create", source="manual"
    ).update(allowed=False, notes="narrowed: flowsheet rows not built yet")
    manual_before = _manual_snapshot(tenant)
    output = _run(tenant.slug)  # exits normally
    assert "Discovery failed" in output and reason in output
    tenant.refresh_from_db()
    last = tenant.settings["last_discovery"]
    assert last["ok"] is False and reason in last["error"] and last["at"]
    assert AuditEntry.objects.filter(action="capabilities.discovery_failed", tenant="broken").count() == 1
    assert not Capability.objects.filter(tenant=tenant, source="discovered").exists()
    # The manual registry is exactly as it was: values, notes, who and when, and no new history.
    assert _manual_snapshot(tenant) == manual_before
    assert ("Observation", "create", False, "narrowed: flowsheet rows not built yet") in {
        row[:4] for row in manual_before["rows"]
    }


@pytest.mark.django_db
@respx.mock
def test_bad_json_and_timeouts_are_failures():
    tenant = _tenant("odd", "generic", "http://odd.example.org/fhir")
    respx.get("http://odd.example.org/fhir/metadata").mock(
        return_value=httpx.Response(200, text="<html>hi</html>")
    )
    report = capabilities_discover(tenant=tenant)
    assert not report.ok and "CapabilityStatement" in report.error
    respx.get("http://odd.example.org/fhir/metadata").mock(side_effect=httpx.ReadTimeout("slow"))
    report = capabilities_discover(tenant=tenant)
    assert not report.ok and "timed out" in report.error


@pytest.mark.django_db
def test_unknown_tenant_is_an_error():
    with pytest.raises(CommandError, match="unknown tenant"):
        call_command("discover_capabilities", "nope")


def _statement(**observation) -> dict:
    entry = {"type": "Observation", "interaction": [{"code": "create"}, {"code": "update"}], **observation}
    return {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "rest": [{"mode": "server", "resource": [entry]}],
    }


@pytest.mark.django_db
@respx.mock
def test_conditional_update_and_delete_are_recorded_in_the_notes():
    tenant = _tenant("conditional", "generic", "http://cond.example.org/fhir")
    route = respx.get("http://cond.example.org/fhir/metadata")
    route.mock(
        return_value=httpx.Response(
            200,
            json=_statement(conditionalCreate=True, conditionalUpdate=True, conditionalDelete="single"),
        )
    )
    assert capabilities_discover(tenant=tenant).ok
    rows = Capability.objects.filter(tenant=tenant, source="discovered", resource_type="Observation")
    notes = {c.operation: c.notes for c in rows}
    expected = "conditionalCreate=true; conditionalUpdate=true; conditionalDelete=single"
    assert all(expected in note for note in notes.values()), notes
    assert rows.get(operation="conditional_create").allowed is True
    # The server drops conditional update: the notes follow (a changed note is a recorded change).
    route.mock(return_value=httpx.Response(200, json=_statement(conditionalCreate=True)))
    report = capabilities_discover(tenant=tenant)
    assert report.counts["changed"] == len(notes)
    note = Capability.objects.get(
        tenant=tenant, source="discovered", resource_type="Observation", operation="update"
    ).notes
    assert "conditionalUpdate=not stated; conditionalDelete=not stated" in note
    # Types the statement does not list say nothing about conditional operations.
    other = Capability.objects.get(
        tenant=tenant, source="discovered", resource_type="Condition", operation="create"
    )
    assert other.notes == "type not in /metadata"


@pytest.mark.django_db
def test_each_profile_records_its_conditional_operations(sims):
    tenant = _tenant("generic-cond", "generic", sims["generic"].fhir_base)
    capabilities_discover(tenant=tenant)
    row = Capability.objects.get(
        tenant=tenant, source="discovered", resource_type="Patient", operation="update"
    )
    assert row.notes.endswith("conditionalCreate=true; conditionalUpdate=true; conditionalDelete=single")
    epic = _tenant("epic-cond", "epic", sims["epic"].fhir_base)
    capabilities_discover(tenant=epic)
    row = Capability.objects.get(
        tenant=epic, source="discovered", resource_type="Observation", operation="update"
    )
    assert row.notes.endswith(
        "conditionalCreate=false; conditionalUpdate=false; conditionalDelete=not-supported"
    )


@pytest.mark.django_db
def test_discovery_sends_and_audits_one_correlation_id(sims):
    sim = sims["generic"]
    tenant = _tenant("generic-corr", "generic", sim.fhir_base)
    capabilities_discover(tenant=tenant, actor="test")
    call = next(r for r in reversed(sim.requests(50)) if r["path"].endswith("/metadata"))
    entry = AuditEntry.objects.get(action="capabilities.discovered", tenant=tenant.slug)
    assert call["headers"]["x-request-id"]
    assert entry.correlation_id.startswith("discovery-")
    assert call["headers"]["x-correlation-id"] == entry.correlation_id


@pytest.mark.django_db
def test_the_registry_decides_if_none_exist_and_discovery_never_widens_it(sims, engineer):
    """Discovered conditionalCreate confirms it; an engineer's refusal wins over discovery; unknown
    types are absent (the generic adapter then sends If-None-Exist without trusting it)."""
    tenant = _tenant("generic-trust", "generic", sims["generic"].fhir_base)
    assert conditional_create_registry(tenant) == {}
    capabilities_discover(tenant=tenant, actor="test")
    registry = conditional_create_registry(tenant)
    assert registry["Observation"] is True and registry["Condition"] is True
    Capability.objects.create(
        tenant=tenant,
        resource_type="Condition",
        operation="conditional_create",
        source=Capability.Source.MANUAL,
        allowed=False,
        set_by=engineer,
        notes="this server ignores If-None-Exist on Condition",
    )
    capabilities_discover(tenant=tenant, actor="test")
    assert conditional_create_registry(tenant)["Condition"] is False
    assert (
        Capability.objects.get(
            tenant=tenant, resource_type="Condition", operation="conditional_create", source="manual"
        ).allowed
        is False
    )
    config = target_config_for(tenant)
    assert (
        config.conditional_create["Observation"] is True and config.conditional_create["Condition"] is False
    )
    adapter = adapter_for(tenant)
    try:
        plans = {
            rtype: adapter.plan(write_request(event))[0].headers
            for rtype, event in (("Observation", "vitals.recorded"), ("Condition", "problem.confirmed"))
        }
    finally:
        adapter.close()
    assert "If-None-Exist" in plans["Observation"] and "If-None-Exist" not in plans["Condition"]
