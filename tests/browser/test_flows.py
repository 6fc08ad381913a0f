"""The four operator journeys, in a real browser against a live server, the EHR simulator and the worker."""

import pytest

from adapters.simulator import start_simulator
from tests.browser.worker import WorkerProcess, wait_for
from tests.conftest import api_client_for
from tests.writeback.helpers import event
from tests.writeback.sync.conftest import drain, post
from writeback.models import AuditEntry, Compensation, Conflict, Tenant, TenantMode, Write
from writeback.services.consents import consent_create
from writeback.services.tenants import tenant_create, tenant_grant
from writeback.states import WriteState

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

IDENTIFIER = "urn:fhir-writeback:write-id"


def sent(sim, method: str, resource_type: str) -> list[dict]:
    return [
        r
        for r in sim.requests(1000)
        if r.get("method") == method and f"/{resource_type}" in (r.get("path") or r.get("url") or "")
    ]


def test_a_clinician_approves_a_medication_reconciliation(live, api, sim, clinician2, anonymous_page):
    med = post(api, "medication.reconciled", key="browser-med")[0]
    assert med.state == WriteState.AWAITING_APPROVAL
    page = anonymous_page
    page.goto("/approvals/")
    page.fill("#id_username", "bob.clinician")
    page.fill("#id_password", "pw-for-tests-only")
    page.click("button:has-text('Sign in')")
    card = page.locator(f"#approval-{med.uid}")
    card.wait_for()
    assert "Amlodipine 5 MG Oral Tablet — continue — 5 mg by mouth once daily" in card.inner_text()
    # Reading the chart is a deliberate, audited act: a POST from the card's button.
    card.get_by_role("button", name="Compare with the current chart").click()
    card.locator(".chart-compare").wait_for()  # the current chart, read from the EHR
    assert AuditEntry.objects.filter(
        action="ehr.read", write_uid=str(med.uid), actor="bob.clinician"
    ).exists()
    card.get_by_label("Clinical rationale").fill("Matches the patient's own list; dose confirmed.")
    card.get_by_role("button", name="Approve").click()
    page.locator(f"#approval-{med.uid} .decided-approve").wait_for()
    page.locator("#flash .flash-success").wait_for()
    med.refresh_from_db()
    assert med.state == WriteState.PENDING
    drain()
    med.refresh_from_db()
    assert med.state == WriteState.COMMITTED
    assert len(sim.resources("MedicationStatement", identifier=f"{IDENTIFIER}|{med.uid}")) == 1


def test_an_admin_rolls_back_a_committed_note(live, api, sim, admin_user, page_for):
    note = post(api, "note.signed", key="browser-note")[0]
    drain()
    note.refresh_from_db()
    assert note.state == WriteState.COMMITTED
    page = page_for(admin_user)
    page.goto(f"/writes/{note.uid}/")
    page.get_by_role("link", name="Technical rollback…").click()
    page.get_by_text(f"Mark DocumentReference/{note.target_resource_id} entered-in-error").wait_for()
    page.get_by_label("Reason").fill("Filed against the wrong encounter.")
    page.get_by_label("I have checked the compensating action").check()
    page.get_by_role("button", name="Roll back: queue the compensating write").click()
    page.locator(".flash-success").wait_for()
    undo = Write.objects.get(compensates=note)
    assert page.locator(f"a[href='/writes/{undo.uid}/']").count() == 1  # the compensating write is linked
    assert Compensation.objects.get(original_write=note).kind == "rollback"
    drain()
    page.reload()
    page.locator("h1 .state-compensated").wait_for()
    assert "Compensated by" in page.inner_text(".related")
    stored = sim.resources("DocumentReference", identifier=f"{IDENTIFIER}|{note.uid}")
    assert stored and stored[0]["status"] == "entered-in-error"


@pytest.fixture
def worker(tmp_path):
    """A real `run_sync_worker` process on the test database, stopped (SIGTERM) at the end."""
    started = []

    def _start() -> WorkerProcess:
        started.append(WorkerProcess(tmp_path / f"worker-{len(started) + 1}.log"))
        return started[-1]

    yield _start
    for w in started:
        w.stop()


