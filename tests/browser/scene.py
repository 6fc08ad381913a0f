"""A realistic console state for screenshots and demos of the console: the project's demo (four vendor
simulators, five tenants, people in every role, the opening events), sent by the real worker, plus the
operator work of a typical morning: approvals waiting, a rollback, a paged medication failure, a parked
stream, a conflict, a kill switch, a capability widening waiting for a second engineer."""

import io
import time
from dataclasses import dataclass

from django.contrib.auth import get_user_model

from adapters.simulator import SimulatorHandle, start_simulator
from console.preferences import save_zone
from writeback import demo
from writeback.models import Alert, Tenant, Write
from writeback.services import approvals, compensation
from writeback.services.alerts import alert_acknowledge
from writeback.services.audit_export import audit_chain_check
from writeback.services.capabilities import capabilities_refresh, capability_change_request
from writeback.services.killswitches import kill_switch_engage
from writeback.states import WriteState
from writeback.sync.worker import SyncWorker


@dataclass
class Scene:
    sims: dict[str, SimulatorHandle]
    demo: demo.Demo

    def stop(self) -> None:
        for sim in self.sims.values():
            sim.stop()


def user(name: str):
    return get_user_model().objects.get(username=name)


def drain() -> None:
    SyncWorker(concurrency=4).drain()


def drain_until(predicate, timeout: float = 20.0) -> None:
    """Drains repeatedly (retries come due after their backoff) until `predicate()` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        drain()
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("the worker did not reach the expected state in time")


def build(settings) -> Scene:
    settings.WRITEBACK_BACKOFF_BASE_SECONDS = 0.01
    settings.WRITEBACK_BACKOFF_CAP_SECONDS = 0.05
    settings.WRITEBACK_HTTP_READ_TIMEOUT = 3.0
    sims = {p: start_simulator(p, seed="demo") for p in demo.PROFILES}
    state = demo.seed(sims, io.StringIO())
    scene = Scene(sims=sims, demo=state)
    drain()

    bob, ada = user("bob.clinician"), user("ada.admin")
    eve = user("eve.engineer")
    generic = Tenant.objects.get(slug="generic-main")

    # Lisinopril 5 mg is on pat-1012's chart; the app now proposes 10 mg (a change against the chart).
    _medication(state, "pat-1012", "314076", "lisinopril 5 MG Oral Tablet", "start", "5 mg by mouth daily")
    _approve_latest(bob, "pat-1012")
    drain()
    # A paged failure: an approved medication the EHR keeps turning away (a maintenance window: 503 with
    # Retry-After, so nothing landed; very high risk: 3 tries, then a page alert that holds the
    # generic-main x MedicationStatement queue).
    med = Write.objects.filter(
        tenant=generic, resource_type="MedicationStatement", state=WriteState.AWAITING_APPROVAL
    ).first()
    if med is not None:
        approvals.write_approve(write=med, user=bob, rationale="Reconciled with the patient at the visit.")
        sims["generic"].set_faults("maintenance=0..600")
        drain_until(lambda: Write.objects.get(pk=med.pk).state == WriteState.FAILED_TERMINAL)
        sims["generic"].clear_faults()
    _medication(state, "pat-1012", "314076", "lisinopril 10 MG Oral Tablet", "change", "10 mg by mouth daily")
    # Metformin approved while the medication queue is held by the page: it waits for the acknowledgement.
    _medication(
        state, "pat-1013", "861007", "metformin 500 MG Oral Tablet", "start", "500 mg twice daily with meals"
    )
    _approve_latest(bob, "pat-1013")
    _medication(state, "pat-1014", "617312", "atorvastatin 40 MG Oral Tablet", "continue", "40 mg at bedtime")
    # A second referral for the patient whose first one failed: it waits behind it (stream order).
    demo.post(
        state,
        demo.event(
            "generic-main",
            "referral.status_changed",
            "pat-1008",
            {"task_id": "task-missing", "from_status": "accepted", "to_status": "in-progress"},
        ),
    )
    # A client app retrying a post it already made: suppressed as a duplicate, nothing new queued.
    repeated = demo.event("epic-main", "problem.confirmed", "pat-1015", demo.PROBLEM)
    for _ in range(2):
        demo.post(state, repeated)
    # A technical rollback of a committed note.
    note = Write.objects.filter(
        tenant=generic, resource_type="DocumentReference", state=WriteState.COMMITTED
    ).first()
    if note is not None:
        compensation.write_compensate(
            write=note,
            user=ada,
            kind="rollback",
            reason="Sent to the wrong encounter by a mapping bug (INC-2291).",
        )
    drain()
    # An older alert, acknowledged.
    info = Alert.objects.exclude(holds_queue=True).filter(acknowledged_at__isnull=True).first()
    if info is not None:
        alert_acknowledge(alert=info, user=ada, note="Task id fixed upstream; replay scheduled.")
    # Configuration work in progress.
    kill_switch_engage(
        user=eve,
        scope="resource_type",
        behaviour="drain",
        reason="Epic maintenance window for flowsheets, 02:00-04:00",
        tenant=Tenant.objects.get(slug="epic-main"),
        resource_type="Observation",
    )
    capability_change_request(
        tenant=generic,
        user=user("ed.engineer"),
        resource_type="QuestionnaireResponse",
        operation="create",
        allowed=False,
        note="Intake questionnaire mapping under review after a wrong answer code (INC-2304).",
    )
    capability_change_request(
        tenant=generic,
        user=eve,
        resource_type="QuestionnaireResponse",
        operation="create",
        allowed=True,
        note="Mapping v3 validated against the vendor sandbox (CHG-118).",
    )
    for slug in ("generic-main", "epic-main"):
        capabilities_refresh(tenant=Tenant.objects.get(slug=slug), user=eve)
    audit_chain_check(user=user("al.auditor"))
    # The operators work at Springfield General (Illinois): times in their own zone, as they chose it.
    for username, _ in demo.PEOPLE:
        save_zone(user(username), "America/Chicago")
    return scene


def _medication(state: demo.Demo, patient: str, code: str, display: str, action: str, dosage: str) -> None:
    medication = {
        "code": {"system": "RxNorm", "code": code, "display": display},
        "status": "active",
        "action": action,
        "dosage": dosage,
    }
    demo.post(
        state, demo.event("generic-main", "medication.reconciled", patient, {"medications": [medication]})
    )


def _approve_latest(clinician, patient: str) -> None:
    write = Write.objects.filter(patient_ref=patient, state=WriteState.AWAITING_APPROVAL).latest("id")
    approvals.write_approve(
        write=write, user=clinician, rationale="Reviewed with the patient; dose confirmed."
    )
