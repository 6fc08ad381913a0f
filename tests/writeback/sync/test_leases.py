"""A live worker keeps its leases (the heartbeat): a call slower than the lease is never taken over,
checked or sent again by another worker. Only a dead worker's lease lapses, and a worker that stalled
past its lease checks it still holds the write just before sending (the fence)."""

import gc
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from adapters.simulator import start_simulator
from writeback.models import Write, WriteAttempt
from writeback.services.tenants import tenant_create
from writeback.states import WriteState
from writeback.sync.claim import claim_due, renew_leases
from writeback.sync.process import WriteProcessor
from writeback.sync.worker import AdapterCache, SyncWorker

from .conftest import bulk_writes

LEASE = 1


@pytest.mark.django_db(transaction=True)
def test_a_call_slower_than_the_lease_keeps_its_lease_and_is_sent_once(settings):
    settings.WRITEBACK_LEASE_SECONDS = LEASE
    settings.WRITEBACK_HTTP_READ_TIMEOUT = 10
    sim = start_simulator("generic", faults="slow_ms=3000")  # the send (its answer the read-back): 3 leases
    worker = SyncWorker(worker_id="worker:slow", concurrency=2, until_idle=True, idle_sleep=0.05)
    try:
        tenant = tenant_create(slug="slow", vendor="generic", base_url=sim.fhir_base)
        (write,) = bulk_writes(tenant, 1)
        thread = threading.Thread(target=worker.run)
        thread.start()
        leased = Write.objects.filter(pk=write.pk, lease_owner="worker:slow")
        deadline = time.monotonic() + 10
        while not leased.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert leased.exists()
        stolen, checks = [], 0
        while thread.is_alive() and Write.objects.get(pk=write.pk).state == WriteState.PENDING:
            stolen += claim_due("worker:other", 10)  # a second worker, polling for due writes
            checks += 1
            time.sleep(0.1)
        thread.join(timeout=30)
        assert checks > 20  # the second worker kept asking for well over two lease lengths
        assert stolen == []

        write.refresh_from_db()
        assert write.state == WriteState.COMMITTED
        attempts = WriteAttempt.objects.filter(write=write)
        assert set(attempts.values_list("worker_id", flat=True)) == {"worker:slow"}
        assert attempts.filter(outcome=WriteAttempt.Outcome.COMMITTED).count() == 1
        posts = [r for r in sim.requests(1000) if r["method"] == "POST"]
        assert len(posts) == 1  # sent once, not checked or resent by anyone
        assert sum(sim.count_by_identifier("urn:fhir-writeback:write-id").values()) == 1
    finally:
        worker.stopping.set()
        sim.stop()
        connection.close()
        gc.collect()  # the worker threads' database connections go with their thread-locals


@pytest.mark.django_db
def test_renewal_extends_only_the_workers_own_leases(settings, tenant):
    settings.WRITEBACK_LEASE_SECONDS = 60
    mine, theirs, done = bulk_writes(tenant, 3)
    soon = timezone.now() + timedelta(seconds=5)
    Write.objects.filter(pk=mine.pk).update(lease_owner="worker:a", lease_expires_at=soon)
    Write.objects.filter(pk=theirs.pk).update(lease_owner="worker:b", lease_expires_at=soon)

    # `done` was recorded meanwhile (its lease released): renewing must not lease it again.
    assert renew_leases("worker:a", [mine.pk, theirs.pk, done.pk]) == 1

    leases = dict(Write.objects.values_list("pk", "lease_expires_at"))
    assert leases[mine.pk] > timezone.now() + timedelta(seconds=50)
    assert leases[theirs.pk] == soon
    assert leases[done.pk] is None
    assert Write.objects.get(pk=done.pk).lease_owner == ""


def _posts(sim) -> int:
    return sum(1 for r in sim.requests(1000) if r["method"] == "POST")


@pytest.mark.django_db
def test_a_worker_that_stalled_past_its_lease_does_not_send_a_write_taken_over(live, sim):
    """The fence before sending: worker A claimed the write, stalled past its lease, and B took it over.
    When A wakes up it must not send: B will check the target and send once."""
    (write,) = bulk_writes(live, 1)
    (claimed,) = claim_due("worker:a", 1)
    Write.objects.filter(pk=write.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    (taken,) = claim_due("worker:b", 1)
    assert taken.pk == write.pk
    posts_before = _posts(sim)

    result = WriteProcessor("worker:a", AdapterCache()).process(claimed)

    assert result.label == "lease-lost"
    assert _posts(sim) == posts_before  # nothing left worker A
    write.refresh_from_db()
    assert (write.state, write.lease_owner) == (WriteState.PENDING, "worker:b")
    assert not WriteAttempt.objects.filter(write=write).exists()

    assert WriteProcessor("worker:b", AdapterCache()).process(taken).label == "committed"
    assert sum(sim.count_by_identifier("urn:fhir-writeback:write-id").values()) == 1


@pytest.mark.django_db
def test_a_lapsed_lease_nobody_took_over_is_renewed_and_the_write_sent(live, sim):
    (write,) = bulk_writes(live, 1)
    (claimed,) = claim_due("worker:a", 1)
    Write.objects.filter(pk=write.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    assert WriteProcessor("worker:a", AdapterCache()).process(claimed).label == "committed"
    write.refresh_from_db()
    assert write.state == WriteState.COMMITTED and write.lease_owner == ""
    assert sum(sim.count_by_identifier("urn:fhir-writeback:write-id").values()) == 1
