"""The bulk runner in its own thread, as the console starts it (committed data: transactional tests)."""

import time

import pytest

from tests.conftest import make_user
from tests.console.conftest import client_for, failed
from tests.writeback.helpers import consent_for, event
from writeback.models import BulkOperation, Write
from writeback.services.bulk import bulk_process_due, bulk_run
from writeback.services.tenants import tenant_grant
from writeback.states import WriteState

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


def test_the_console_starts_a_runner_that_finishes_the_operation(broken, admin, settings):
    settings.WRITEBACK_BULK_RUN_IN_THREAD = True
    r = client_for(admin).post(
        "/bulk/start", {"uid": [str(w.uid) for w in broken], "reason": "outage over", "rate": "20"}
    )
    assert r.status_code == 302
    op = BulkOperation.objects.get()
    wait_until(lambda: BulkOperation.objects.get(pk=op.pk).status == BulkOperation.Status.DONE)
    assert all(Write.objects.get(pk=w.pk).state == WriteState.PENDING for w in broken)


def test_the_runner_paces_itself_by_the_rate(broken, admin):
    from writeback.services.bulk import bulk_replay_start

    op = bulk_replay_start(
        user=admin,
        writes=Write.objects.filter(pk__in=[w.pk for w in broken]),
        reason="x",
        rate_per_second=10,
        run_in_background=False,
    )
    started = time.monotonic()
    bulk_run(op.uid)
    elapsed = time.monotonic() - started
    op.refresh_from_db()
    assert op.status == BulkOperation.Status.DONE and op.succeeded == 4
    assert elapsed >= 0.25  # 4 items at 10 per second: the last one no earlier than 0.3 s after the start


def test_the_worker_loop_can_process_due_items(broken, admin):
    from writeback.services.bulk import bulk_replay_start

    bulk_replay_start(
        user=admin,
        writes=Write.objects.filter(pk__in=[w.pk for w in broken]),
        reason="x",
        rate_per_second=20,
        run_in_background=False,
    )
    assert bulk_process_due() >= 1  # the first at once; the rest as their time comes
    wait_until(
        lambda: bulk_process_due() == 0 and not BulkOperation.objects.filter(status="running").exists()
    )
    assert BulkOperation.objects.get().succeeded == 4
