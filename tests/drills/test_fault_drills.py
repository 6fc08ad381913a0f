"""Fault drills: 500 mixed events posted through the API while two real worker processes send them to
the simulator, which fails on purpose. Each drill ends on `check_drill`: one resource per intended write,
none missing, every write in a final or visible state, the audit chain intact; each prints one line of
counts."""

import os
import signal
import time

import pytest

from tests.drills.checks import check_drill
from tests.drills.conftest import STALL_SECONDS, Drill, wait_for
from writeback.models import BusinessEvent, Tenant, Write, WriteAttempt
from writeback.services.killswitches import tenant_mode_change

# 500 mixed events per drill (about 1,060 writes with each event's Provenance). CI runs them at a
# smaller size (WRITEBACK_DRILL_EVENTS) to stay within its time; docs/drills.md has full-size counts.
EVENTS = int(os.environ.get("WRITEBACK_DRILL_EVENTS", "500"))
KILLS = 20

pytestmark = [
    pytest.mark.drill,
    pytest.mark.xdist_group("drills"),
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]


def _post_and_approve(drill: Drill, bodies: list[dict]) -> list[dict]:
    answers = drill.post(bodies)
    drill.approve_all()
    return answers


def _attempts(drill: Drill, **filters) -> int:
    return WriteAttempt.objects.filter(write__tenant=drill.tenant, **filters).count()


def test_timeout_after_commit(drill: Drill) -> None:
    """(a) 20% of requests land and then time out: each is settled by reading the target, never resent."""
    drill.set_faults(f"timeout_after_commit=0.2,stall_seconds={STALL_SECONDS},seed=11")
    batch = drill.start()
    _post_and_approve(drill, drill.mixed_events(EVENTS))
    drill.settle(batch)
    found = _attempts(drill, outcome=WriteAttempt.Outcome.FOUND)
    report = check_drill(drill, "timeout-after-commit", extra={"found_by_read": found})
    assert report.faults["timeout_after_commit"] > 0 and found > 0


def _without_provenance(drill: Drill) -> None:
    """An event's Provenance waits until a person settles its failed or conflicting writes, so a drill
    that leaves such writes for a person would never drain; these two drills leave Provenance out."""
    Tenant.objects.filter(pk=drill.tenant.pk).update(write_provenance=False)
    drill.tenant.refresh_from_db()


def test_errors_and_rate_limits(drill: Drill) -> None:
    """(b) 10% 5xx and 10% 429 with Retry-After: retried with backoff until they go through."""
    _without_provenance(drill)
    drill.set_faults("error_5xx=0.1,rate_limit=0.1,seed=22")
    batch = drill.start()
    _post_and_approve(drill, drill.mixed_events(EVENTS))
    drill.settle(batch)
    report = check_drill(drill, "5xx-and-429")
    assert report.faults["error_5xx"] > 0 and report.faults["rate_limit"] > 0
    assert report.retried > 0


def test_maintenance_window_in_the_middle(drill: Drill) -> None:
    """(c) A 3-second maintenance window (503 + Retry-After) opens once a quarter of the writes are in;
    every write, reads before updates included, waits it out instead of spending its attempts in it."""
    bodies = drill.mixed_events(EVENTS)
    quarter = drill.expected_writes(bodies) // 4
    batch = drill.start()
    posting = drill.post_in_background(bodies)
    wait_for(lambda: drill.committed() >= quarter, timeout=60, what="a quarter of the writes committed")
    before = drill.committed()
    drill.set_faults("maintenance=0..3,seed=33")
    posting.result()
    drill.approve_all()
    drill.settle(batch)
    report = check_drill(drill, "maintenance-window", extra={"committed_before_window": before})
    assert report.faults["maintenance"] > 0
    assert 0 < before < report.writes
    assert report.failed_terminal == 0  # Retry-After points past the window: no attempt is wasted in it


def test_workers_killed_every_second(drill: Drill) -> None:
    """(d) Two workers drain while, every second, the older of them (once it is up and claiming) is
    SIGKILLed and replaced: a killed worker's writes come back after their 3 s lease and are checked on
    the target before any resend. After 20 kills the last two workers finish the queue."""
    env = {"WRITEBACK_LEASE_SECONDS": "3"}
    drill.set_faults("slow_ms=20,seed=44")
    live = drill.start(env=env)
    posting = drill.post_in_background(drill.mixed_events(EVENTS))
    kills = 0
    with drill.timed("drain"):
        while kills < KILLS and not (posting.done() and drill.settled()):
            time.sleep(1.0)  # the drill's rhythm: one kill a second
            if not live[0].ready():
                continue
            victim = live.pop(0)
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(timeout=10)
            kills += 1
            live.append(drill.workers.start(env=env))
    posting.result()
    drill.approve_all()
    drill.settle(live)
    reclaimed = (
        WriteAttempt.objects.filter(write__tenant=drill.tenant, error__contains="lost its lease")
        .values("write")
        .distinct()
        .count()
    )
    found = _attempts(drill, outcome=WriteAttempt.Outcome.FOUND)
    # Each of them showed as outcome unknown (a `lost` attempt naming the killed worker) until settled.
    shown_unknown = (
        WriteAttempt.objects.filter(write__tenant=drill.tenant, outcome=WriteAttempt.Outcome.LOST)
        .values("write")
        .distinct()
        .count()
    )
    extra = {
        "kills": kills,
        "reclaimed_after_lease": reclaimed,
        "shown_unknown": shown_unknown,
        "found_by_read": found,
    }
    report = check_drill(drill, "sigkill-workers", extra=extra)
    assert kills >= 10 and reclaimed + found > 0, report.line()
    assert shown_unknown == reclaimed, report.line()


