"""Bulk replay of failed writes by an admin: preview first, then one item at a time at a capped rate,
abortable, every item audited.

How items run: `bulk_replay_start` only records the operation and its items; the sync workers' housekeeping
calls `bulk_process_due()` about once a second (the web process never starts background work).
`bulk_process` is idempotent and safe to call from several workers at once (items are claimed under a
row lock), and the rate is enforced from the operation's start time, so however many workers there are,
item n is never replayed before started_at + n / rate. When no worker has touched a running operation
for a while, the console says so: no sync worker is running.
"""

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from writeback.errors import DomainError
from writeback.models import AuditAction, BulkItem, BulkOperation, Write
from writeback.services import audit
from writeback.services.permissions import ADMIN, ActionRefused, refuse, require, roles_of
from writeback.services.replay import write_replay
from writeback.states import InvalidTransition, WriteState

log = logging.getLogger(__name__)

ELIGIBLE = (WriteState.FAILED_TERMINAL, WriteState.FAILED_RETRYABLE)
MAX_ITEMS = 500
SAMPLE_SIZE = 10
MIN_RATE, MAX_RATE, DEFAULT_RATE = 0.2, 20.0, 2.0
# A running operation no worker has processed for this long: the workers are down.
STALE_AFTER = timedelta(seconds=15)


@dataclass
class BulkPreview:
    count: int
    sample: list[Write]
    uids: list[str]
    tenants: list[str]
    truncated: bool
    ineligible: int


def bulk_replay_preview(
    *, user: Any, writes: QuerySet[Write], request_id: str = "", channel: str = "api"
) -> BulkPreview:
    """How many of these writes a bulk replay would take, and a sample to check before starting."""
    _require_admin(user, request_id, channel)
    chosen = list(
        writes.filter(state__in=ELIGIBLE).select_related("tenant", "event").order_by("id")[: MAX_ITEMS + 1]
    )
    truncated = len(chosen) > MAX_ITEMS
    chosen = chosen[:MAX_ITEMS]
    tenants = sorted({w.tenant.slug for w in chosen})
    for tenant in {w.tenant for w in chosen}:
        require(user, "replay", tenant, object_type="bulk", request_id=request_id, channel=channel)
    ineligible = writes.exclude(state__in=ELIGIBLE).count()
    return BulkPreview(
        count=len(chosen),
        sample=chosen[:SAMPLE_SIZE],
        uids=[str(w.uid) for w in chosen],
        tenants=tenants,
        truncated=truncated,
        ineligible=ineligible,
    )


def bulk_replay_start(
    *,
    user: Any,
    writes: QuerySet[Write],
    reason: str,
    rate_per_second: float = DEFAULT_RATE,
    request_id: str = "",
    channel: str = "api",
) -> BulkOperation:
    _require_admin(user, request_id, channel)
    reason = (reason or "").strip()
    if not reason:
        raise DomainError(400, "reason-required", "say why these writes are replayed", "reason")
    try:
        rate = float(rate_per_second)
    except (TypeError, ValueError):
        raise DomainError(400, "invalid-value", "the rate must be a number of writes per second", "rate")
    if not (MIN_RATE <= rate <= MAX_RATE) or math.isnan(rate):
        raise DomainError(
            400, "invalid-value", f"the rate must be between {MIN_RATE} and {MAX_RATE} per second", "rate"
        )
    chosen = list(writes.filter(state__in=ELIGIBLE).select_related("tenant").order_by("id")[: MAX_ITEMS + 1])
    if not chosen:
        raise DomainError(409, "nothing-to-replay", "none of the selected writes is failed any more")
    if len(chosen) > MAX_ITEMS:
        raise DomainError(
            400, "too-many", f"a bulk replay takes at most {MAX_ITEMS} writes; narrow the selection"
        )
    for tenant in {w.tenant for w in chosen}:
        require(user, "replay", tenant, object_type="bulk", request_id=request_id, channel=channel)
    with transaction.atomic():
        now = timezone.now()
        op = BulkOperation.objects.create(
            kind=BulkOperation.Kind.REPLAY,
            mode="resend",
            reason=reason,
            rate_per_second=rate,
            requested_by=user,
            created_at=now,
            started_at=now,
            total=len(chosen),
        )
        BulkItem.objects.bulk_create(
            BulkItem(operation=op, position=i, write=w) for i, w in enumerate(chosen)
        )
        audit.record(
            AuditAction.BULK_STARTED,
            actor=user,
            object_type="bulk",
            object_id=str(op.uid),
            request_id=request_id,
            data={
                "kind": op.kind,
                "mode": op.mode,
                "reason": reason,
                "rate_per_second": rate,
                "count": len(chosen),
                "tenants": sorted({w.tenant.slug for w in chosen}),
                "writes": [str(w.uid) for w in chosen],
            },
        )
    return op