@pytest.fixture
def control(clinician, app_user):
    """A second live tenant on its own simulator: its writes show the worker is up and claiming."""
    control_sim = start_simulator("generic", seed="demo")
    tenant = tenant_create(slug="control", vendor="generic", base_url=control_sim.fhir_base)
    tenant_grant(tenant=tenant, user=clinician)  # the events' initiator
    consent_create(tenant=tenant, patient_ref="pat-1001", actor=None)
    yield control_sim, api_client_for(app_user, tenant)
    control_sim.stop()


def change_mode(page, mode: str, reason: str) -> None:
    page.select_option("#mode-select", mode)
    page.fill("#mode-reason", reason)
    page.get_by_role("button", name="Change mode").click()
    page.locator(".flash-success").wait_for()


def test_an_engineer_pauses_a_tenant_and_the_worker_stops_sending(
    live, api, sim, engineer, page_for, worker, control
):
    control_sim, control_api = control
    running = worker()
    page = page_for(engineer)
    page.goto(f"/tenants/{live.slug}/")
    change_mode(page, "paused", "EHR downtime 22:00-23:00")
    assert Tenant.objects.get(pk=live.pk).mode == TenantMode.PAUSED
    traffic = len(sim.requests(1000))  # every request the paused tenant's EHR has had so far

    note = post(api, "note.signed", key="browser-paused")[0]
    r = control_api.post("/api/v1/events", event("note.signed", tenant="control", key="probe"), format="json")
    assert r.status_code == 201, r.json()
    probe = Write.objects.get(uid=r.json()["writes"][0]["id"])
    # The worker process claims and sends the other tenant's write, queued after the paused one ...
    wait_for(lambda: Write.objects.get(pk=probe.pk).state == WriteState.COMMITTED, timeout=30, what="probe")
    assert control_sim.resources("DocumentReference", identifier=f"{IDENTIFIER}|{probe.uid}")
    # ... and never claimed, tried or sent the paused tenant's one.
    note.refresh_from_db()
    assert (note.state, note.lease_owner, note.attempts) == (WriteState.PENDING, "", 0)
    assert not note.attempts_log.exists()
    assert len(sim.requests(1000)) == traffic
    assert not sim.resources("DocumentReference", identifier=f"{IDENTIFIER}|{note.uid}")
    page.goto(f"/writes/{note.uid}/")
    assert "Pending" in page.inner_text("h1")

    page.goto(f"/tenants/{live.slug}/")
    change_mode(page, "live", "downtime over")
    # Nothing else runs the worker in this test: the process sends it on its own.
    wait_for(lambda: Write.objects.get(pk=note.pk).state == WriteState.COMMITTED, timeout=30, what="note")
    assert len(sim.resources("DocumentReference", identifier=f"{IDENTIFIER}|{note.uid}")) == 1
    assert len(sent(sim, "POST", "DocumentReference")) == 1
    assert running.stop() == 0


def test_a_conflict_is_reconciled_field_by_field(live, api, sim, clinician2, page_for):
    current = next(p for p in sim.resources("Patient") if p["id"] == "pat-1001")
    write = post(
        api, "demographics.updated", key="browser-conflict", base_version=current["meta"]["versionId"]
    )[0]
    sim.edit("Patient", "pat-1001", {"telecom": [{"system": "phone", "value": "+15559999", "use": "home"}]})
    drain()
    write.refresh_from_db()
    assert write.state == WriteState.CONFLICT
    conflict = Conflict.objects.get(write=write)
    paths = [r["path"] for r in conflict.diff]
    page = page_for(clinician2)
    page.goto(f"/conflicts/{conflict.uid}/")
    # Keep the clinician's newer phone number; write our address.
    page.locator(f"#row-{paths.index('telecom')} input[value=theirs]").check()
    page.locator(f"#row-{paths.index('address')} input[value=ours]").check()
    page.get_by_role("button", name="Preview the resulting resource").click()
    page.locator("#preview pre").wait_for()
    preview = page.inner_text("#preview pre")
    assert "+15559999" in preview and "1 Main St" in preview
    page.get_by_role("button", name="Queue the resolution").click()
    page.locator("h1 .state-pending").wait_for()
    conflict.refresh_from_db()
    new = conflict.resolution_write
    assert page.url.endswith(f"/writes/{new.uid}/")
    drain()
    new.refresh_from_db()
    assert new.state == WriteState.COMMITTED
    patient = next(p for p in sim.resources("Patient") if p["id"] == "pat-1001")
    assert patient["telecom"][0]["value"] == "+15559999"
    assert patient["address"][0]["line"] == ["1 Main St"]
