"""Claiming due writes: one indexed query, safe with many workers on many hosts.

PostgreSQL: `SELECT ... FOR UPDATE SKIP LOCKED` picks rows no other worker is claiming, then one UPDATE
stamps the lease. SQLite: the IMMEDIATE transaction holds the database's write lock for the whole
claim, and the UPDATE is a compare-and-set on state and lease, so two claimers never share a row.

A write is due when it is in a claimable state, its next attempt time has come, nobody holds a live
lease on it, no hold applies, and no earlier write of its stream (tenant + patient + resource type) is
still open: streams are sent in event order, and a poison write parks only its own stream.
"""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from writeback.models import LastOutcome, Write
from writeback.services.holds import Holds, current_holds
from writeback.services.statements import update_write_row
from writeback.states import CLAIMABLE, FINAL, STREAM_BLOCKING
from writeback.states import WriteState as S


def _open_earlier_in_stream() -> Exists:
    return Exists(
        Write.objects.filter(
            stream_key=OuterRef("stream_key"), id__lt=OuterRef("id"), state__in=STREAM_BLOCKING
        )
    )


def _provenance_waiting() -> Q:
    """An event's Provenance waits until every other write of its event has settled: it names them
    at the versions the EHR gave them."""
    unsettled = Write.objects.filter(event_id=OuterRef("event_id")).exclude(state__in=FINAL)
    return Q(resource_type="Provenance") & Exists(unsettled.exclude(resource_type="Provenance"))


def due_writes(
    *, now=None, holds: Holds | None = None, tenant_ids: list[int] | None = None, exclude_tenants=()
) -> QuerySet[Write]:
    now = now or timezone.now()
    qs = Write.objects.filter(state__in=CLAIMABLE, next_attempt_at__lte=now).filter(
        Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
    )
    return _scoped(qs, holds, tenant_ids, exclude_tenants).order_by("next_attempt_at", "id")


def _scoped(qs: QuerySet[Write], holds, tenant_ids, exclude_tenants) -> QuerySet[Write]:
    if tenant_ids is not None:
        qs = qs.filter(tenant_id__in=tenant_ids)
    if exclude_tenants:
        qs = qs.exclude(tenant_id__in=list(exclude_tenants))
    if holds is not None:
        qs = qs.exclude(holds.exclusion())
    return qs.exclude(_open_earlier_in_stream()).exclude(_provenance_waiting())


def claim_due(
    worker_id: str,
    limit: int,
    *,
    holds: Holds | None = None,
    tenant_ids: list[int] | None = None,
    exclude_tenants=(),
) -> list[Write]:
    """Claims up to `limit` due writes for `worker_id`; returns them with their pre-claim field values
    (so the caller can see `last_outcome == "in_flight"`: the previous holder died mid-call).
    `holds` defaults to the holds in force now."""
    if holds is None:
        holds = current_holds(tenant_ids)
    if limit <= 0 or holds.everything:
        return []
    now = timezone.now()
    lease_until = now + timedelta(seconds=settings.WRITEBACK_LEASE_SECONDS)
    with transaction.atomic():
        candidates = list(
            due_writes(now=now, holds=holds, tenant_ids=tenant_ids, exclude_tenants=exclude_tenants)
            .select_for_update(skip_locked=True, of=("self",))
            .select_related("tenant", "event")
            # The worker needs the event's ids and encounter, not its (large) payloads.
            .defer("event__raw_payload", "event__canonical_payload", "event__consent_snapshot")[:limit]
        )
        if not candidates:
            return []
        ids = [w.pk for w in candidates]
        claimed = (
            Write.objects.filter(pk__in=ids, state__in=CLAIMABLE)
            .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now))
            .update(
                lease_owner=worker_id,
                lease_expires_at=lease_until,
                last_outcome=LastOutcome.IN_FLIGHT,
                updated_at=now,
            )
        )
        if claimed != len(ids):  # pragma: no cover - only without row locks, where the write lock forbids it
            raise RuntimeError("claim raced on a locked row set")
    for w in candidates:
        # Who held it before: a write still "in_flight" under a lapsed lease names the worker that died.
        w.previous_lease_owner = w.lease_owner
        w.lease_owner, w.lease_expires_at = worker_id, lease_until
    return candidates


def lapsed_in_flight(limit: int = 100) -> list[Write]:
    """Writes whose worker died (or froze) mid-call: still marked in flight, lease lapsed, not yet
    taken over. A small partial index keeps this cheap: only claimed writes are ever in flight."""
    now = timezone.now()
    return list(
        Write.objects.filter(
            last_outcome=LastOutcome.IN_FLIGHT,
            lease_expires_at__lt=now,
            state__in=(S.PENDING, S.FAILED_RETRYABLE),
        )
        .select_related("tenant", "event")
        .defer("event__raw_payload", "event__canonical_payload", "event__consent_snapshot")
        .order_by("lease_expires_at")[:limit]
    )


def renew_leases(worker_id: str, write_ids: list[int]) -> int:
    """Extends this worker's leases on the writes it is still working on (the heartbeat): a live worker
    whose call outlasts the lease keeps its writes, so nobody checks or resends them meanwhile. Only a
    dead (or frozen) worker's leases lapse. Returns how many leases were extended."""
    if not write_ids:
        return 0
    until = timezone.now() + timedelta(seconds=settings.WRITEBACK_LEASE_SECONDS)
    if len(write_ids) == 1:  # the fence before each send: a statement built once
        return update_write_row(write_ids[0], {"lease_owner": worker_id}, {"lease_expires_at": until})
    return Write.objects.filter(pk__in=write_ids, lease_owner=worker_id).update(lease_expires_at=until)


def has_open_work(
    *, holds: Holds | None = None, tenant_ids: list[int] | None = None, exclude_tenants=()
) -> bool:
    """Is anything left that a worker will send without a person acting? (Waiting retries count;
    held queues, parked streams and writes awaiting approval do not.)"""
    qs = _scoped(Write.objects.filter(state__in=CLAIMABLE), holds, tenant_ids, exclude_tenants)
    return qs.exists()


def release(write: Write, *, restore_outcome: str | None = None) -> None:
    """Gives a claimed write back without trying it (held just before sending, or over its tenant's cap).

    Its last outcome goes back to the pre-claim value `write` carries (from `claim_due`): an "in_flight"
    left by a worker that died mid-call must survive the release, or the next claimer would send the
    write again without first looking for it on the target."""
    outcome = write.last_outcome if restore_outcome is None else restore_outcome
    Write.objects.filter(pk=write.pk, lease_owner=write.lease_owner).update(
        lease_owner="", lease_expires_at=None, last_outcome=outcome, updated_at=timezone.now()
    )
