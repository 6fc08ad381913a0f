"""Raising and acknowledging alerts.

An open alert with `holds_queue=True` (raised for very-high-risk terminal failures) holds its tenant x
resource type queue: `writeback.services.holds.current_holds` reads open alerts every claim cycle. So an
acknowledgement is all it takes to release the queue; nothing else is switched back on.

Requests the HTTP layer refused to make (a URL outside the tenant: a search's next link, a redirect) come
back from adapters as `OutboundRefusal`s; `outbound_refusals_record` audits each one and raises one alert
per tenant and URL while it stays unacknowledged.
"""

from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.utils import timezone

from adapters.base import OutboundRefusal
from writeback.errors import DomainError
from writeback.models import Alert, AuditAction, Severity, Tenant, Write
from writeback.services import audit
from writeback.services.permissions import require

OUTBOUND_REFUSED = "outbound-refused"


def alert_raise(
    *,
    tenant: Tenant,
    code: str,
    message: str,
    severity: str,
    write: Write | None = None,
    resource_type: str = "",
    holds_queue: bool = False,
    drafts: list[audit.AuditDraft] | None = None,
) -> Alert:
    """Creates an alert and its `alert.raised` audit entry. A caller that records its audit entries
    together at the end of its transaction passes `drafts`; otherwise the entry is recorded here."""
    alert = Alert.objects.create(
        tenant=tenant,
        write=write,
        resource_type=resource_type,
        severity=severity,
        code=code,
        message=message[:4000],
        holds_queue=holds_queue,
    )
    entry = audit.draft(
        AuditAction.ALERT_RAISED,
        actor="system",
        tenant=tenant.slug,
        object_type="alert",
        object_id=str(alert.uid),
        write_uid=str(write.uid) if write else "",
        correlation_id=write.correlation_id if write else "",
        data={"severity": severity, "code": code, "holds_queue": holds_queue, "reason": message[:500]},
    )
    if drafts is not None:
        drafts.append(entry)
    else:
        audit.record_many([entry])
    return alert


def outbound_refusals_record(
    tenant: Tenant,
    refusals: Iterable[OutboundRefusal],
    *,
    write: Write | None = None,
    actor: Any = "system",
    request_id: str = "",
) -> int:
    """Audits each refused request (`outbound.refused`) and raises a critical alert for it, unless an
    open alert already names that URL for this tenant (a worker retrying a check by read would raise one
    per cycle). Returns how many refusals were recorded."""
    refusals = list(refusals)
    if not refusals:
        return 0
    with transaction.atomic():
        drafts: list[audit.AuditDraft] = []
        for refusal in refusals:
            message = f"Not requested, no credential sent: {refusal.reason}"
            open_alert = Alert.objects.filter(
                tenant=tenant, code=OUTBOUND_REFUSED, message=message[:4000], acknowledged_at__isnull=True
            ).exists()
            if not open_alert:
                alert_raise(
                    tenant=tenant,
                    code=OUTBOUND_REFUSED,
                    message=message,
                    severity=Severity.CRITICAL,
                    write=write,
                    resource_type=write.resource_type if write else "",
                    drafts=drafts,
                )
            name, user_id = audit.actor_fields(actor)
            drafts.append(
                audit.AuditDraft(
                    action=AuditAction.OUTBOUND_REFUSED,
                    actor=name,
                    actor_user_id=user_id,
                    tenant=tenant.slug,
                    object_type="write" if write else "tenant",
                    object_id=str(write.uid) if write else tenant.slug,
                    write_uid=str(write.uid) if write else "",
                    correlation_id=refusal.correlation_id or (write.correlation_id if write else ""),
                    request_id=request_id,
                    target_ack=False,
                    data={
                        "source": refusal.source,
                        "method": refusal.method,
                        "url": refusal.url,
                        "reason": refusal.reason[:500],
                        "alerted": not open_alert,
                    },
                )
            )
        audit.record_many(drafts)
    return len(refusals)


def alert_acknowledge(
    *, alert: Alert, user: Any, note: str, request_id: str = "", channel: str = "api"
) -> Alert:
    require(
        user,
        "acknowledge_alert",
        alert.tenant,
        object_type="alert",
        object_id=str(alert.uid),
        request_id=request_id,
        channel=channel,
    )
    note = (note or "").strip()
    if not note:
        raise DomainError(400, "note-required", "say what was done about this alert", "note")
    with transaction.atomic():
        now = timezone.now()
        # Conditional UPDATE: two people acknowledging at once cannot both succeed.
        changed = Alert.objects.filter(pk=alert.pk, acknowledged_at__isnull=True).update(
            acknowledged_by=user, acknowledged_at=now, ack_note=note
        )
        if changed != 1:
            raise DomainError(409, "already-acknowledged", "this alert was already acknowledged")
        alert = Alert.objects.select_related("tenant", "write").get(pk=alert.pk)
        released = alert.holds_queue and not queue_held(alert.tenant_id, alert.resource_type)
        audit.record(
            AuditAction.ALERT_ACKNOWLEDGED,
            actor=user,
            tenant=alert.tenant.slug,
            object_type="alert",
            object_id=str(alert.uid),
            write_uid=str(alert.write.uid) if alert.write else "",
            correlation_id=alert.write.correlation_id if alert.write else "",
            request_id=request_id,
            data={
                "severity": alert.severity,
                "code": alert.code,
                "note": note,
                "resource_type": alert.resource_type,
                "held_queue": alert.holds_queue,
                "queue_released": released,
            },
        )
    return alert


def queue_held(tenant_id: int, resource_type: str) -> bool:
    """Does an open alert still hold this tenant x resource type queue?"""
    return Alert.objects.filter(
        tenant_id=tenant_id, resource_type=resource_type, holds_queue=True, acknowledged_at__isnull=True
    ).exists()
