"""The whole path of a correction with no API at the vendor (Epic, athena, Veradigm): an event is written to
the simulator by the sync worker, a rollback (admin) or a clinical correction (clinician) turns the
adapter's manual plan into a ManualTask for a clinician, nothing is sent to the EHR, a role that may
not confirm is refused, and the confirmation moves the original write to compensated / superseded."""

from __future__ import annotations

import pytest

from adapters.simulator import start_simulator
from tests.conftest import api_client_for, granted_user
from tests.contract.cases import SETTINGS
from tests.writeback.helpers import event
from writeback.errors import DomainError
from writeback.models import AuditEntry, Compensation, ManualTask, Write
from writeback.services.audit import verify_chain
from writeback.services.compensation import manual_task_confirm, write_compensate
from writeback.services.consents import consent_create
from writeback.services.permissions import ActionRefused
from writeback.services.tenants import tenant_create
from writeback.states import WriteState
from writeback.sync.worker import SyncWorker

EHR_NAMES = {"epic": "Epic", "athena": "athenaOne", "veradigm": "Veradigm"}
PATIENT = {"rollback": 1150, "correction": 1151}
CORRECTED_CODE = {
    "coding": [{"system": "http://snomed.info/sct", "code": "59621000", "display": "Essential hypertension"}],
    "text": "Essential hypertension",
}


@pytest.fixture(scope="module", params=("epic", "athena", "veradigm"))
def vendor_sim(request):
    handle = start_simulator(request.param, seed="demo")
    yield handle
    handle.stop()


def _committed_problem(sim, tenant, app_user, n: int) -> Write:
    api = api_client_for(app_user, tenant)
    body = event("problem.confirmed", tenant=tenant.slug, key=f"manual-{n}")
    body["patient"]["id"] = f"pat-{n}"
    body["patient"]["identifier"]["value"] = f"MRN{n}"
    body["encounter"] = {"id": f"enc-{n}", "status": "in-progress"}
    answer = api.post("/api/v1/events", body, format="json")
    assert answer.status_code == 201, answer.json()
    (write,) = [Write.objects.get(uid=w["id"]) for w in answer.json()["writes"]]
    SyncWorker(concurrency=1).drain()
    write.refresh_from_db()
    assert write.state == WriteState.COMMITTED and write.target_resource_id, write.last_error
    return write


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["rollback", "correction"])
def test_a_manual_compensation_from_plan_to_confirmation(vendor_sim, kind, app_user, settings):
    settings.WRITEBACK_BACKOFF_BASE_SECONDS = 0.01
    vendor, n = vendor_sim.profile, PATIENT[kind]
    vendor_sim.reset("demo")
    tenant = tenant_create(
        slug=f"{vendor}-manual",
        vendor=vendor,
        base_url=vendor_sim.fhir_base,
        settings=SETTINGS.get(vendor, {}),
    )
    consent_create(tenant=tenant, patient_ref=f"pat-{n}", actor=None)
    granted_user(tenant, "amy.clinician", "clinician")  # the events' initiator
    clinician = granted_user(tenant, "cara.clinician", "clinician")
    admin = granted_user(tenant, "adam.admin", "admin")
    auditor = granted_user(tenant, "aldo.auditor", "auditor")
    write = _committed_problem(vendor_sim, tenant, app_user, n)
    chart = vendor_sim.resources("Condition", patient=f"pat-{n}")
    sent_before = len(vendor_sim.requests(5000))

    # 1. The request: the adapter has no API path, so the plan is a task for a clinician.
    requester = admin if kind == "rollback" else clinician
    data = {"code": CORRECTED_CODE} if kind == "correction" else None
    comp = write_compensate(
        write=write, user=requester, kind=kind, reason="entered on the wrong chart", data=data
    )
    assert comp.status == Compensation.Status.MANUAL and comp.kind == kind
    task = ManualTask.objects.get(compensation=comp)
    assert (task.role, task.status, task.write_id, task.tenant_id) == (
        "clinician",
        ManualTask.Status.OPEN,
        write.pk,
        tenant.pk,
    )
    assert EHR_NAMES[vendor] in task.title and EHR_NAMES[vendor] in task.instructions
    assert str(write.uid) in task.instructions and f"pat-{n}" in task.instructions
    assert write.target_resource_id in task.instructions  # the entry's id at the EHR
    if kind == "correction":
        assert "Essential hypertension" in task.instructions  # the corrected value to enter
    assert not Write.objects.filter(compensation=comp).exists()  # nothing for the worker to send

    # 2. Until someone confirms, nothing changes: no request to the EHR, the original stays committed.
    SyncWorker(concurrency=1).drain()
    assert len(vendor_sim.requests(5000)) == sent_before
    write.refresh_from_db()
    assert write.state == WriteState.COMMITTED

    # 3. A role that may not confirm is refused (and audited); the task stays open.
    with pytest.raises(ActionRefused):
        manual_task_confirm(task=task, user=auditor, note="done")
    task.refresh_from_db()
    assert task.status == ManualTask.Status.OPEN and task.confirmed_by is None
    assert AuditEntry.objects.filter(action="access.refused", object_id=str(task.uid)).count() == 1

    # 4. The clinician confirms: task done, compensation done, the original closed.
    manual_task_confirm(task=task, user=clinician, note=f"done in {EHR_NAMES[vendor]} by hand")
    task.refresh_from_db()
    comp.refresh_from_db()
    write.refresh_from_db()
    assert task.status == ManualTask.Status.DONE and task.confirmed_by == clinician
    assert comp.status == Compensation.Status.DONE
    expected = WriteState.COMPENSATED if kind == "rollback" else WriteState.SUPERSEDED
    assert write.state == expected
    with pytest.raises(DomainError):
        manual_task_confirm(task=task, user=clinician, note="again")  # confirmed once only

    # The ledger tells the story; the EHR was never touched by us after the write.
    actions = list(
        AuditEntry.objects.filter(write_uid=str(write.uid)).order_by("seq").values_list("action", flat=True)
    )
    for action in (f"write.{kind}_requested", "manual_task.created", "manual_task.confirmed"):
        assert action in actions
    assert vendor_sim.resources("Condition", patient=f"pat-{n}") == chart
    assert len(vendor_sim.requests(5000)) == sent_before
    assert verify_chain().ok
