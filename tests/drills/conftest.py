"""Fault drills: real `run_sync_worker` processes against the EHR simulator over real sockets, on
PostgreSQL, fed through the real event API.

The simulator runs in this process (a background thread), so the drills can count what it stores; the
workers are separate processes pointed at the pytest-django test database. Shared here: the simulator,
the tenant and its people, the event generator, the worker launcher and the final assertions
(`tests.drills.checks`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.db import connection
from rest_framework.test import APIClient

from adapters.simulator import SimulatorHandle, start_simulator
from tests.conftest import make_client_app, make_user
from tests.writeback.canonical.examples import envelope
from writeback.models import Alert, Tenant, Write
from writeback.services.alerts import alert_acknowledge
from writeback.services.approvals import write_approve
from writeback.services.authors import practitioner_map, tenant_set_author_policy
from writeback.services.consents import consent_create
from writeback.services.discovery import capabilities_discover
from writeback.services.provenance import vendor_writes_provenance
from writeback.services.tenants import tenant_create, tenant_grant
from writeback.services.tokens import api_token_create
from writeback.states import CLAIMABLE, WriteState

ROOT = Path(__file__).resolve().parents[2]
IDENTIFIER_SYSTEM = "urn:fhir-writeback:write-id"
PATIENT_NUMBERS = range(1001, 1201)  # the simulator's demo seed: pat-1001 .. pat-1200
EVENT_TYPES = (
    "vitals.recorded",
    "intake.completed",
    "note.signed",
    "problem.confirmed",
    "demographics.updated",
    "referral.status_changed",
    "allergy.recorded",
    "medication.reconciled",
)
TENANT_SLUG = "drill"

# Short timeouts so a drill's faults cost seconds, not minutes. The read timeout stays well under the
# simulator's stall (timeout_after_commit holds the answer back `stall_seconds`).
WORKER_ENV = {
    "WRITEBACK_LEASE_SECONDS": "10",
    "WRITEBACK_HTTP_READ_TIMEOUT": "0.5",
    "WRITEBACK_HTTP_CONNECT_TIMEOUT": "1",
    "WRITEBACK_BACKOFF_BASE_SECONDS": "0.05",
    "WRITEBACK_BACKOFF_CAP_SECONDS": "5",
    "WRITEBACK_IDLE_SLEEP_SECONDS": "0.1",
    "LOG_LEVEL": "WARNING",
}
STALL_SECONDS = 1.5


def wait_for(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str = "") -> Any:
    """Polls `predicate` until it returns something truthy; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what or predicate}")
        time.sleep(interval)


def database_url() -> str:
    """The URL of the database this test runs on (pytest-django's test database)."""
    s = connection.settings_dict
    auth = quote(s["USER"] or "")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"])
    host = s.get("HOST") or "127.0.0.1"
    return f"postgres://{auth}@{host}:{s.get('PORT') or 5432}/{s['NAME']}"


