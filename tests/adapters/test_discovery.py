"""discover_capabilities: /metadata of every simulator profile recorded as discovered rows, failures
recorded and not fatal, manual capabilities never touched."""

import io

import httpx
import pytest
import respx
from django.core.management import CommandError, call_command

from adapters.simulator import start_simulator
from writeback.models import AuditEntry, Capability
from writeback.services.discovery import capabilities_discover
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
    output = _run(tenant.slug)  # exits normally
    assert "Discovery failed" in output and reason in output
    tenant.refresh_from_db()
    last = tenant.settings["last_discovery"]
    assert last["ok"] is False and reason in last["error"] and last["at"]
    assert AuditEntry.objects.filter(action="capabilities.discovery_failed", tenant="broken").count() == 1
    assert not Capability.objects.filter(tenant=tenant, source="discovered").exists()


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
