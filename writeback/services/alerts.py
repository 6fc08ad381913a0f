"""Raising, acknowledging, resolving and escalating alerts: the one home of the alert lifecycle.

An alert fires (`alert_raise`; a repeat while it fires counts an occurrence), is acknowledged by a
person, and is resolved by a person or, for threshold alerts, by the evaluation once the measure is back
below its limit. Firing, resolving and escalating each create delivery rows for the matching routes in
the same transaction (`writeback.services.alert_delivery`).

An open alert with `holds_queue=True` (raised for very-high-risk terminal failures) holds its tenant x
resource type queue: `writeback.services.holds.current_holds` reads open alerts every claim cycle. So an
acknowledgement is all it takes to release the queue; nothing else is switched back on.

Requests the HTTP layer refused to make (a URL outside the tenant: a search's next link, a redirect) come
back from adapters as `OutboundRefusal`s; `outbound_refusals_record` audits each one and raises one alert
per tenant and URL while it stays unacknowledged.
"""

import hashlib
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from adapters.base import OutboundRefusal
from writeback.errors import DomainError
from writeback.models import Alert, AlertDelivery, AlertState, AuditAction, Severity, Tenant, Write
from writeback.services import audit
from writeback.services.alert_delivery import deliveries_enqueue
from writeback.services.permissions import require

log = logging.getLogger(__name__)

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
    subject: str = "",
    details: dict[str, Any] | None = None,
    drafts: list[audit.AuditDraft] | None = None,
) -> Alert:
    """Raises an alert, or counts one more occurrence of the firing alert of the same tenant, kind
    (`code`) and subject (a write's alert is about that write, any other about its tenant, unless
    `subject` says otherwise). A new alert gets its `alert.raised` audit entry and its deliveries in
    the same transaction; a repeat gets neither (no flood). A caller that records its audit entries
    together at the end of its transaction passes `drafts`; otherwise the entry is recorded here."""
    subject = (subject or (str(write.uid) if write else "tenant"))[:300]
    now = timezone.now()
    with transaction.atomic():
        existing = _firing(tenant, code, subject)
        if existing is None:
            try:
                # A savepoint: another process raising the same alert at once hits the unique
                # constraint, and this one then counts an occurrence on theirs.
                with transaction.atomic():
                    alert = Alert.objects.create(
                        tenant=tenant,
                        write=write,
                        resource_type=resource_type,
                        severity=severity,
                        code=code,
                        subject=subject,
                        message=message[:4000],
                        details=details or {},
                        holds_queue=holds_queue,
                        created_at=now,
                        last_seen_at=now,
                    )
            except IntegrityError:
                existing = _firing(tenant, code, subject)
                if existing is None:
                    raise
        if existing is not None:
            Alert.objects.filter(pk=existing.pk).update(occurrences=F("occurrences") + 1, last_seen_at=now)
            existing.refresh_from_db()
            return existing
        deliveries_enqueue(alert, AlertDelivery.Event.FIRING)
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


def _firing(tenant: Tenant, code: str, subject: str) -> Alert | None:
    return (
        Alert.objects.select_for_update()
        .filter(tenant=tenant, code=code, subject=subject, state=AlertState.FIRING)
        .first()
    )


def outbound_refusals_record(
    tenant: Tenant,
    refusals: Iterable[OutboundRefusal],
    *,
    write: Write | None = None,
    actor: Any = "system",
    request_id: str = "",
) -> int:
    """Audits each refused request (`outbound.refused`) and raises a critical alert for it; while that
    alert fires, the same refusal counts an occurrence on it (a worker retrying a check by read would
    raise one per cycle). Returns how many refusals were recorded."""
    refusals = list(refusals)
    if not refusals:
        return 0
    with transaction.atomic():
        drafts: list[audit.AuditDraft] = []
        for refusal in refusals:
            message = f"Not requested, no credential sent: {refusal.reason}"
            alert = alert_raise(
                tenant=tenant,
                code=OUTBOUND_REFUSED,
                message=message,
                severity=Severity.CRITICAL,
                write=write,
                resource_type=write.resource_type if write else "",
                subject="sha256:" + hashlib.sha256(message[:4000].encode()).hexdigest(),
                drafts=drafts,
            )
            alerted = alert.occurrences == 1
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
                        "alerted": alerted,
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
        changed = (
            Alert.objects.filter(pk=alert.pk, acknowledged_at__isnull=True)
            .exclude(state=AlertState.RESOLVED)
            .update(acknowledged_by=user, acknowledged_at=now, ack_note=note, state=AlertState.ACKNOWLEDGED)
        )
        if changed != 1:
            raise DomainError(409, "already-acknowledged", "this alert was already acknowledged or resolved")
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


