"""One settlement: a worker records an outcome only while it still holds the write.

A worker whose lease was taken over must record nothing (no attempt row, no "retry scheduled", no
transition) over the new holder; in a batch, the writes it still holds are recorded and the rest are
left exactly as they were."""

import pytest

from tests.writeback.sync.conftest import bulk_writes
from writeback.models import AuditEntry, Write, WriteAttempt
from writeback.services.record import Recorder, Settlement, settle
from writeback.states import InvalidTransition, WriteState
from writeback.sync.claim import claim_due

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
