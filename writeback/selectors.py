"""Reads: the querysets the API and the console show, scoped to what the person may see."""

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from django.db.models import Case, Count, IntegerField, Min, Q, QuerySet, Sum, Value, When
from django.http import Http404
from django.utils import timezone

from writeback.models import (
    Alert,
    AlertDelivery,
    AlertRoute,
    AlertState,
    ApiToken,
    AuditEntry,
    BusinessEvent,
    Capability,
    CapabilityChange,
    Compensation,
    HourCount,
    KillSwitch,
    PractitionerMapping,
    ReconciliationFinding,
    ReconciliationRun,
    Severity,
    Tenant,
    Write,
    WriteCount,
)
from writeback.models.ledger import APPROVAL_QUEUE_ORDER
from writeback.services.killswitches import active_switches
from writeback.services.permissions import refuse
from writeback.services.tenants import tenants_for_user
from writeback.states import CLAIMABLE, DECIDABLE, NEEDS_OPERATOR, WriteState


def tenants_visible_to(user, token: ApiToken | None = None) -> QuerySet[Tenant]:
    tenants = tenants_for_user(user)
    if token is not None:
        scoped = list(token.tenants.values_list("pk", flat=True))
        if scoped:
            tenants = tenants.filter(pk__in=scoped)
    return tenants


def scoped_get(
    user,
    visible: QuerySet,
    everything: QuerySet,
    object_type: str,
    *,
    action: str = "view",
    channel: str = "api",
    request_id: str = "",
    **lookup,
):
    """The one tenant-scoped fetch of the API and the console: the object from `visible`; if only
    `everything` holds it, an audited refusal naming its tenant (403); if nothing does, a 404."""
    obj = visible.filter(**lookup).first()
    if obj is not None:
        return obj
    other = everything.select_related(None).filter(**lookup).first()
    if other is None:
        raise Http404(f"no such {object_type.replace('_', ' ')}")
    tenant = other if isinstance(other, Tenant) else getattr(other, "tenant", None)
    if tenant is None and hasattr(other, "write"):
        tenant = other.write.tenant
    refuse(
        user,
        action,
        f"this {object_type.replace('_', ' ')} belongs to tenant {tenant.slug if tenant else '?'}, "
        "which you may not act on",
        rule="tenant-forbidden",
        tenant=tenant,
        object_type=object_type,
        object_id=str(next(iter(lookup.values()))),
        request_id=request_id,
        channel=channel,
    )


def writes_visible_to(user, token: ApiToken | None = None) -> QuerySet[Write]:
    return Write.objects.filter(tenant__in=tenants_visible_to(user, token)).select_related("tenant", "event")


def approval_queue(user) -> QuerySet[Write]:
    """The writes the person may see that wait for a clinician's decision, in the queue's order (held
    writes first, then the oldest): read in that order from write_decidable_idx, so a page costs the
    same however many writes wait."""
    return (
        writes_visible_to(user)
        .filter(state__in=DECIDABLE)
        .select_related("event__initiator")
        .prefetch_related("approvals__approver", "editors")
        .order_by(*APPROVAL_QUEUE_ORDER)
    )


def events_visible_to(user, token: ApiToken | None = None) -> QuerySet[BusinessEvent]:
    return BusinessEvent.objects.filter(tenant__in=tenants_visible_to(user, token)).select_related("tenant")