def alert_resolve(
    *,
    alert: Alert,
    actor: Any,
    note: str,
    request_id: str = "",
    channel: str = "api",
    details: dict[str, Any] | None = None,
) -> Alert:
    """Closes an alert for good and announces it (one `resolved` delivery per route). A person needs
    the `resolve_alert` role and a note; the threshold evaluation resolves as "system". Resolving a
    firing alert acknowledges it too, so a queue it held is released."""
    if not isinstance(actor, str):
        require(
            actor,
            "resolve_alert",
            alert.tenant,
            object_type="alert",
            object_id=str(alert.uid),
            request_id=request_id,
            channel=channel,
        )
    note = (note or "").strip()
    if not note:
        raise DomainError(400, "note-required", "say why this alert is resolved", "note")
    user = None if isinstance(actor, str) else actor
    with transaction.atomic():
        now = timezone.now()
        current = Alert.objects.select_for_update().filter(pk=alert.pk).first()
        if current is None or current.state == AlertState.RESOLVED:
            raise DomainError(409, "already-resolved", "this alert was already resolved")
        fields: dict[str, Any] = {
            "state": AlertState.RESOLVED,
            "resolved_at": now,
            "resolved_by": user,
            "resolve_note": note[:4000],
        }
        if details:
            fields["details"] = {**current.details, **details}
        if current.acknowledged_at is None and user is not None:
            fields.update(acknowledged_at=now, acknowledged_by=user, ack_note=note[:4000])
        Alert.objects.filter(pk=alert.pk).update(**fields)
        alert = Alert.objects.select_related("tenant", "write").get(pk=alert.pk)
        deliveries_enqueue(alert, AlertDelivery.Event.RESOLVED)
        audit.record(
            AuditAction.ALERT_RESOLVED,
            actor=actor,
            tenant=alert.tenant.slug,
            object_type="alert",
            object_id=str(alert.uid),
            write_uid=str(alert.write.uid) if alert.write else "",
            correlation_id=alert.write.correlation_id if alert.write else "",
            request_id=request_id,
            data={
                "severity": alert.severity,
                "code": alert.code,
                "note": note[:500],
                "was": current.state,
                "occurrences": alert.occurrences,
            },
        )
    return alert


def escalation_minutes(tenant: Tenant) -> int:
    configured = (tenant.settings or {}).get("alerts", {}).get("escalation_minutes")
    try:
        minutes = int(configured) if configured is not None else settings.WRITEBACK_ALERT_ESCALATION_MINUTES
    except (TypeError, ValueError):
        minutes = settings.WRITEBACK_ALERT_ESCALATION_MINUTES
    return max(1, minutes)


def alerts_escalate_due(now: datetime | None = None, limit: int = 100) -> int:
    """Page alerts still firing (nobody acknowledged them) past their tenant's escalation time go once
    more, to the escalation routes. `escalated_at` is set by a conditional update, so each alert
    escalates once however many workers sweep. Returns how many escalated."""
    now = now or timezone.now()
    candidates = list(
        Alert.objects.filter(state=AlertState.FIRING, severity=Severity.PAGE, escalated_at__isnull=True)
        .select_related("tenant")
        .order_by("created_at")[:limit]
    )
    escalated = 0
    for alert in candidates:
        minutes = escalation_minutes(alert.tenant)
        if alert.created_at > now - timedelta(minutes=minutes):
            continue
        with transaction.atomic():
            won = Alert.objects.filter(
                pk=alert.pk, state=AlertState.FIRING, escalated_at__isnull=True
            ).update(escalated_at=now)
            if won != 1:
                continue
            routes = deliveries_enqueue(alert, AlertDelivery.Event.ESCALATION)
            audit.record(
                AuditAction.ALERT_ESCALATED,
                actor="system",
                tenant=alert.tenant.slug,
                object_type="alert",
                object_id=str(alert.uid),
                data={"code": alert.code, "after_minutes": minutes, "routes": routes},
            )
        escalated += 1
    return escalated
