"""PostgreSQL restarted twice during a drain: the workers ride it out, the web answers 503 meanwhile.

A throwaway cluster (its own `initdb`, port and directory) holds the ledger, so the drill can stop it
without touching the shared server. Two real `run_sync_worker` processes drain events into the
simulator while a real gunicorn process serves the intake API. The cluster is stopped twice mid-drain
(`pg_ctl stop -m fast`: every session is cut, as in a restart or a failover); while it is down,
intake over HTTP must answer 503 with Retry-After (never 500, never 201), and the console too. Then:
both workers are still running, every write is committed exactly once at the target (0 duplicates,
0 lost, nothing resent after landing), the events refused during the outage are stored once when sent
again, and the audit chain verifies.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from django.db import connection, connections

from adapters.simulator import SimulatorHandle
from tests.conftest import make_client_app, make_user
from tests.drills.checks import check_drill
from tests.drills.conftest import ROOT, TENANT_SLUG, Drill, Workers, wait_for
from tests.drills.pgcluster import DB_NAME, ThrowawayCluster
from writeback.models import BusinessEvent, Write
from writeback.services.consents import consent_create
from writeback.services.discovery import capabilities_discover
from writeback.services.tenants import tenant_create, tenant_grant
from writeback.services.tokens import api_token_create
from writeback.states import WriteState

pytestmark = [pytest.mark.drill, pytest.mark.xdist_group("drills"), pytest.mark.postgres]

EVENTS = 90
LATE_EVENTS = 6  # posted over HTTP: during the outages (refused) and after them (stored)
WORKER_ENV = {
    # Short leases and reconnect waits so the drill costs seconds; the defaults are 60 s and 0.5..15 s.
    "WRITEBACK_LEASE_SECONDS": "5",
    "WRITEBACK_DB_RECONNECT_BASE_SECONDS": "0.2",
    "WRITEBACK_DB_RECONNECT_CAP_SECONDS": "2",
}


def _django_env(url: str, **more: str) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING", **more}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


@pytest.fixture
def cluster(django_db_blocker) -> Iterator[ThrowawayCluster]:
    """The cluster, migrated, and this process's Django pointed at it for the test's duration."""
    pg = ThrowawayCluster()
    settings_dict = connection.settings_dict
    saved = dict(settings_dict)
    try:
        pg.create()
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=_django_env(pg.url),
            check=True,
            timeout=180,
        )
        connections.close_all()
        settings_dict.update(NAME=DB_NAME, HOST="127.0.0.1", PORT=str(pg.port), USER="postgres", PASSWORD="")
        with django_db_blocker.unblock():
            yield pg
    finally:
        connections.close_all()
        settings_dict.clear()
        settings_dict.update(saved)
        pg.destroy()


@pytest.fixture
def web(cluster: ThrowawayCluster, tmp_path: Path) -> Iterator[str]:
    """gunicorn serving the product against the cluster; yields its base URL."""
    port = _free_port()
    log = tmp_path / "gunicorn.log"
    args = [
        sys.executable, "-m", "gunicorn", "writeback.wsgi:application",
        "-w", "1", "-k", "sync", "-b", f"127.0.0.1:{port}", "--log-level", "warning", "--timeout", "30",
    ]  # fmt: skip
    # writeback.wsgi refuses the development key with DEBUG off, as in production.
    env = _django_env(cluster.url, SECRET_KEY=secrets.token_urlsafe(64))
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"gunicorn exited {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            return httpx.get(f"{base}/login/", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=60, interval=0.1, what="gunicorn")
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def drill_on_cluster(
    cluster: ThrowawayCluster, drill_sim: SimulatorHandle, workers: Workers, say: Callable[[str], None]
) -> Drill:
    """The drill's tenant, people and token, made through the services on the throwaway cluster."""
    tenant = tenant_create(slug=TENANT_SLUG, vendor=drill_sim.profile, base_url=drill_sim.fhir_base)
    capabilities_discover(tenant=tenant)
    initiator = make_user("amy.clinician", "clinician")
    approver = make_user("bob.clinician", "clinician")
    engineer = make_user("eve.engineer", "integration_engineer")
    for user in (initiator, approver, engineer):
        tenant_grant(tenant=tenant, user=user)
    _, key = api_token_create(user=make_client_app("intake-portal"), tenants=[tenant], name="drill")
    people = {"approver": approver, "engineer": engineer}
    return Drill(sim=drill_sim, tenant=tenant, token=key, workers=workers, say=say, **people)


