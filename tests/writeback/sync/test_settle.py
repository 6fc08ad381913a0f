"""One settlement: a worker records an outcome only while it still holds the write.

A worker whose lease was taken over must record nothing (no attempt row, no "retry scheduled", no
transition) over the new holder; in a batch, the writes it still holds are recorded and the rest are
left exactly as they were."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from adapters.base import HttpExchange
from tests.writeback.sync.conftest import bulk_writes
from writeback.models import AuditEntry, Write, WriteAttempt
from writeback.services import audit
from writeback.services.record import Recorder, Settlement, settle
from writeback.states import InvalidTransition, WriteState
from writeback.sync.claim import claim_due
from writeback.sync.process import Result
from writeback.sync.worker import SyncWorker

pytestmark = pytest.mark.django_db


def _taken_over(write: Write) -> Write:
    # Another worker claimed it after this one's lease lapsed.
    Write.objects.filter(pk=write.pk).update(lease_owner="worker:b")
    return write


def _snapshot(write: Write) -> tuple:
    row = Write.objects.get(pk=write.pk)
    return (
        row.state,
        row.attempts,
        row.lease_owner,
        row.last_outcome,
        row.next_attempt_at,
        WriteAttempt.objects.filter(write=row).count(),
        AuditEntry.objects.filter(write_uid=str(row.uid)).count(),
    )


@pytest.mark.parametrize("state", [WriteState.PENDING, WriteState.FAILED_RETRYABLE])
def test_a_lost_lease_never_writes_retry_scheduled(tenant, state):
    (write,) = bulk_writes(tenant, 1)
    Write.objects.filter(pk=write.pk).update(state=state)
    (claimed,) = claim_due("worker:a", 1)
    before = _snapshot(_taken_over(claimed))
    with pytest.raises(InvalidTransition):
        Recorder("worker:a").retry(claimed, exchanges=[], message="503 from the target", retry_after=None)
    assert _snapshot(claimed) == before
    assert not AuditEntry.objects.filter(action="write.retry_scheduled").exists()


@pytest.mark.parametrize("method", ["terminal", "ambiguous", "committed"])
def test_a_lost_lease_records_no_other_outcome_either(tenant, method):
    (write,) = bulk_writes(tenant, 1)
    (claimed,) = claim_due("worker:a", 1)
    before = _snapshot(_taken_over(claimed))
    record = Recorder("worker:a")
    with pytest.raises(InvalidTransition):
        if method == "terminal":
            record.terminal(claimed, exchanges=[], message="refused", code="rejected-by-target")
        elif method == "ambiguous":
            record.ambiguous(claimed, exchanges=[], message="read timeout")
        else:
            record.committed(
                claimed, exchanges=[], resource_id="x", version="1", guarantee="ledger", counted=True
            )
    assert _snapshot(claimed) == before


def test_a_batch_records_the_writes_still_held_and_nothing_for_the_rest(tenant):
    bulk_writes(tenant, 3)
    claimed = claim_due("worker:a", 3)
    assert len(claimed) == 3
    lost = _taken_over(claimed[1])
    before = _snapshot(lost)
    batch = [
        Settlement(
            w,
            WriteState.FAILED_RETRYABLE,
            reason="503",
            fields={"attempts": 1, "lease_owner": "", "lease_expires_at": None},
            attempts=[WriteAttempt(write=w, number=1, worker_id="worker:a", outcome="retryable")],
            guard={"lease_owner": "worker:a"},
        )
        for w in claimed
    ]
    done = settle(batch, actor="worker:a")
    assert [s.write.pk for s in done] == [claimed[0].pk, claimed[2].pk]
    assert _snapshot(lost) == before
    for w in (claimed[0], claimed[2]):
        row = Write.objects.get(pk=w.pk)
        assert (row.state, row.attempts, row.lease_owner) == (WriteState.FAILED_RETRYABLE, 1, "")
        assert WriteAttempt.objects.filter(write=row).count() == 1
        (entry,) = AuditEntry.objects.filter(write_uid=str(row.uid), action="write.transition")
        assert entry.data["to"] == WriteState.FAILED_RETRYABLE


def test_a_settlement_that_breaks_the_state_table_writes_nothing(tenant):
    (write,) = bulk_writes(tenant, 1)
    (claimed,) = claim_due("worker:a", 1)
    before = _snapshot(claimed)
    bad = Settlement(
        claimed,
        WriteState.COMPENSATED,  # a pending write cannot be compensated
        attempts=[WriteAttempt(write=claimed, number=1, worker_id="worker:a", outcome="committed")],
    )
    with pytest.raises(InvalidTransition):
        settle([bad], actor="worker:a")
    assert _snapshot(claimed) == before


# -- batches: the worker loop records a turn's outcomes with one settle ----------------------------------


def _sent(write: Write) -> list[HttpExchange]:
    return [
        HttpExchange(
            method="POST", url="http://127.0.0.1:9/fhir/Observation", request_id=f"r-{write.pk}", status=201
        )
    ]


def _committed(write: Write) -> Settlement:
    return Recorder("worker:a", defer=True).committed(
        write,
        exchanges=_sent(write),
        resource_id=f"obs-{write.pk}",
        version="1",
        guarantee="ledger",
        counted=True,
    )


def _settle_counting(n: int) -> int:
    claimed = claim_due("worker:a", n)
    assert len(claimed) == n
    batch = [_committed(w) for w in claimed]
    with CaptureQueriesContext(connection) as queries:
        assert len(settle(batch, actor="worker:a")) == n
    assert Write.objects.filter(pk__in=[w.pk for w in claimed], state=WriteState.COMMITTED).count() == n
    return len(queries)


def test_a_batch_of_commits_costs_one_guarded_update_per_write_and_the_rest_once(tenant):
    bulk_writes(tenant, 9, patients=9)
    one = _settle_counting(1)
    eight = _settle_counting(8)
    # Each further write adds its guarded UPDATE and nothing else: the attempts INSERT, the chain lock,
    # the chain head and the audit INSERT are paid once per batch.
    assert eight - one == 7
    assert eight < 8 * one / 3
    assert WriteAttempt.objects.filter(outcome="committed").count() == 9
    assert AuditEntry.objects.filter(action="write.transition", data__to="committed").count() == 9
    assert audit.verify_chain().ok


def test_a_write_taken_over_gets_nothing_from_a_batch_of_deferred_outcomes(tenant):
    bulk_writes(tenant, 4, patients=4)
    claimed = claim_due("worker:a", 4)
    record = Recorder("worker:a", defer=True)
    batch = [
        record.retry(claimed[0], exchanges=_sent(claimed[0]), message="503", retry_after=None),
        record.retry(claimed[1], exchanges=_sent(claimed[1]), message="503", retry_after=None),
        _committed(claimed[2]),
        record.ambiguous(claimed[3], exchanges=_sent(claimed[3]), message="read timeout"),
    ]
    # Nothing is on record until the batch is settled.
    assert not WriteAttempt.objects.exists()
    lost = _taken_over(claimed[1])
    before = _snapshot(lost)
    done = settle(batch, actor="worker:a")
    assert [s.write.pk for s in done] == [claimed[0].pk, claimed[2].pk, claimed[3].pk]
    assert _snapshot(lost) == before
    assert not AuditEntry.objects.filter(write_uid=str(lost.uid)).exists()
    assert (
        list(AuditEntry.objects.filter(action="write.retry_scheduled").values_list("write_uid", flat=True))
        == []
    )
    states = dict(Write.objects.filter(pk__in=[w.pk for w in claimed]).values_list("pk", "state"))
    assert states == {
        claimed[0].pk: WriteState.FAILED_RETRYABLE,
        claimed[1].pk: WriteState.PENDING,
        claimed[2].pk: WriteState.COMMITTED,
        claimed[3].pk: WriteState.OUTCOME_UNKNOWN,
    }
    assert audit.verify_chain().ok


def test_the_worker_loop_records_a_turn_with_one_settle_and_leaves_a_write_taken_over_alone(live, sim):
    bulk_writes(live, 5, patients=3)
    worker = SyncWorker(worker_id="worker:a", concurrency=8)
    claimed = claim_due("worker:a", 8)
    assert len(claimed) == 3  # one per stream
    results = [worker._run_one(w) for w in claimed]
    assert [r.label for r in results] == ["committed"] * 3
    assert not WriteAttempt.objects.exists()  # processed, not yet recorded
    lost = _taken_over(claimed[0])
    before = _snapshot(lost)

    worker._settle_finished(results)

    assert _snapshot(lost) == before  # no attempt row, no audit entry, still pending under worker:b
    assert (worker.stats.processed, worker.stats.by_label["lease-lost"]) == (2, 1)
    kept = [w.pk for w in claimed[1:]]
    assert Write.objects.filter(pk__in=kept, state=WriteState.COMMITTED, lease_owner="").count() == 2
    entries = AuditEntry.objects.filter(action="write.transition", data__to="committed")
    assert entries.count() == 2
    # One settle: one chain append (one timestamp) for every entry of the turn.
    assert len({e.at for e in AuditEntry.objects.filter(write_uid__in=[str(w.uid) for w in claimed])}) == 1
    assert audit.verify_chain().ok


def test_a_batch_that_fails_is_recorded_one_by_one_and_only_the_bad_outcome_is_lost(tenant, caplog):
    bulk_writes(tenant, 3, patients=3)
    claimed = claim_due("worker:a", 3)
    batch = [_committed(w) for w in claimed]

    def broken(drafts):
        raise RuntimeError("a bug while recording")

    batch[1].after = broken
    worker = SyncWorker(worker_id="worker:a")
    worker._settle_finished([Result("committed", w, s) for w, s in zip(claimed, batch, strict=True)])

    states = dict(Write.objects.filter(pk__in=[w.pk for w in claimed]).values_list("pk", "state"))
    assert states[claimed[0].pk] == states[claimed[2].pk] == WriteState.COMMITTED
    assert states[claimed[1].pk] == WriteState.PENDING
    assert not WriteAttempt.objects.filter(write=claimed[1]).exists()
    assert WriteAttempt.objects.filter(write__in=[claimed[0], claimed[2]]).count() == 2
    assert (worker.stats.processed, worker.stats.by_label["error"], worker.stats.by_label["lease-lost"]) == (
        2,
        1,
        0,
    )
    # The rolled-back batch left the write in memory as the database holds it.
    assert claimed[1].state == WriteState.PENDING
    assert audit.verify_chain().ok
