"""Retention: PHI payload bodies of settled writes are purged after a tenant's retention period.

What goes: the event's raw and canonical payloads, the write's FHIR resource (and the previews, shadow
divergences and read-back diffs that quote it), the attempts' response bodies, the conflicts' base /
ours / theirs snapshots and their field diffs. What stays: every hash (the event's content hash, the
write's payload hash, the attempts' request body hashes), identifiers, states, references, and the
whole audit trail, which never held payloads, so `verify_audit_chain` still passes. An event is purged
only once every write of it is in a final state and older than the period; a write that is still open
(pending, awaiting approval, in conflict, failed terminal...) is never touched.
"""

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from writeback.errors import DomainError
from writeback.models import AuditAction, BusinessEvent, Conflict, Tenant, Write, WriteAttempt
from writeback.services import audit
from writeback.services.permissions import require
from writeback.services.tenants import save_tenant_change
from writeback.states import FINAL

BATCH = 500
# Below a week, a write could lose its payload while people still act on it (replay, compensation).
MIN_DAYS = 7


def tenant_set_retention(
    *, tenant: Tenant, user: Any, days: int | None, request_id: str = "", channel: str = "api"
) -> Tenant:
    """Sets (or, with None, turns off) the tenant's retention period. Integration engineers; audited."""
    require(
        user,
        "configure_tenant",
        tenant,
        object_type="tenant",
        object_id=tenant.slug,
        request_id=request_id,
        channel=channel,
    )
    if days is not None and not (MIN_DAYS <= days <= 36500):
        raise DomainError(
            400, "invalid-value", f"retention is between {MIN_DAYS} and 36500 days, or off", "retention_days"
        )
    if days == tenant.retention_days:
        raise DomainError(409, "no-change", f"retention for {tenant.slug} is already {days or 'off'}")
    return save_tenant_change(
        tenant,
        AuditAction.TENANT_RETENTION_CHANGED,
        {"retention_days": days},
        actor=user,
        request_id=request_id,
        data={"old": tenant.retention_days, "new": days, "channel": channel},
    )


@dataclass
class PurgeReport:
    tenant: str
    cutoff: Any
    events: int = 0
    writes: int = 0
    attempts: int = 0
    conflicts: int = 0
    dry_run: bool = False

    def __str__(self) -> str:
        verb = "would purge" if self.dry_run else "purged"
        return (
            f"{self.tenant}: {verb} {self.events} event(s), {self.writes} write(s), {self.attempts} "
            f"attempt body(ies), {self.conflicts} conflict snapshot(s) older than "
            f"{self.cutoff:%Y-%m-%d %H:%M}"
        )


def purgeable_events(tenant: Tenant, cutoff) -> Any:
    """Events of `tenant` received before `cutoff`, not purged yet, with no write outside a final state."""
    open_writes = Write.objects.filter(tenant=tenant).exclude(state__in=FINAL).values("event_id")
    return (
        BusinessEvent.objects.filter(tenant=tenant, received_at__lt=cutoff)
        .exclude(raw_payload__has_key="purged_at")
        .exclude(pk__in=open_writes)
    )


def purge_tenant(tenant: Tenant, *, now=None, dry_run: bool = False, actor: Any = None) -> PurgeReport:
    now = now or timezone.now()
    if tenant.retention_days is None:
        return PurgeReport(tenant.slug, now, dry_run=dry_run)
    cutoff = now - timedelta(days=tenant.retention_days)
    report = PurgeReport(tenant.slug, cutoff, dry_run=dry_run)
    event_ids = list(purgeable_events(tenant, cutoff).values_list("pk", flat=True))
    for start in range(0, len(event_ids), BATCH):
        _purge_batch(tenant, event_ids[start : start + BATCH], now, report, dry_run)
    if not dry_run and report.events:
        audit.record(
            AuditAction.PAYLOADS_PURGED,
            actor=actor or "command:purge_payloads",
            tenant=tenant.slug,
            object_type="tenant",
            object_id=tenant.slug,
            data={
                "retention_days": tenant.retention_days,
                "cutoff": cutoff.isoformat(),
                "events": report.events,
                "writes": report.writes,
                "attempts": report.attempts,
                "conflicts": report.conflicts,
            },
        )
    return report


def _purge_batch(tenant: Tenant, ids: list[int], now, report: PurgeReport, dry_run: bool) -> None:
    marker = {"purged_at": now.isoformat()}
    with transaction.atomic():
        # Re-checked under the lock: a write replayed or reopened since the listing keeps its event.
        writes = Write.objects.select_for_update().filter(event_id__in=ids)
        still_open = set(writes.exclude(state__in=FINAL).values_list("event_id", flat=True))
        ids = [i for i in ids if i not in still_open]
        write_ids = list(
            Write.objects.filter(event_id__in=ids, payload_purged_at__isnull=True).values_list(
                "pk", flat=True
            )
        )
        attempts = WriteAttempt.objects.filter(write_id__in=write_ids).exclude(response_body="")
        conflicts = Conflict.objects.filter(write_id__in=write_ids)
        report.events += len(ids)
        report.writes += len(write_ids)
        report.attempts += attempts.count()
        report.conflicts += conflicts.count()
        if dry_run:
            return
        BusinessEvent.objects.filter(pk__in=ids).update(raw_payload=marker, canonical_payload=marker)
        Write.objects.filter(pk__in=write_ids).update(
            payload=marker, preview=None, divergence=None, readback_diff=[], payload_purged_at=now
        )
        attempts.update(response_body="")
        conflicts.update(base=None, ours=marker, theirs=None, diff=[], resolution=None)


def purge_payloads(*, tenant: Tenant | None = None, dry_run: bool = False, now=None) -> list[PurgeReport]:
    tenants = [tenant] if tenant is not None else Tenant.objects.filter(retention_days__isnull=False)
    return [purge_tenant(t, now=now, dry_run=dry_run) for t in tenants]


def is_purged(write: Write) -> bool:
    return write.payload_purged_at is not None
