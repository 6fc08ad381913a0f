"""The ledger's running counts equal a GROUP BY of the ledger after every kind of change, including two
PostgreSQL transactions moving writes at once; `rebuild` and `compact` keep them equal."""

import json
import threading
from collections import Counter
from datetime import UTC, timedelta

import pytest
from django.core.management import call_command
from django.db import connection, connections, transaction
from django.db.models import Count
from django.db.models.functions import TruncHour
from django.utils import timezone

from tests.console.conftest import client_for, conflicted, failed
from tests.console.test_conflicts import BASE, THEIRS, rows
from tests.console.test_queries import ledger
from tests.writeback.sync.conftest import drain, post
from writeback.db import counters
from writeback.models import BulkOperation, BusinessEvent, HourCount, Write, WriteAttempt, WriteCount
from writeback.selectors import hour_counts, ledger_counts
from writeback.services import counts
from writeback.services.bulk import bulk_process
from writeback.states import WriteState


def ledger_group_by() -> Counter:
    return Counter(
        {
            (r["tenant_id"], r["state"], r["resource_type"]): r["n"]
            for r in Write.objects.order_by()
            .values("tenant_id", "state", "resource_type")
            .annotate(n=Count("id"))
        }
    )


def counted() -> Counter:
    return Counter({(c.tenant_id, c.state, c.resource_type): c.n for c in ledger_counts()})


def hours_group_by() -> Counter:
    attempts = (
        WriteAttempt.objects.order_by()
        .annotate(hour=TruncHour("started_at", tzinfo=UTC))
        .values("write__tenant_id", "hour", "write__resource_type", "outcome")
        .annotate(n=Count("id"))
    )
    events = (
        BusinessEvent.objects.order_by()
        .annotate(hour=TruncHour("received_at", tzinfo=UTC))
        .values("tenant_id", "hour")
        .annotate(n=Count("id"))
    )
    out = Counter()
    for r in attempts:
        out[(r["write__tenant_id"], _utc(r["hour"]), r["write__resource_type"], r["outcome"])] += r["n"]
    for r in events:
        out[(r["tenant_id"], _utc(r["hour"]), "", "event")] += r["n"]
    return out


def hours_counted() -> Counter:
    since = timezone.now() - timedelta(days=2)
    return Counter(
        {(h.tenant_id, _utc(h.hour), h.resource_type, h.outcome): h.n for h in hour_counts(since=since)}
    )


def _utc(value):
    if timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    return value.astimezone(UTC)


def assert_counts_match():
    assert counted() == ledger_group_by()
    assert hours_counted() == hours_group_by()


