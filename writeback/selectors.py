"""Reads: the querysets the API and the console show, scoped to what the person may see."""

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Case, Count, IntegerField, Min, Q, QuerySet, Value, When
from django.utils import timezone

from writeback.models import (
    Alert,
    AlertDelivery,
    AlertRoute,
    AlertState,
    ApiToken,
    AuditEntry,
    BusinessEvent,
    ReconciliationFinding,
    ReconciliationRun,
    Severity,
    Tenant,
    Write,
)
from writeback.services.tenants import tenants_for_user
from writeback.states import CLAIMABLE, NEEDS_OPERATOR, WriteState


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


def reconciliation_findings(
    tenants: QuerySet[Tenant], *, kind: str = "", state: str = "", tenant_slug: str = ""
) -> QuerySet[ReconciliationFinding]:
    """Findings of the tenants a person may see, filtered; open ones first, newest first."""
    qs = ReconciliationFinding.objects.filter(tenant__in=tenants).select_related(
        "tenant", "write", "run", "decided_by", "resolution_write", "task"
    )
    if kind in ReconciliationFinding.Kind.values:
        qs = qs.filter(kind=kind)
    if state in ReconciliationFinding.State.values:
        qs = qs.filter(state=state)
    if tenant_slug:
        qs = qs.filter(tenant__slug=tenant_slug)
    return qs.defer("write__payload", "write__context").order_by("-created_at", "-id")


def reconciliation_counts(tenants: QuerySet[Tenant]) -> dict[str, dict[str, int]]:
    """{kind: {state: n}} over the tenants a person may see (one grouped query)."""
    counts: dict[str, dict[str, int]] = {k: {} for k in ReconciliationFinding.Kind.values}
    rows = (
        ReconciliationFinding.objects.filter(tenant__in=tenants)
        .values("kind", "state")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in rows:
        counts[row["kind"]][row["state"]] = row["n"]
    return counts


def reconciliation_runs(tenants: QuerySet[Tenant], limit: int = 5) -> list[ReconciliationRun]:
    return list(ReconciliationRun.objects.filter(tenant__in=tenants).select_related("tenant")[:limit])


# -- queue gauges (Prometheus, alerts) ---------------------------------------------------------------

# Writes that are not settled: waiting to be sent, for approval, or for an operator.
OPEN_STATES = tuple(dict.fromkeys((*CLAIMABLE, *NEEDS_OPERATOR)))


@dataclass
class TenantQueue:
    slug: str
    vendor: str
    open_by_state: dict[str, int] = field(default_factory=dict)
    oldest_pending_seconds: float = 0.0
    oldest_unknown_seconds: float = 0.0
    open_alerts: dict[str, int] = field(default_factory=dict)

    @property
    def queue_depth(self) -> int:
        return sum(self.open_by_state.get(s, 0) for s in CLAIMABLE)


@dataclass
class QueueSnapshot:
    at: datetime
    tenants: list[TenantQueue]


def queue_gauges(tenant_ids: list[int], *, now: datetime | None = None) -> QueueSnapshot:
    """Per tenant: open writes by state, how long the longest-waiting due write has waited (since its
    `next_attempt_at`, pending writes), the age of the oldest write whose outcome is unknown (since it
    entered that state), and firing alerts.

    Three queries whatever the size of the ledger; settled writes (committed and the like, the bulk of
    a ledger) are never read, the (state, next_attempt_at) index narrows to the open ones."""
    now = now or timezone.now()
    rows = {
        pk: TenantQueue(slug, vendor, open_alerts={s.value: 0 for s in Severity})
        for pk, slug, vendor in Tenant.objects.filter(pk__in=tenant_ids)
        .order_by("slug")
        .values_list("pk", "slug", "vendor")
    }
    for r in (
        Write.objects.filter(tenant_id__in=list(rows), state__in=OPEN_STATES)
        .values("tenant_id", "state")
        .annotate(n=Count("id"), due=Min("next_attempt_at"), entered=Min("state_changed_at"))
        .order_by()
    ):
        row = rows[r["tenant_id"]]
        row.open_by_state[r["state"]] = r["n"]
        if r["state"] == WriteState.PENDING:
            row.oldest_pending_seconds = max(0.0, (now - r["due"]).total_seconds())
        elif r["state"] == WriteState.OUTCOME_UNKNOWN:
            row.oldest_unknown_seconds = max(0.0, (now - r["entered"]).total_seconds())
    for r in (
        Alert.objects.filter(tenant_id__in=list(rows), state=AlertState.FIRING)
        .values("tenant_id", "severity")
        .annotate(n=Count("id"))
        .order_by()
    ):
        rows[r["tenant_id"]].open_alerts[r["severity"]] = r["n"]
    return QueueSnapshot(at=now, tenants=list(rows.values()))


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