# Events one clinical key may name (a patient's MRN names all of theirs) that a search follows.
EVENT_MATCH_CAP = 5_000
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
    if version:
        return qs.filter(target_resource_id=resource_id, target_version=version)
    q = Q(correlation_id=text) | Q(patient_ref=text) | Q(target_resource_id=resource_id)
    by_event = Q(idempotency_key=text) | Q(source_message_id=text) | Q(patient_identifier__value=text)
    if _looks_like_uuid(text):
        q |= Q(uid=text)
        by_event |= Q(uid=text)
    # The events' keys are looked up first (each by its own index), so the search over the writes is
    # an OR of indexed columns of one table, which the database answers with a bitmap of index scans;
    # an OR across the join would read the whole ledger.
    event_ids = list(BusinessEvent.objects.filter(by_event).values_list("pk", flat=True)[:EVENT_MATCH_CAP])
    if event_ids:
        q |= Q(event_id__in=event_ids)
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

    Four queries whatever the size of the ledger: the open writes by state from the running counts;
    the two ages from the pending and unknown writes only (the (state, next_attempt_at) index narrows
    to them; writes waiting for a person, which pile up, are counted, never read)."""
    now = now or timezone.now()
    rows = {
        pk: TenantQueue(slug, vendor, open_alerts={s.value: 0 for s in Severity})
        for pk, slug, vendor in Tenant.objects.filter(pk__in=tenant_ids)
        .order_by("slug")
        .values_list("pk", "slug", "vendor")
    }
    for c in ledger_counts(list(rows)):
        if c.state in OPEN_STATES:
            open_by_state = rows[c.tenant_id].open_by_state
            open_by_state[c.state] = open_by_state.get(c.state, 0) + c.n
    for r in (
        Write.objects.filter(
            tenant_id__in=list(rows), state__in=(WriteState.PENDING, WriteState.OUTCOME_UNKNOWN)
        )
        .values("tenant_id", "state")
        .annotate(due=Min("next_attempt_at"), entered=Min("state_changed_at"))
        .order_by()
    ):
        row = rows[r["tenant_id"]]
        if r["state"] == WriteState.PENDING:
            row.oldest_pending_seconds = max(0.0, (now - r["due"]).total_seconds())
        else:
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


# -- the ledger's running counts (writeback.models.counts): a few hundred rows whatever the ledger size --

TenantScope = Tenant | int | Iterable[int] | QuerySet[Tenant] | None


class LedgerCount(NamedTuple):
    tenant_id: int
    state: str
    resource_type: str
    n: int


class HourTotal(NamedTuple):
    tenant_id: int
    hour: datetime
    resource_type: str
    outcome: str
    n: int


def ledger_counts(tenant: TenantScope = None) -> list[LedgerCount]:
    """Writes per tenant x state x resource type (keys at zero left out), for one tenant, several
    (ids or a queryset) or all (None). One query over the counts table, never over the ledger."""
    rows = _scoped(WriteCount.objects.order_by(), tenant)
    return [
        LedgerCount(r["tenant_id"], r["state"], r["resource_type"], r["total"])
        for r in rows.values("tenant_id", "state", "resource_type")
        .annotate(total=Sum("n"))
        .exclude(total=0)
        .order_by("tenant_id", "state", "resource_type")
    ]


def hour_counts(tenant: TenantScope = None, *, since: datetime) -> list[HourTotal]:
    """Send attempts per tenant x UTC hour x resource type x outcome, and stored events (outcome
    `event`), for the hours starting at or after `since`'s hour."""
    start = since.replace(minute=0, second=0, microsecond=0)
    rows = _scoped(HourCount.objects.order_by().filter(hour__gte=start), tenant)
    return [
        HourTotal(r["tenant_id"], r["hour"], r["resource_type"], r["outcome"], r["total"])
        for r in rows.values("tenant_id", "hour", "resource_type", "outcome")
        .annotate(total=Sum("n"))
        .exclude(total=0)
        .order_by("hour", "tenant_id", "resource_type", "outcome")
    ]


def _scoped(qs: QuerySet, tenant: TenantScope) -> QuerySet:
    if tenant is None:
        return qs
    if isinstance(tenant, Tenant):
        return qs.filter(tenant_id=tenant.pk)
    if isinstance(tenant, int):
        return qs.filter(tenant_id=tenant)
    if isinstance(tenant, QuerySet):
        return qs.filter(tenant_id__in=tenant.values("pk"))
    return qs.filter(tenant_id__in=list(tenant))


# -- the write list: keyset pages (newest first) and a total that never counts the whole ledger --

