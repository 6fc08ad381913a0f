"""The worker's statements with cached text store exactly what the ORM stores: the guarded UPDATE of one
ledger row (`update_write_row`, against `filter(...).update(...)`), which counts the rows it changed the
same way (0 when the row moved or its lease was taken over, so the caller records nothing), and the
INSERT of attempt rows and audit entries (`insert_rows`, against `bulk_create`)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.writeback.sync.conftest import bulk_writes
from writeback.models import AuditEntry, Write, WriteAttempt
from writeback.services import audit
from writeback.services.statements import insert_rows, update_write_row
from writeback.states import WriteState

pytestmark = pytest.mark.django_db

COLUMNS = [f.attname for f in Write._meta.concrete_fields if f.attname not in ("id", "uid", "payload_hash")]


def _row(pk: int) -> dict:
    return Write.objects.filter(pk=pk).values(*COLUMNS).get()


def _values() -> dict:
    now = timezone.now()
    return {
        "state": WriteState.COMMITTED,
        "state_changed_at": now,
        "updated_at": now,
        "lease_owner": "",
        "lease_expires_at": None,
        "verify_before_send": False,
        "attempts": 3,
        "last_outcome": "committed",
        "last_error": "ünïcode ' \" %s %(x)s",
        "target_resource_id": "obs-1",
        "target_version": "2",
        "guarantee": "ledger",
        "readback_diff": [{"path": "valueQuantity.value", "sent": 1.5, "stored": 1.50}],
        "warnings": ["one", {"nested": [1, None, True]}],
        "context": {"failed_checks": 2, "pre_image": {"status": None}, "big": 2**40},
        "preview": None,
        "divergence": {"differs": False, "fields": []},
        "next_attempt_at": now + timedelta(seconds=30),
    }


def test_it_stores_what_the_orm_stores(tenant):
    a, b = bulk_writes(tenant, 2)
    Write.objects.filter(pk__in=[a.pk, b.pk]).update(lease_owner="worker:a", state=WriteState.PENDING)
    values = _values()
    guard = {"state": WriteState.PENDING, "lease_owner": "worker:a"}
    with CaptureQueriesContext(connection) as ctx:
        assert update_write_row(a.pk, guard, values) == 1
    assert len(ctx.captured_queries) == 1 and ctx.captured_queries[0]["sql"].startswith("UPDATE")
    assert Write.objects.filter(pk=b.pk, **guard).update(**values) == 1
    ours, theirs = _row(a.pk), _row(b.pk)
    for name in ("event_id", "payload", "patient_ref", "stream_key", "correlation_id", "created_at"):
        ours.pop(name), theirs.pop(name)
    assert ours == theirs
    assert ours["context"]["big"] == 2**40 and ours["lease_expires_at"] is None


def test_a_guard_that_no_longer_holds_changes_nothing(tenant):
    (write,) = bulk_writes(tenant, 1)
    Write.objects.filter(pk=write.pk).update(lease_owner="worker:b", state=WriteState.PENDING)
    before = _row(write.pk)
    assert (
        update_write_row(write.pk, {"state": WriteState.PENDING, "lease_owner": "worker:a"}, _values()) == 0
    )
    assert update_write_row(write.pk, {"state": WriteState.FAILED_RETRYABLE}, _values()) == 0
    assert _row(write.pk) == before


def test_lookups_and_none_go_through_the_orm(tenant):
    (write,) = bulk_writes(tenant, 1)
    now = timezone.now()
    Write.objects.filter(pk=write.pk).update(lease_expires_at=None, last_outcome="in_flight")
    # None in WHERE means IS NULL, as in the ORM (SQL's "= NULL" would never match).
    assert update_write_row(write.pk, {"lease_expires_at": None}, {"last_error": "x"}) == 1
    assert update_write_row(write.pk, {"lease_expires_at__lt": now}, {"last_error": "y"}) == 0
    Write.objects.filter(pk=write.pk).update(lease_expires_at=now - timedelta(seconds=1))
    assert (
        update_write_row(
            write.pk, {"lease_expires_at__lt": now, "last_outcome": "in_flight"}, {"last_error": "z"}
        )
        == 1
    )
    assert Write.objects.get(pk=write.pk).last_error == "z"


def _attempts(write: Write, worker: str, at) -> list[WriteAttempt]:
    return [
        WriteAttempt(
            write=write,
            number=i,
            worker_id=worker,
            request_id=f"r{i}",
            correlation_id=write.correlation_id,
            method="POST" if i else "GET",
            url="http://ehr/fhir/Observation?x=%s",
            request_headers={"Accept": "application/fhir+json", "n": [1, 2.5, None]},
            request_body_hash="ab" * 32,
            response_status=201 if i else None,
            response_body='{"resourceType":"Observation","note":"ünï \\"q\\""}',
            latency_ms=12,
            outcome="committed" if i else "step",
            error="",
            started_at=at,
        )
        for i in range(3)
    ]


def test_inserted_attempts_equal_bulk_created_ones(tenant):
    (write,) = bulk_writes(tenant, 1)
    at = timezone.now()
    ours, theirs = _attempts(write, "worker:ours", at), _attempts(write, "worker:theirs", at)
    with CaptureQueriesContext(connection) as ctx:
        insert_rows(WriteAttempt, ours)
    assert len(ctx.captured_queries) == 1
    WriteAttempt.objects.bulk_create(theirs)
    assert all(a.pk is not None and not a._state.adding for a in ours)
    columns = [f.attname for f in WriteAttempt._meta.concrete_fields if f.attname not in ("id", "worker_id")]
    for mine, other in zip(ours, theirs, strict=True):
        stored = WriteAttempt.objects.filter(pk=mine.pk).values(*columns).get()
        assert stored == WriteAttempt.objects.filter(pk=other.pk).values(*columns).get()
        assert WriteAttempt.objects.get(pk=mine.pk).worker_id == "worker:ours"


def test_audit_entries_written_by_insert_still_verify(tenant):
    drafts = [
        audit.draft(
            "write.transition", actor="worker:a", tenant=tenant.slug, data={"n": i, "s": "ü", "f": 0.1}
        )
        for i in range(5)
    ]
    entries = audit.record_many(drafts[:2]) + audit.record_many(drafts[2:])
    stored = list(AuditEntry.objects.order_by("seq"))
    assert [e.seq for e in stored][-5:] == [e.seq for e in entries]
    assert [e.hash for e in stored][-5:] == [e.hash for e in entries]
    assert audit.verify_chain().ok