def test_same_events_posted_three_times(drill: Drill) -> None:
    """(e) Every event is posted three times (the repeats while the workers drain): one event and one
    set of writes each; the repeats are answered as duplicates with the original event."""
    drill.set_faults("error_5xx=0.05,seed=55")
    bodies = drill.mixed_events(EVENTS)
    batch = drill.start()
    originals = [answer["id"] for answer in _post_and_approve(drill, bodies)]
    writes_before = Write.objects.filter(tenant=drill.tenant).count()
    repeats = 0
    for _ in range(2):
        answers = drill.post(bodies, expect=200)
        assert all(a["duplicate"] for a in answers)
        assert [a["id"] for a in answers] == originals
        repeats += len(answers)
    drill.settle(batch)
    assert BusinessEvent.objects.filter(tenant=drill.tenant).count() == len(bodies)
    assert Write.objects.filter(tenant=drill.tenant).count() == writes_before
    check_drill(drill, "posted-three-times", extra={"repeats_answered_duplicate": repeats})


def test_stale_versions_on_updates(drill: Drill) -> None:
    """(f) Clinicians edit some charts after the events were made and before they are sent, and 25% of
    If-Match requests meet a concurrent edit (412): each such update becomes a conflict with base / ours /
    theirs, and no newer edit is ever overwritten."""
    _without_provenance(drill)
    bodies = drill.mixed_events(EVENTS)  # demographics based on each patient's version now
    edited = [("Patient", b["patient"]["id"]) for b in bodies if b["type"] == "demographics.updated"][:12]
    edited += [("Task", b["data"]["task_id"]) for b in bodies if b["type"] == "referral.status_changed"][:6]
    clinician_phone = [{"system": "phone", "value": "+15559999", "use": "home"}]
    for resource_type, resource_id in edited:
        change = {"telecom": clinician_phone} if resource_type == "Patient" else {"status": "cancelled"}
        drill.edit(resource_type, resource_id, change)
    drill.set_faults("stale_version=0.25,seed=66")
    batch = drill.start()
    _post_and_approve(drill, bodies)
    drill.settle(batch)
    report = check_drill(drill, "stale-versions", extra={"clinician_edits": len(edited)})
    assert report.faults["stale_version"] > 0
    assert report.conflicts == len(edited) + report.faults["stale_version"]
    current = {(r["resourceType"], r["id"]): r for t in ("Patient", "Task") for r in drill.sim.resources(t)}
    for resource_type, resource_id in edited:
        write = Write.objects.get(
            tenant=drill.tenant, resource_type=resource_type, target_resource_id=resource_id
        )
        assert write.state == "conflict", write
        stored = current[(resource_type, resource_id)]
        if resource_type == "Patient":
            assert stored["telecom"] == clinician_phone
        else:
            assert stored["status"] == "cancelled"


def test_tenant_paused_and_resumed_mid_run(drill: Drill) -> None:
    """(g) The tenant is paused once a fifth of the writes are in: in-flight writes finish, then no write
    reaches the EHR while events keep arriving (they queue up; reads such as the read-back of a write that
    had just committed may still go out); after the resume everything goes out."""
    bodies = drill.mixed_events(EVENTS)
    drill.set_faults("slow_ms=10,seed=77")
    batch = drill.start()
    posting = drill.post_in_background(bodies)
    fifth = drill.expected_writes(bodies) // 5
    wait_for(lambda: drill.committed() >= fifth, timeout=60, what="a fifth of the writes committed")
    reason = "drill: the EHR asked us to stop"
    tenant_mode_change(tenant=drill.tenant, user=drill.engineer, mode="paused", reason=reason)
    in_flight = Write.objects.filter(tenant=drill.tenant).exclude(lease_owner="")
    wait_for(lambda: not in_flight.exists(), timeout=30, what="in-flight writes to finish after the pause")
    paused_at, since = drill.committed(), drill.sim.requests(1)[0]["time"]
    quiet_until = time.monotonic() + 2.0
    while time.monotonic() < quiet_until:  # proving a negative takes a while: no write may go out
        seen = [r for r in drill.sim.requests(200) if r["time"] > since]
        sent = [r for r in seen if r["method"] != "GET"]
        assert not sent, f"writes reached the EHR while the tenant was paused: {sent[:3]}"
        time.sleep(0.1)
    waiting = drill.open_writes()
    assert waiting > 0 and drill.committed() == paused_at
    drill.tenant.refresh_from_db()
    tenant_mode_change(tenant=drill.tenant, user=drill.engineer, mode="live", reason="drill: the EHR is back")
    posting.result()
    drill.approve_all()
    drill.settle(batch)
    extra = {
        "committed_when_paused": paused_at,
        "waiting_while_paused": waiting,
        "reads_while_paused": len(seen),
    }
    check_drill(drill, "pause-resume", extra=extra)