# -- worker processes ----------------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    proc: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ready(self) -> bool:
        """The worker has set up Django and its signal handlers ("... started" on stdout)."""
        return b"started (concurrency" in self.log.read_bytes()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Workers:
    """Starts `manage.py run_sync_worker` processes and makes sure none outlives the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[WorkerProcess] = []

    def start(
        self, *, concurrency: int = 8, until_idle: bool = False, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        args = [sys.executable, "manage.py", "run_sync_worker", "--concurrency", str(concurrency)]
        if until_idle:
            args.append("--until-idle")
        full_env = {**os.environ, "DATABASE_URL": database_url(), **WORKER_ENV, **(env or {})}
        full_env.pop("DJANGO_SETTINGS_MODULE", None)
        log = self.tmp_path / f"worker-{len(self.started) + 1}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(args, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
        worker = WorkerProcess(proc, log)
        self.started.append(worker)
        return worker

    def wait(self, batch: list[WorkerProcess], *, timeout: float) -> None:
        """Waits for the workers to exit and asserts they exited 0."""
        deadline = time.monotonic() + timeout
        for worker in batch:
            try:
                worker.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"worker {worker.pid} still running after {timeout:.0f} s:\n{worker.tail()}")
            code = worker.proc.returncode
            assert code == 0, f"worker {worker.pid} exited {code}:\n{worker.tail()}"

    def stop(self, batch: list[WorkerProcess], *, timeout: float = 30) -> None:
        """SIGTERM: each worker finishes its in-flight writes and exits 0. (A worker still starting up
        has no handler yet and would simply die of the signal: wait until it is ready.)"""
        for worker in batch:
            wait_for(lambda w=worker: w.ready() or w.proc.poll() is not None, timeout=timeout, what="startup")
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        self.wait(batch, timeout=timeout)

    def kill_all(self) -> None:
        for worker in self.started:
            if worker.proc.poll() is None:
                worker.proc.kill()
            worker.proc.wait(timeout=10)


# -- the drill -----------------------------------------------------------------------------------------


@dataclass
class Drill:
    """One drill's world: the simulator, the tenant, who acts on it, the workers, and what it did."""

    sim: SimulatorHandle
    tenant: Tenant
    token: str
    approver: User
    engineer: User
    workers: Workers
    say: Callable[[str], None]
    fired: Counter = field(default_factory=Counter)  # faults fired under earlier fault settings
    edits: Counter = field(default_factory=Counter)  # (type, id) -> clinicians' edits in the EHR
    events: int = 0
    consented: set[str] = field(default_factory=set)
    background: list[Future] = field(default_factory=list)  # posting still under way
    started: float = field(default_factory=time.monotonic)
    phases: Counter = field(default_factory=Counter)  # seconds spent posting and draining

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.phases[phase] += time.monotonic() - start

    # the EHR ----------------------------------------------------------------------------------------
    def set_faults(self, spec: str | dict[str, Any] | None) -> None:
        """Replaces the simulator's faults, keeping the count of what fired so far."""
        self.fired.update(self.sim.faults().get("fired", {}))
        if spec:
            self.sim.set_faults(spec)
        else:
            self.sim.clear_faults()

    def faults_fired(self) -> Counter:
        return self.fired + Counter(self.sim.faults().get("fired", {}))

    def edit(self, resource_type: str, resource_id: str, patch: dict[str, Any]) -> None:
        """A clinician's edit in the EHR (bumps the version; our writes must never overwrite it)."""
        self.sim.edit(resource_type, resource_id, patch)
        self.edits[(resource_type, resource_id)] += 1

    # events -----------------------------------------------------------------------------------------
    def mixed_events(self, count: int, *, prefix: str = "drill") -> list[dict[str, Any]]:
        """`count` events, the 8 types evenly mixed over the 200 demo patients. A patient gets at most
        one event of each type, so each demographics update is based on that patient's current version
        and each referral moves that patient's own Task."""
        patients = list(PATIENT_NUMBERS)
        versions = {p["id"]: p["meta"]["versionId"] for p in self.sim.resources("Patient")}
        bodies = []
        for i in range(count):
            n = patients[i % len(patients)]
            kind = EVENT_TYPES[(i % len(patients) + 3 * (i // len(patients))) % len(EVENT_TYPES)]
            bodies.append(self._event(kind, n, f"{prefix}-{i:04d}", versions[f"pat-{n}"]))
        return bodies

    def _event(self, kind: str, n: int, key: str, patient_version: str) -> dict[str, Any]:
        body = envelope(kind)
        body.update(tenant=self.tenant.slug, idempotency_key=key, initiator={"user": "amy.clinician"})
        body["source"]["message_id"] = f"msg-{key}"
        body["patient"] = {"id": f"pat-{n}", "identifier": {"system": "urn:example:mrn", "value": f"MRN{n}"}}
        body["encounter"] = {"id": f"enc-{n}", "status": "in-progress"}
        data = body["data"]
        if kind == "vitals.recorded":
            # 1 to 3 measurements (one Observation each): blood pressure, heart rate, weight.
            data["measurements"] = data["measurements"][: 1 + n % 3]
            data["measurements"][0]["systolic"] = 110 + n % 40
        elif kind == "note.signed":
            data["text"] = f"Patient pat-{n} seen; note {key}."
        elif kind == "problem.confirmed":
            data["note"] = f"confirmed at visit ({key})"
        elif kind == "intake.completed":
            data["answers"][1]["value"] = f"headache ({key})"
        elif kind == "demographics.updated":
            data["base_version"] = patient_version
            data["telecom"] = [{"system": "phone", "value": f"+1 555 {n:04d}", "use": "mobile"}]
        elif kind == "referral.status_changed":
            data["task_id"] = f"task-{n}"
        return body

    @staticmethod
    def expected_writes(bodies: list[dict[str, Any]]) -> int:
        """Writes the events will make: one per measurement or medication, one otherwise."""
        return sum(len(b["data"].get("measurements") or b["data"].get("medications") or [0]) for b in bodies)

    def post(self, bodies: list[dict[str, Any]], *, expect: int = 201, threads: int = 3) -> list[dict]:
        """Posts the events through the API from `threads` clients at once; asserts each answer. Each
        patient gets consent (through `consent_create`) before its first event."""
        for patient in sorted({b["patient"]["id"] for b in bodies} - self.consented):
            consent_create(tenant=self.tenant, patient_ref=patient, actor=None)
            self.consented.add(patient)
        chunks = [bodies[i::threads] for i in range(threads)]
        with self.timed("post"), ThreadPoolExecutor(max_workers=threads) as pool:
            answered = list(pool.map(lambda chunk: self._post_chunk(chunk, expect), chunks))
        answers: list[dict[str, Any]] = [{}] * len(bodies)
        for i, chunk_answers in enumerate(answered):
            answers[i::threads] = chunk_answers
        if expect == 201:
            self.events += len(bodies)
        return answers

    def post_in_background(self, bodies: list[dict[str, Any]]) -> Future:
        """Posts while the caller drives the drill; `.result()` gives the answers (or raises)."""

        def post() -> list[dict[str, Any]]:
            try:
                return self.post(bodies)
            finally:
                connection.close()  # this thread's own connection (consents)

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drill-post")
        future = pool.submit(post)
        pool.shutdown(wait=False)
        self.background.append(future)
        return future

    def _post_chunk(self, bodies: list[dict[str, Any]], expect: int) -> list[dict[str, Any]]:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {self.token}")
        answers = []
        try:
            for body in bodies:
                response = client.post("/api/v1/events", body, format="json")
                assert response.status_code == expect, (body["idempotency_key"], response.json())
                answers.append(response.json())
        finally:
            connection.close()
        return answers

    def approve_all(self) -> int:
        """A second clinician approves every write waiting for approval (four eyes)."""
        waiting = Write.objects.filter(tenant=self.tenant, state=WriteState.AWAITING_APPROVAL)
        approved = 0
        for write in waiting.select_related("tenant", "event"):
            write_approve(write=write, user=self.approver, rationale="reviewed in the drill")
            approved += 1
        return approved

    # the ledger -------------------------------------------------------------------------------------
    def open_writes(self) -> int:
        return Write.objects.filter(tenant=self.tenant, state__in=CLAIMABLE).count()

    def committed(self) -> int:
        return Write.objects.filter(tenant=self.tenant, state=WriteState.COMMITTED).count()

    def settled(self) -> bool:
        """Nothing left to send, nothing in flight, nothing waiting for a person's approval."""
        mine = Write.objects.filter(tenant=self.tenant)
        return not (
            mine.filter(state__in=(*CLAIMABLE, WriteState.AWAITING_APPROVAL)).exists()
            or mine.exclude(lease_owner="").exists()
        )

    def acknowledge_holding_alerts(self) -> int:
        """An operator acknowledges the alerts that hold a queue (very-high-risk terminal failures)."""
        alerts = Alert.objects.filter(tenant=self.tenant, holds_queue=True, acknowledged_at__isnull=True)
        acknowledged = 0
        for alert in alerts:
            alert_acknowledge(alert=alert, user=self.approver, note="seen in the drill; queue released")
            acknowledged += 1
        return acknowledged

    # workers ----------------------------------------------------------------------------------------
    def start(
        self, *, processes: int = 2, concurrency: int = 8, until_idle: bool = False, env: dict | None = None
    ) -> list[WorkerProcess]:
        return [
            self.workers.start(concurrency=concurrency, until_idle=until_idle, env=env)
            for _ in range(processes)
        ]

    def settle(self, batch: list[WorkerProcess], *, timeout: float = 90) -> None:
        """Waits until the workers have sent everything, then stops them with SIGTERM (they must exit 0).
        A queue held by an alert (a very-high-risk write that failed for good) is released by
        acknowledging the alert, as an operator would."""
        deadline = time.monotonic() + timeout
        with self.timed("drain"):
            while True:
                self.acknowledge_holding_alerts()
                if self.settled():
                    break
                if not any(w.proc.poll() is None for w in batch):
                    pytest.fail("every worker exited before the queue was drained:\n" + batch[-1].tail())
                if time.monotonic() > deadline:
                    states = Counter(Write.objects.filter(tenant=self.tenant).values_list("state", flat=True))
                    pytest.fail(f"queue not drained after {timeout:.0f} s: {dict(states)}")
                time.sleep(0.1)
            self.workers.stop(batch)


@pytest.fixture
def drill_sim(request: pytest.FixtureRequest) -> Iterator[SimulatorHandle]:
    """The simulator, generic FHIR unless a test asks for a vendor profile (indirect parametrize)."""
    sim = start_simulator(getattr(request, "param", "generic"), seed="demo")
    yield sim
    sim.stop()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(tmp_path)
    yield pool
    pool.kill_all()


@pytest.fixture
def say(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Writes a line to the terminal whether or not output is captured (the counts belong in CI logs);
    with DRILL_REPORT=path the line is also appended to that file."""
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def write(line: str) -> None:
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(line)
        else:
            print(line)
        if os.environ.get("DRILL_REPORT"):
            with open(os.environ["DRILL_REPORT"], "a") as out:
                out.write(line + "\n")

    return write


@pytest.fixture
def drill(transactional_db, drill_sim: SimulatorHandle, workers: Workers, say, settings) -> Iterator[Drill]:
    """A tenant of the simulator profile's vendor, an API token, the initiating clinician, a second
    clinician who approves, and an integration engineer. Patients get consent as their events are posted."""
    if connection.vendor != "postgresql":
        pytest.skip("drills need PostgreSQL")
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # The defaults: 8 threads per worker, at most 4 writes of one tenant in flight per worker.
    tenant = tenant_create(slug=TENANT_SLUG, vendor=drill_sim.profile, base_url=drill_sim.fhir_base)
    capabilities_discover(tenant=tenant)  # what the target declares (never widening the manual registry)
    initiator = make_user("amy.clinician", "clinician")
    approver = make_user("bob.clinician", "clinician")
    engineer = make_user("eve.engineer", "integration_engineer")
    app = make_client_app("intake-portal")
    for user in (initiator, approver, engineer):
        tenant_grant(tenant=tenant, user=user)
    _, key = api_token_create(user=app, tenants=[tenant], name="drill")
    # Authors in the chart; where the vendor writes it, one Provenance per event (counted by the checks).
    practitioner_map(
        tenant=tenant, username="amy.clinician", practitioner_ref="Practitioner/amy", actor="drill"
    )
    tenant_set_author_policy(
        tenant=tenant,
        unmapped_author="organization",
        organization_ref="Organization/drill",
        write_provenance=vendor_writes_provenance(tenant.vendor),
        actor="drill",
    )
    assert django_settings.WRITEBACK_IDENTIFIER_SYSTEM == IDENTIFIER_SYSTEM
    drill = Drill(
        sim=drill_sim,
        tenant=tenant,
        token=key,
        approver=approver,
        engineer=engineer,
        workers=workers,
        say=say,
    )
    yield drill
    # A drill that failed half-way may leave posting running: let it end before the database is flushed.
    wait(drill.background, timeout=120)
