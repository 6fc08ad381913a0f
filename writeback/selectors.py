"""Reads: the querysets the API and the console show, scoped to what the person may see."""

import re
from collections.abc import Iterable

from django.db.models import Case, Count, IntegerField, Q, QuerySet, Value, When

from writeback.models import (
    Alert,
    AlertDelivery,
    AlertRoute,
    AlertState,
    ApiToken,
    AuditEntry,
    BusinessEvent,
    Severity,
    Tenant,
    Write,
)
from writeback.services.tenants import tenants_for_user
from writeback.states import CLAIMABLE


def tenants_visible_to(user, token: ApiToken | None = None) -> QuerySet[Tenant]:
    tenants = tenants_for_user(user)
    if token is not None:
        scoped = list(token.tenants.values_list("pk", flat=True))
        if scoped:
            tenants = tenants.filter(pk__in=scoped)
    return tenants


def writes_visible_to(user, token: ApiToken | None = None) -> QuerySet[Write]:
    return Write.objects.filter(tenant__in=tenants_visible_to(user, token)).select_related("tenant", "event")


def events_visible_to(user, token: ApiToken | None = None) -> QuerySet[BusinessEvent]:
    return BusinessEvent.objects.filter(tenant__in=tenants_visible_to(user, token)).select_related("tenant")


# "Observation/123" or "Observation/123/_history/2", as the console shows an EHR resource.
_EHR_REFERENCE = re.compile(r"([A-Z][A-Za-z]+)/([^/\s]+(?:/_history/[^/\s]+)?)")


def write_search(qs: QuerySet[Write], text: str) -> QuerySet[Write]:
    """Free-text search on ids and clinical keys: write/event id, idempotency key, correlation id,
    patient id or MRN, EHR resource id (optionally `id/_history/version`, or the reference as shown:
    `Type/id` and `Type/id/_history/version`, where the type narrows the match)."""
    text = text.strip()
    if not text:
        return qs
    typed = _EHR_REFERENCE.fullmatch(text)
    if typed is not None:
        return _key_search(qs, text) | _key_search(qs.filter(resource_type=typed[1]), typed[2])
    return _key_search(qs, text)


def _key_search(qs: QuerySet[Write], text: str) -> QuerySet[Write]:
    resource_id, _, version = text.partition("/_history/")
    q = (
        Q(correlation_id=text)
        | Q(patient_ref=text)
        | Q(target_resource_id=resource_id)
        | Q(event__idempotency_key=text)
        | Q(event__source_message_id=text)
        | Q(event__patient_identifier__value=text)
    )
    if version:
        q = Q(target_resource_id=resource_id, target_version=version)
    if _looks_like_uuid(text):
        q |= Q(uid=text) | Q(event__uid=text)
    return qs.filter(q)


def audit_for_write(write: Write) -> QuerySet[AuditEntry]:
    return AuditEntry.objects.filter(write_uid=str(write.uid)).order_by("seq")


def _looks_like_uuid(text: str) -> bool:
    import uuid

    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def alert_routes_visible_to(user) -> QuerySet[AlertRoute]:
    """Active routes of the person's tenants, and the routes for all tenants."""
    return (
        AlertRoute.objects.filter(removed_at__isnull=True)
        .filter(Q(tenant__in=tenants_for_user(user)) | Q(tenant__isnull=True))
        .select_related("tenant")
        .order_by("name")
    )


def alert_deliveries(alert: Alert) -> QuerySet[AlertDelivery]:
    return alert.deliveries.select_related("route").order_by("created_at", "id")


# The console's alert list: the most urgent first.
ALERT_URGENCY = Case(
    When(severity=Severity.PAGE, then=Value(0)),
    When(severity=Severity.CRITICAL, then=Value(1)),
    When(severity=Severity.WARNING, then=Value(2)),
    default=Value(3),
    output_field=IntegerField(),
)
ALERT_STATUS_FILTERS = {
    "open": AlertState.FIRING,
    "acknowledged": AlertState.ACKNOWLEDGED,
    "resolved": AlertState.RESOLVED,
}


def alerts_for_list(tenants: QuerySet[Tenant], *, status: str, severity: str) -> QuerySet[Alert]:
    """Alerts of these tenants in one state ("open" = firing; anything else = all), of one severity
    if it names one."""
    alerts = Alert.objects.filter(tenant__in=tenants).select_related("tenant", "write", "acknowledged_by")
    if status in ALERT_STATUS_FILTERS:
        alerts = alerts.filter(state=ALERT_STATUS_FILTERS[status])
    if severity in Severity.values:
        alerts = alerts.filter(severity=severity)
    return alerts.defer("write__payload").annotate(rank=ALERT_URGENCY).order_by("rank", "-created_at")


def held_queue_waiting(alerts: Iterable[Alert]) -> dict[tuple[int, str], int]:
    """For the open alerts that hold a queue: how many writes wait in it, by (tenant id, resource type)."""
    held = [(a.tenant_id, a.resource_type) for a in alerts if a.holds_queue and a.is_open]
    if not held:
        return {}
    rows = (
        Write.objects.filter(tenant_id__in={t for t, _ in held}, resource_type__in={r for _, r in held})
        .filter(state__in=CLAIMABLE)
        .values("tenant_id", "resource_type")
        .annotate(n=Count("id"))
    )
    return {(r["tenant_id"], r["resource_type"]): r["n"] for r in rows}
