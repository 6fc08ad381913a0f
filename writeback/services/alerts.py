"""Acknowledging alerts.

An open alert with `holds_queue=True` (raised for very-high-risk terminal failures) holds its tenant x
resource type queue: `writeback.sync.holds.current_holds` reads open alerts every claim cycle. So an
acknowledgement is all it takes to release the queue; nothing else is switched back on.
"""

from typing import Any

from django.db import transaction
from django.utils import timezone

from writeback.errors import DomainError
from writeback.models import Alert, AuditAction
from writeback.services import audit
from writeback.services.permissions import require


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
