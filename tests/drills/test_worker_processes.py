"""Worker processes: SIGTERM lets in-flight writes finish before a clean exit; two processes draining
one queue never work on the same write; calls slower than the lease keep their leases; a dead worker's
sent writes are never sent again, even on a vendor without conditional create."""

import signal
from collections import Counter, defaultdict
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.drills.checks import check_drill
from tests.drills.conftest import Drill, wait_for
from writeback.models import Tenant, Write, WriteAttempt
from writeback.services.requests import build_request
from writeback.services.targets import adapter_for
from writeback.states import WriteState
from writeback.sync.claim import claim_due

pytestmark = [
    pytest.mark.drill,
    pytest.mark.xdist_group("drills"),
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]


def test_sigterm_finishes_in_flight_writes_and_exits_0(drill: Drill) -> None:
    drill.post(drill.mixed_events(120))
    drill.approve_all()
    drill.set_faults("slow_ms=300,seed=1")  # every request takes 0.3 s: there is always work in flight
    (worker,) = drill.start(processes=1, concurrency=4)
    leased = Write.objects.filter(tenant=drill.tenant).exclude(lease_owner="")
    wait_for(lambda: drill.committed() >= 5 and leased.exists(), timeout=60, what="writes in flight")
    in_flight = set(leased.values_list("pk", flat=True))
    worker.proc.send_signal(signal.SIGTERM)
    worker.proc.wait(timeout=30)
    assert worker.proc.returncode == 0, worker.tail()
    assert "stopped after" in worker.tail()

    mine = Write.objects.filter(tenant=drill.tenant)
    assert not mine.exclude(lease_owner="").exists()  # nothing left leased
    assert not mine.filter(last_outcome="in_flight").exists()
    finished = dict(mine.filter(pk__in=in_flight).values_list("pk", "state"))
    assert set(finished.values()) == {WriteState.COMMITTED}, finished  # in flight at the signal: finished
    waiting = mine.filter(state=WriteState.PENDING).count()
    assert waiting > 0  # the rest waits for the next worker

    drill.set_faults(None)
    drill.settle(drill.start(processes=1))
    extra = {"in_flight_at_sigterm": len(in_flight), "left_for_the_next_worker": waiting}
    check_drill(drill, "sigterm", extra=extra)


def test_two_workers_share_the_queue_and_never_the_same_write(drill: Drill) -> None:
    drill.post(drill.mixed_events(200))
    drill.approve_all()
    drill.set_faults("slow_ms=5,seed=2")
    batch = drill.start(processes=2, concurrency=4, until_idle=True)
    with drill.timed("drain"):
        drill.workers.wait(batch, timeout=90)

    attempts = WriteAttempt.objects.filter(write__tenant=drill.tenant)
    workers_per_write: dict[int, set[str]] = defaultdict(set)
    for write_id, worker_id in attempts.values_list("write_id", "worker_id"):
        workers_per_write[write_id].add(worker_id)
    shared = {w: ids for w, ids in workers_per_write.items() if len(ids) > 1}
    assert not shared, f"writes attempted by more than one worker: {list(shared.items())[:5]}"
    commits = Counter(
        attempts.filter(outcome=WriteAttempt.Outcome.COMMITTED).values_list("write_id", flat=True)
    )
    assert commits and set(commits.values()) == {1}  # each write committed exactly once
    load = Counter(ids.pop() for ids in workers_per_write.values())
    assert len(load) == 2, load
    total = sum(load.values())
    assert min(load.values()) >= 0.2 * total, load  # both took a real share

    share = "/".join(str(n) for n in sorted(load.values()))
    check_drill(drill, "two-workers", extra={"writes_per_worker": share})


def test_calls_slower_than_the_lease_are_never_taken_over(drill: Drill) -> None:
    """Every request takes longer than a worker's lease (1 s): the workers' heartbeats keep their leases,
    so no write is taken over, checked by read or resent by the other worker while its call runs."""
    drill.post(drill.mixed_events(30))
    drill.approve_all()
    drill.set_faults("slow_ms=1100,seed=3")
    env = {"WRITEBACK_LEASE_SECONDS": "1", "WRITEBACK_HTTP_READ_TIMEOUT": "5"}
    batch = drill.start(processes=2, concurrency=4, env=env)
    drill.settle(batch, timeout=180)

    attempts = WriteAttempt.objects.filter(write__tenant=drill.tenant)
    taken_over = attempts.filter(error__contains="lost its lease").count()
    workers_per_write: dict[int, set[str]] = defaultdict(set)
    for write_id, worker_id in attempts.values_list("write_id", "worker_id"):
        workers_per_write[write_id].add(worker_id)
    shared = sum(1 for ids in workers_per_write.values() if len(ids) > 1)
    report = check_drill(drill, "slower-than-lease", extra={"taken_over": taken_over, "shared": shared})
    assert taken_over == 0 and shared == 0, report.line()
    assert not attempts.filter(outcome=WriteAttempt.Outcome.FOUND).exists()  # nothing needed a check


@pytest.mark.parametrize("drill_sim", ["epic"], indirect=True)
def test_a_dead_workers_sent_writes_are_never_sent_again_without_conditional_create(drill: Drill) -> None:
    """Epic ignores If-None-Exist: only check-by-read stands between a dead worker's sent writes and a
    second chart entry. The next worker claims 8 at a time and gives back what exceeds the tenant's cap
    (2 here); the writes it gives back must keep the mark that their last holder died mid-call."""
    Tenant.objects.filter(pk=drill.tenant.pk).update(max_concurrency=2)
    problems = [b for b in drill.mixed_events(200) if b["type"] == "problem.confirmed"][:16]
    drill.post(problems)
    dead = claim_due("worker:dead", 100)  # a worker claims them all ...
    adapter = adapter_for(drill.tenant)
    for claimed in dead:  # ... sends each one (they land) and dies before recording anything
        write = Write.objects.select_related("event", "tenant").get(pk=claimed.pk)
        assert adapter.write(build_request(write)).outcome == "committed"
    adapter.close()
    Write.objects.filter(tenant=drill.tenant).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    drill.settle(drill.start(processes=1, concurrency=8))
    found = WriteAttempt.objects.filter(
        write__tenant=drill.tenant, outcome=WriteAttempt.Outcome.FOUND
    ).count()
    extra = {"sent_by_the_dead_worker": len(dead), "found_by_read": found}
    check_drill(drill, "dead-worker-epic", extra=extra)
    assert found == len(dead) == len(problems)