# Past this many matches a filtered total is shown as "at least": counting further would read them all.
COUNT_CAP = 10_000
# Filters whose total the running counts answer exactly (they are the counts' keys).
COUNTED_FILTERS = frozenset({"tenant", "state", "resource_type"})


@dataclass
class KeysetPage:
    """One page of writes, newest first, addressed by the id it starts after (`?after=`) or before
    (`?before=`): the database seeks by primary key instead of skipping OFFSET rows."""

    object_list: list[Write]
    count: int
    count_exact: bool
    after: int | None  # cursor of the next (older) page, None on the last
    before: int | None  # cursor of the previous (newer) page, None on the first


def write_page(
    qs: QuerySet[Write], *, after: str | None, before: str | None, size: int, total: tuple[int, bool]
) -> KeysetPage:
    """`qs` is filtered and scoped; bad cursors count as none (the first page)."""
    after_id, before_id = _cursor(after), _cursor(before)
    if before_id is not None and after_id is None:
        rows = list(qs.filter(pk__gt=before_id).order_by("id")[: size + 1])
        more_newer = len(rows) > size
        rows = list(reversed(rows[:size]))
        older = rows[-1].pk if rows else None
        return KeysetPage(rows, *total, after=older, before=rows[0].pk if rows and more_newer else None)
    if after_id is not None:
        qs = qs.filter(pk__lt=after_id)
    rows = list(qs.order_by("-id")[: size + 1])
    more_older = len(rows) > size
    rows = rows[:size]
    return KeysetPage(
        rows,
        *total,
        after=rows[-1].pk if rows and more_older else None,
        before=rows[0].pk if rows and after_id is not None else None,
    )


def write_total(qs: QuerySet[Write], tenants: list[Tenant], filters: dict) -> tuple[int, bool]:
    """(total, exact) for the write list: from the running counts when only tenant, state and resource
    type filter it; otherwise a count that stops at COUNT_CAP."""
    used = {name for name, value in filters.items() if value not in (None, "", [])}
    if used <= COUNTED_FILTERS:
        tenant_ids = [t.pk for t in tenants if not filters.get("tenant") or t.slug == filters["tenant"]]
        states, resource_type = set(filters.get("state") or ()), filters.get("resource_type")
        total = sum(
            c.n
            for c in ledger_counts(tenant_ids)
            if (not states or c.state in states) and (not resource_type or c.resource_type == resource_type)
        )
        return total, True
    capped = qs.order_by()[: COUNT_CAP + 1].count()
    return min(capped, COUNT_CAP), capped <= COUNT_CAP


def _cursor(value: str | None) -> int | None:
    # Anything but a positive id that fits the column is no cursor (never a database error).
    if not value or not (value.isascii() and value.isdigit()) or not 0 < int(value) < 2**63:
        return None
    return int(value)


# -- console pages' reads ----------------------------------------------------------------------------


def audit_search(tenant_slugs: list[str], data: dict | None) -> QuerySet[AuditEntry]:
    """Audit entries of these tenants and the system-wide ones (no tenant), newest first, narrowed by
    the search form's cleaned data (action prefix, tenant, write/event/object id, correlation id, actor,
    time range)."""
    entries = AuditEntry.objects.filter(tenant__in=[*tenant_slugs, ""]).order_by("-seq")
    data = {k: v.strip() if isinstance(v, str) else v for k, v in (data or {}).items() if v}
    if "action" in data:
        entries = entries.filter(action__startswith=data["action"])
    if "object_id" in data:
        ident = data["object_id"]
        entries = entries.filter(Q(write_uid=ident) | Q(event_uid=ident) | Q(object_id=ident))
    exact = {"tenant": "tenant", "correlation_id": "correlation_id", "actor": "actor"}
    exact |= {"since": "at__gte", "until": "at__lt"}
    return entries.filter(**{lookup: data[name] for name, lookup in exact.items() if name in data})


@dataclass
class TenantRow:
    tenant: Tenant
    queued: int
    pending_changes: int
    switches: list[KillSwitch]


