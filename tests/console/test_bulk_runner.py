"""Bulk operations run in the sync workers, never in the web process (committed data: transactional tests)."""

import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.conftest import make_user
from tests.console.conftest import client_for, failed
from tests.writeback.helpers import consent_for, event
from writeback.models import BulkOperation, Write
from writeback.services.bulk import bulk_process_due, bulk_replay_start
from writeback.services.tenants import tenant_grant
from writeback.states import WriteState
from writeback.sync.worker import SyncWorker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broken(tenant, api, clinician):
    consent_for(tenant, patient="pat-1001")
    writes = []
    for i in range(4):
        r = api.post(
            "/api/v1/events", event("problem.confirmed", key=f"runner-{i}", note=f"v{i}"), format="json"
        )
        writes.append(
            failed(Write.objects.select_related("tenant", "event").get(uid=r.json()["writes"][0]["id"]))
        )
    return writes


@pytest.fixture
def admin(tenant):
    user = make_user("ann.admin", "admin")
    tenant_grant(tenant=tenant, user=user)
    return user


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_the_console_starts_no_thread_and_a_sync_worker_finishes_the_operation(broken, admin):
    threads_before = {t.ident for t in threading.enumerate()}
    r = client_for(admin).post(
        "/bulk/start", {"uid": [str(w.uid) for w in broken], "reason": "outage over", "rate": "20"}
    )
    assert r.status_code == 302
    # The web request only recorded the operation: no background thread, nothing replayed yet.
    assert {t.ident for t in threading.enumerate()} <= threads_before
    op = BulkOperation.objects.get()
    assert op.status == BulkOperation.Status.RUNNING and op.processed == 0
    worker = SyncWorker(worker_id="worker:bulk-tests", until_idle=True, idle_sleep=0.05)

    def worker_pass() -> bool:
        worker.housekeeping()
        return BulkOperation.objects.get(pk=op.pk).status == BulkOperation.Status.DONE

    wait_until(worker_pass)
    assert all(Write.objects.get(pk=w.pk).state == WriteState.PENDING for w in broken)


def test_items_are_paced_by_the_rate_whoever_processes_them(broken, admin):
    op = bulk_replay_start(
        user=admin, writes=Write.objects.filter(pk__in=[w.pk for w in broken]), reason="x", rate_per_second=10
    )
    started = op.started_at
    # However often the workers call in, item n is not replayed before started_at + n / rate.
    assert bulk_process_due(now=started) == 1
    assert bulk_process_due(now=started) == 0
    assert bulk_process_due(now=started + timedelta(seconds=0.25)) == 2
    assert bulk_process_due(now=started + timedelta(seconds=1)) == 1
    op.refresh_from_db()
    assert op.status == BulkOperation.Status.DONE and op.succeeded == 4


def test_the_console_says_when_no_worker_processes_a_running_operation(broken, admin):
    op = bulk_replay_start(
        user=admin, writes=Write.objects.filter(pk__in=[w.pk for w in broken]), reason="x", rate_per_second=1
    )
    c = client_for(admin)
    assert "No sync worker has processed" not in c.get(f"/bulk/{op.uid}/").content.decode()
    BulkOperation.objects.filter(pk=op.pk).update(
        started_at=timezone.now() - timedelta(minutes=2), heartbeat_at=timezone.now() - timedelta(minutes=1)
    )
    assert "No sync worker has processed" in c.get(f"/bulk/{op.uid}/").content.decode()