@pytest.mark.django_db
def test_counts_follow_intake_sends_conflicts_replays_compensation_and_bulk(
    live, api, admin_user, engineer, clinician2
):
    # Intake (several writes per event, moved draft -> pending in one statement) and real sends.
    for i in range(3):
        post(api, "vitals.recorded", key=f"counts-vitals-{i}")
    notes = [post(api, "note.signed", key=f"counts-note-{i}")[0] for i in range(2)]
    drain()
    assert Write.objects.filter(state=WriteState.COMMITTED).count() >= 5
    assert_counts_match()

    # A version conflict, resolved field by field into a new write (the old one superseded).
    [demo] = post(api, "demographics.updated", key="counts-demo")
    _, conflict = conflicted(Write.objects.get(pk=demo.pk), theirs=THEIRS, base=BASE, theirs_version="4")
    i = rows(conflict)
    r = client_for(clinician2).post(f"/conflicts/{conflict.uid}/resolve", {f"choice-{i['telecom']}": "ours"})
    assert r.status_code == 302
    assert_counts_match()

    # Replays: a terminal failure edited into a new write; another resent in place.
    broken = [failed(Write.objects.get(pk=w.pk)) for w in post(api, "problem.confirmed", key="counts-p1")]
    broken += [failed(Write.objects.get(pk=w.pk)) for w in post(api, "problem.confirmed", key="counts-p2")]
    edited = dict(broken[0].payload, note=[{"text": "edited"}])
    payload = json.dumps(edited)
    r = client_for(engineer).post(
        f"/writes/{broken[0].uid}/replay/run", {"mode": "edit", "payload": payload, "reason": "Note added."}
    )
    assert r.status_code == 302 and Write.objects.filter(replay_of=broken[0]).exists()
    assert_counts_match()

    # Compensation of a committed note.
    r = client_for(admin_user).post(
        f"/writes/{notes[0].uid}/rollback/confirm", {"reason": "Wrong encounter.", "confirm": "on"}
    )
    assert r.status_code == 302
    assert_counts_match()

    # Bulk replay of the other terminal failures, run by the worker's step function.
    rest = [w for w in broken[1:] if Write.objects.get(pk=w.pk).state == WriteState.FAILED_TERMINAL]
    assert rest
    r = client_for(admin_user).post(
        "/bulk/start", {"uid": [str(w.uid) for w in rest], "reason": "vendor fixed", "rate": "2"}
    )
    assert r.status_code == 302
    op = BulkOperation.objects.get()
    for step in range(len(rest) + 1):
        bulk_process(op, now=op.started_at + timedelta(minutes=step))
    assert_counts_match()

    # Everything queued is sent; a bulk_create and a bulk UPDATE outside any service are counted too.
    drain()
    ledger(live, 40)
    Write.objects.filter(state=WriteState.PENDING, resource_type="Observation").update(
        state=WriteState.RESOLVED
    )
    assert_counts_match()

    # Folding the deltas and rebuilding from the ledger change no count.
    assert WriteCount.objects.count() > len(counted())
    counts.compact()
    assert WriteCount.objects.count() == len(counted())
    assert_counts_match()
    call_command("rebuild_counts")
    assert_counts_match()


@pytest.mark.django_db
def test_rebuild_repairs_counts_that_drifted(tenant):
    ledger(tenant, 30)
    WriteCount.objects.create(tenant_id=tenant.pk, state=WriteState.PENDING, resource_type="Observation", n=7)
    HourCount.objects.all().delete()
    assert counted() != ledger_group_by()
    counts.rebuild()
    assert_counts_match()
    assert ledger_counts(tenant) == ledger_counts([tenant.pk]) == ledger_counts()
    assert ledger_counts(tenant.pk + 1000) == []


@pytest.mark.django_db
def test_missing_triggers_are_put_back_and_the_counts_rebuilt(tenant):
    counters.uninstall(connection)
    ledger(tenant, 20)  # not counted: no triggers
    assert counted() != ledger_group_by()
    assert counts.ensure_installed() is True
    assert_counts_match()
    assert counts.ensure_installed() is False
    ledger(tenant, 10)
    assert_counts_match()


def _mover(ids: list[int], frm: str, to: str, barrier: threading.Barrier, errors: list) -> None:
    try:
        with transaction.atomic():
            moved = Write.objects.filter(pk__in=ids, state=frm).update(state=to)
            assert moved == len(ids)
            # Both transactions hold their uncommitted moves here: a counter row that one of them
            # locked would keep the other from arriving, and the barrier would break.
            barrier.wait(timeout=20)
    except Exception as exc:  # noqa: BLE001 - reported by the test thread
        errors.append(exc)
    finally:
        connections.close_all()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_transactions_moving_writes_at_once_lose_no_increment(tenant):
    writes = ledger(tenant, 120)
    pending = [w.pk for w in writes if w.state == WriteState.PENDING]
    retrying = [w.pk for w in writes if w.state == WriteState.FAILED_RETRYABLE]
    assert pending and retrying
    before = ledger_group_by()
    barrier, errors = threading.Barrier(2), []
    # Opposite directions over the same keys: per-key counter rows updated in place would deadlock.
    threads = [
        threading.Thread(
            target=_mover, args=(pending, WriteState.PENDING, WriteState.FAILED_RETRYABLE, barrier, errors)
        ),
        threading.Thread(
            target=_mover, args=(retrying, WriteState.FAILED_RETRYABLE, WriteState.PENDING, barrier, errors)
        ),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    after = ledger_group_by()
    assert after != before or len(pending) == len(retrying)
    assert counted() == after
    key = (tenant.pk, WriteState.PENDING, "Observation")
    assert counted()[key] == len(retrying)