def bulk_abort(*, op: BulkOperation, user: Any, request_id: str = "", channel: str = "api") -> BulkOperation:
    _require_admin(user, request_id, channel)
    with transaction.atomic():
        changed = BulkOperation.objects.filter(pk=op.pk, status=BulkOperation.Status.RUNNING).update(
            status=BulkOperation.Status.ABORTED, aborted_by=user, finished_at=timezone.now()
        )
        if changed != 1:
            raise DomainError(409, "not-running", "this bulk operation is no longer running")
        skipped = BulkItem.objects.filter(operation=op, status=BulkItem.Status.QUEUED).update(
            status=BulkItem.Status.SKIPPED, processed_at=timezone.now()
        )
        BulkOperation.objects.filter(pk=op.pk).update(skipped=F("skipped") + skipped)
        op.refresh_from_db()
        audit.record(
            AuditAction.BULK_ABORTED,
            actor=user,
            object_type="bulk",
            object_id=str(op.uid),
            request_id=request_id,
            data={"succeeded": op.succeeded, "failed": op.failed, "skipped": skipped},
        )
    return op


def worker_stalled(op: BulkOperation, now: datetime | None = None) -> bool:
    """A running operation no sync worker has processed for a while: the workers are down."""
    now = now or timezone.now()
    last = op.heartbeat_at or op.started_at
    return op.is_running and now - last > STALE_AFTER


def bulk_process(op: BulkOperation, *, now: datetime | None = None) -> int:
    """Replays the items of `op` that are due now under its rate; returns how many it processed."""
    done = 0
    while True:
        now_ = now or timezone.now()
        with transaction.atomic():
            op = BulkOperation.objects.select_related("requested_by").get(pk=op.pk)
            if not op.is_running:
                return done
            allowed = math.floor((now_ - op.started_at).total_seconds() * op.rate_per_second) + 1
            if op.processed >= allowed:
                BulkOperation.objects.filter(pk=op.pk).update(heartbeat_at=now_)
                return done
            item = (
                BulkItem.objects.select_for_update(skip_locked=True)
                .select_related("write__tenant", "write__event")
                .filter(operation=op, status=BulkItem.Status.QUEUED)
                .order_by("position")
                .first()
            )
            if item is None:
                _finish(op, now_)
                return done
            _process_item(op, item, now_)
            done += 1


def bulk_process_due(now: datetime | None = None) -> int:
    """Processes what is due in every running operation (for the sync worker loop)."""
    total = 0
    for op in BulkOperation.objects.filter(status=BulkOperation.Status.RUNNING).order_by("created_at"):
        total += bulk_process(op, now=now)
    return total


def _process_item(op: BulkOperation, item: BulkItem, now: datetime) -> None:
    write = item.write
    outcome, error, result = BulkItem.Status.DONE, "", None
    try:
        with transaction.atomic():
            result = write_replay(
                write=write,
                user=op.requested_by,
                mode=op.mode,
                reason=f"bulk replay {op.uid}: {op.reason}",
                channel="console",
            )
    except (DomainError, ActionRefused, InvalidTransition) as exc:
        outcome, error = BulkItem.Status.FAILED, str(exc)
    item.status, item.error, item.processed_at, item.result_write = outcome, error[:2000], now, result
    item.save(update_fields=["status", "error", "processed_at", "result_write"])
    counter = "succeeded" if outcome == BulkItem.Status.DONE else "failed"
    BulkOperation.objects.filter(pk=op.pk).update(**{counter: F(counter) + 1, "heartbeat_at": now})
    audit.record(
        AuditAction.BULK_ITEM_PROCESSED,
        actor=op.requested_by,
        tenant=write.tenant.slug,
        object_type="bulk",
        object_id=str(op.uid),
        write_uid=str(write.uid),
        event_uid=str(write.event.uid),
        correlation_id=write.correlation_id,
        data={"position": item.position, "outcome": outcome, "error": error[:500], "mode": op.mode},
    )


def _finish(op: BulkOperation, now: datetime) -> None:
    changed = BulkOperation.objects.filter(pk=op.pk, status=BulkOperation.Status.RUNNING).update(
        status=BulkOperation.Status.DONE, finished_at=now, heartbeat_at=now
    )
    if changed:
        op.refresh_from_db()
        audit.record(
            AuditAction.BULK_FINISHED,
            actor=op.requested_by,
            object_type="bulk",
            object_id=str(op.uid),
            data={"succeeded": op.succeeded, "failed": op.failed, "skipped": op.skipped},
        )


def _require_admin(user: Any, request_id: str, channel: str) -> None:
    # Replaying many writes at once is an admin's call (single replays are open to engineers too).
    require(user, "replay", None, object_type="bulk", request_id=request_id, channel=channel)
    if not (user.is_superuser or ADMIN in roles_of(user)):
        refuse(
            user,
            "bulk_replay",
            "bulk replay needs the admin role",
            rule="role-required",
            object_type="bulk",
            request_id=request_id,
            channel=channel,
        )