def tenant_rows(tenants: list[Tenant]) -> tuple[list[TenantRow], list[KillSwitch]]:
    """The tenants page: per tenant its queued writes (from the running counts), capability changes
    waiting for a second person and active kill switches; and the global switches."""
    ids = [t.pk for t in tenants]
    queued: dict[int, int] = defaultdict(int)
    for c in ledger_counts(ids):
        if c.state in CLAIMABLE:
            queued[c.tenant_id] += c.n
    pending = dict(
        CapabilityChange.objects.filter(tenant_id__in=ids, status=CapabilityChange.Status.PENDING)
        .values("tenant_id")
        .annotate(n=Count("id"))
        .values_list("tenant_id", "n")
    )
    switches = active_switches(ids)
    rows = [
        TenantRow(t, queued[t.pk], pending.get(t.pk, 0), [s for s in switches if s.tenant_id == t.pk])
        for t in tenants
    ]
    return rows, [s for s in switches if s.scope == KillSwitch.Scope.GLOBAL]


def queued_writes(tenant: Tenant) -> int:
    return sum(c.n for c in ledger_counts(tenant) if c.state in CLAIMABLE)


def tenant_changes(tenant: Tenant) -> tuple[list, list[CapabilityChange]]:
    """The tenant page's capability history (15 latest) and change requests (25 latest)."""
    history = (
        Capability.history.filter(tenant_id=tenant.pk)
        .select_related("history_user", "set_by")
        .order_by("-history_date")[:15]
    )
    changes = (
        CapabilityChange.objects.filter(tenant=tenant)
        .select_related("requested_by", "decided_by")
        .order_by("-requested_at")[:25]
    )
    return list(history), list(changes)


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
    """Writes waiting behind each open queue-holding alert, by (tenant id, resource type)."""
    held = {(a.tenant_id, a.resource_type) for a in alerts if a.holds_queue and a.is_open}
    if not held:
        return {}
    waiting: dict[tuple[int, str], int] = defaultdict(int)
    for c in ledger_counts({t for t, _ in held}):
        if c.state in CLAIMABLE and (c.tenant_id, c.resource_type) in held:
            waiting[(c.tenant_id, c.resource_type)] += c.n
    return dict(waiting)


@dataclass
class WriteDetail:
    """What the write page shows of a write's history, in a constant number of queries."""

    attempts: list
    approvals: list
    entries: list[AuditEntry]
    conflicts: list
    open_conflict: object | None
    compensations: list
    active_compensation: object | None
    related: list[Write]
    live_approval: object | None


def write_history(write: Write) -> WriteDetail:
    attempts = list(write.attempts_log.order_by("number", "id"))
    approvals = list(write.approvals.select_related("approver").order_by("decided_at"))
    conflicts = list(
        write.conflicts.select_related("resolved_by", "resolution_write").order_by("-created_at")
    )
    compensations = list(
        write.compensations.select_related("requested_by").prefetch_related("writes", "manual_tasks")
    )
    related = list(
        Write.objects.filter(Q(replay_of=write) | Q(supersedes=write) | Q(compensates=write))
        .only(
            "uid",
            "state",
            "resource_type",
            "operation",
            "replay_of",
            "supersedes",
            "compensates",
            "created_at",
        )
        .order_by("id")
    )
    return WriteDetail(
        attempts=attempts,
        approvals=approvals,
        entries=list(audit_for_write(write)),
        conflicts=conflicts,
        open_conflict=next((c for c in conflicts if c.resolved_at is None), None),
        compensations=compensations,
        active_compensation=next((c for c in compensations if c.status != Compensation.Status.FAILED), None),
        related=related,
        live_approval=next((a for a in reversed(approvals) if a.is_valid_for(write.payload_hash)), None),
    )


def practitioner_mappings(tenant: Tenant) -> list[PractitionerMapping]:
    """Who is which Practitioner at `tenant` (the console's tenant page)."""
    return list(
        PractitionerMapping.objects.filter(tenant=tenant)
        .select_related("user", "set_by")
        .order_by("user__username")
    )