def test_postgresql_restarted_twice_mid_drain(cluster: ThrowawayCluster, web: str, drill_on_cluster: Drill):
    drill = drill_on_cluster
    bodies = drill.mixed_events(EVENTS + LATE_EVENTS)
    early, late = bodies[:EVENTS], bodies[EVENTS:]
    for patient in sorted({b["patient"]["id"] for b in late} - drill.consented):
        consent_create(tenant=drill.tenant, patient_ref=patient, actor=None)
        drill.consented.add(patient)
    drill.post(early)
    drill.approve_all()
    total = Write.objects.filter(tenant=drill.tenant).count()
    drill.set_faults("slow_ms=120,seed=9")  # the drain lasts long enough to be interrupted twice

    http = httpx.Client(base_url=web, timeout=10)
    # A signed-in operator's browser: the console loads the session from the database on every page.
    console = httpx.Client(base_url=web, timeout=10, cookies={"sessionid": "s" * 32})
    api_headers = {"Authorization": f"Token {drill.token}"}
    during: Counter = Counter()  # (what, status) answered while the database was down
    refused_keys: list[str] = []

    batch = drill.start(processes=2, concurrency=4, env=WORKER_ENV)
    outages = 0
    for share, body in ((0.15, late[0]), (0.5, late[1])):
        wait_for(
            lambda share=share: drill.committed() >= share * total,
            timeout=60,
            what=f"{share:.0%} of the writes committed",
        )
        complained = [w.log.read_text(errors="replace").count("database unavailable") for w in batch]
        connections.close_all()
        cluster.stop()  # every session cut mid-drain
        outages += 1
        try:
            for _ in range(3):
                answer = http.post("/api/v1/events", json=body, headers=api_headers)
                during[("intake", answer.status_code)] += 1
                assert answer.status_code == 503, answer.text[:500]
                assert answer.headers["Retry-After"].isdigit()
                assert answer.json()["resourceType"] == "OperationOutcome"
                page = console.get("/")
                during[("console", page.status_code)] += 1
                assert page.status_code == 503 and page.headers["Retry-After"], page.text[:300]
            refused_keys.append(body["idempotency_key"])
            # Both workers meet the outage (and stay up) before the database comes back.
            wait_for(
                lambda complained=complained: all(
                    w.log.read_text(errors="replace").count("database unavailable") > n
                    for w, n in zip(batch, complained, strict=True)
                ),
                timeout=30,
                what="both workers to notice the outage",
            )
            assert all(w.proc.poll() is None for w in batch), [w.tail() for w in batch]
        finally:
            cluster.start()

    # The web process recovers by itself: the refused events go in once, with the rest of the late ones.
    for body in late:
        answer = http.post("/api/v1/events", json=body, headers=api_headers)
        assert answer.status_code == 201, answer.text[:500]
    http.close()
    console.close()
    drill.events += len(late)
    drill.approve_all()
    for key in refused_keys:
        assert BusinessEvent.objects.filter(tenant=drill.tenant, idempotency_key=key).count() == 1

    alive = [w.proc.poll() is None for w in batch]
    assert all(alive), "a worker exited during the outages:\n" + "\n".join(w.tail() for w in batch)
    drill.settle(batch, timeout=90)
    logs = [w.log.read_text(errors="replace") for w in batch]
    assert all("rode out" in text for text in logs), [w.tail() for w in batch]

    not_committed = Write.objects.filter(tenant=drill.tenant).exclude(state=WriteState.COMMITTED)
    assert not not_committed.exists(), list(not_committed.values_list("uid", "state", "last_error"))
    handed_back = sum(text.count("handed back to the ledger") for text in logs)
    extra = {
        "restarts": outages,
        "answers_during_outage": ",".join(f"{w}:{status}x{n}" for (w, status), n in sorted(during.items())),
        "handed_back_batches": handed_back,
    }
    check_drill(drill, "db-restart", extra=extra)
    assert set(status for _, status in during) == {503}
