"""Dashboard numbers for the console and GET /api/v1/metrics (Prometheus' /metrics is writeback/metrics.py).

Each figure comes from one aggregate query (a handful in all, whatever the size of the ledger), scoped
to the tenants the caller may see. Rates cover a trailing window (24 hours by default):

- retry rate: share of send attempts that ended retryable, ambiguous or lost;
- conflict rate: share of send attempts that ended in a version conflict;
- duplicate suppression rate: suppressed duplicates (audit action `event.duplicate_suppressed`) over
  all events received (stored events plus suppressed duplicates);
- accepted vs rejected: send attempts the target acknowledged (or that were found already landed) vs
  those it refused, by resource type;
- vendor latency p50 / p95: from WriteAttempt.latency_ms of the window's most recent LATENCY_SAMPLE
  attempts: PostgreSQL computes the percentiles (PERCENTILE_CONT), SQLite (no percentile function)
  returns the sample and Python interpolates the same way.

Writes by state come from the running counts (writeback.models.counts), and attempts, the hourly series
and events from the hourly counts, so the cost does not grow with the ledger; the window is then whole
hours (the current one included), starting on the hour.
"""

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.utils import timezone

from writeback.models import (
    Alert,
    AuditAction,
    AuditEntry,
    HourCount,
    Severity,
    Tenant,
    Write,
    WriteAttempt,
)
from writeback.selectors import hour_counts, ledger_counts
from writeback.states import CLAIMABLE, NEEDS_OPERATOR, WriteState

LATENCY_SAMPLE = 5000
Outcome = WriteAttempt.Outcome
SEND_OUTCOMES = (
    Outcome.COMMITTED,
    Outcome.FOUND,
    Outcome.CONFLICT,
    Outcome.RETRYABLE,
    Outcome.AMBIGUOUS,
    Outcome.LOST,
    Outcome.TERMINAL,
)
RETRY_OUTCOMES = (Outcome.RETRYABLE, Outcome.AMBIGUOUS, Outcome.LOST)
ACCEPTED_OUTCOMES = (Outcome.COMMITTED, Outcome.FOUND)
SEVERITY_ORDER = (Severity.PAGE, Severity.CRITICAL, Severity.WARNING, Severity.INFO)


@dataclass
class TenantRow:
    id: int
    slug: str
    name: str
    vendor: str
    vendor_label: str
    mode: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def queue_depth(self) -> int:
        return sum(self.counts.get(s, 0) for s in CLAIMABLE)

    @property
    def needs_operator(self) -> int:
        return sum(self.counts.get(s, 0) for s in NEEDS_OPERATOR)


@dataclass
class HourPoint:
    hour: datetime
    committed: int = 0
    retried: int = 0
    failed: int = 0
    conflicts: int = 0
    events: int = 0

    @property
    def sends(self) -> int:
        return self.committed + self.retried + self.failed + self.conflicts


@dataclass
class Dashboard:
    generated_at: datetime
    since: datetime
    window_hours: int
    tenants: list[TenantRow]
    by_vendor: dict[str, dict[str, int]]
    state_totals: dict[str, int]
    sends: int
    retries: int
    conflicts: int
    events_stored: int
    duplicates_suppressed: int
    by_resource_type: list[dict]
    latency: list[dict]
    latency_exact: bool
    series: list[HourPoint]
    open_alerts: dict[str, int]

    @property
    def queue_depth(self) -> int:
        return sum(self.state_totals.get(s, 0) for s in CLAIMABLE)

    @property
    def awaiting_approval(self) -> int:
        return self.state_totals.get(WriteState.AWAITING_APPROVAL, 0)

    @property
    def needs_operator(self) -> int:
        return sum(self.state_totals.get(s, 0) for s in NEEDS_OPERATOR)

    @property
    def total_writes(self) -> int:
        return sum(self.state_totals.values())

    @property
    def retry_rate(self) -> float | None:
        return _rate(self.retries, self.sends)

    @property
    def conflict_rate(self) -> float | None:
        return _rate(self.conflicts, self.sends)

    @property
    def events_received(self) -> int:
        return self.events_stored + self.duplicates_suppressed

    @property
    def duplicate_rate(self) -> float | None:
        return _rate(self.duplicates_suppressed, self.events_received)

    @property
    def open_alert_total(self) -> int:
        return sum(self.open_alerts.values())

    def as_json(self) -> dict:
        return {
            "generated_at": self.generated_at.isoformat(),
            "window": {"since": self.since.isoformat(), "hours": self.window_hours},
            "writes": {
                "total": self.total_writes,
                "by_state": self.state_totals,
                "queue_depth": self.queue_depth,
                "awaiting_approval": self.awaiting_approval,
                "needs_operator": self.needs_operator,
                "by_tenant": [
                    {
                        "tenant": t.slug,
                        "vendor": t.vendor,
                        "mode": t.mode,
                        "by_state": t.counts,
                        "queue_depth": t.queue_depth,
                    }
                    for t in self.tenants
                ],
                "by_vendor": self.by_vendor,
            },
            "rates": {
                "send_attempts": self.sends,
                "retry_rate": self.retry_rate,
                "conflict_rate": self.conflict_rate,
                "events_received": self.events_received,
                "duplicates_suppressed": self.duplicates_suppressed,
                "duplicate_suppression_rate": self.duplicate_rate,
            },
            "by_resource_type": self.by_resource_type,
            "vendor_latency_ms": self.latency,
            "latency_exact": self.latency_exact,
            "series": [
                {
                    "hour": p.hour.isoformat(),
                    "committed": p.committed,
                    "retried": p.retried,
                    "failed": p.failed,
                    "conflicts": p.conflicts,
                    "events": p.events,
                }
                for p in self.series
            ],
            "open_alerts": self.open_alerts,
        }


def dashboard(tenants: QuerySet[Tenant], *, hours: int = 24, now: datetime | None = None) -> Dashboard:
    now = now or timezone.now()
    rows = [
        TenantRow(t.pk, t.slug, t.name or t.slug, t.vendor, t.get_vendor_display(), t.mode)
        for t in tenants.order_by("slug")
    ]
    ids = [t.id for t in rows]
    by_id = {t.id: t for t in rows}

    # 1. Writes by tenant and state: the running counts, never the ledger itself.
    state_totals: dict[str, int] = defaultdict(int)
    by_vendor: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for c in ledger_counts(ids):
        tenant = by_id[c.tenant_id]
        tenant.counts[c.state] = tenant.counts.get(c.state, 0) + c.n
        state_totals[c.state] += c.n
        by_vendor[tenant.vendor][c.state] += c.n

    # 2. Send attempts by resource type and outcome, 4. the hourly series and 5. events per hour: the
    # hourly counts of the window's hours (the current one included), so the window starts on the hour.
    tz = timezone.get_current_timezone()
    series = {p.hour: p for p in _empty_series(now, hours, tz)}
    since = min(series)
    per_type: dict[str, Counter] = defaultdict(Counter)
    events_stored = 0
    hour_keys: dict[datetime, datetime] = {}  # a few dozen distinct hours over hundreds of rows
    for h in hour_counts(ids, since=since):
        key = hour_keys.get(h.hour)
        if key is None:
            key = hour_keys[h.hour] = _hour_key(h.hour, tz)
        point = series.get(key)
        if h.outcome == HourCount.EVENT:
            events_stored += h.n
            if point is not None:
                point.events += h.n
            continue
        if h.outcome not in SEND_OUTCOMES:
            continue
        per_type[h.resource_type][h.outcome] += h.n
        if point is not None:
            point.committed += h.n if h.outcome in ACCEPTED_OUTCOMES else 0
            point.retried += h.n if h.outcome in RETRY_OUTCOMES else 0
            point.failed += h.n if h.outcome == Outcome.TERMINAL else 0
            point.conflicts += h.n if h.outcome == Outcome.CONFLICT else 0
    by_type = []
    sends = retries = conflicts = 0
    for resource_type, outcomes in sorted(per_type.items()):
        sends += outcomes.total()
        retries += sum(outcomes[o] for o in RETRY_OUTCOMES)
        conflicts += outcomes[Outcome.CONFLICT]
        by_type.append(
            {
                "resource_type": resource_type,
                "accepted": sum(outcomes[o] for o in ACCEPTED_OUTCOMES),
                "rejected": outcomes[Outcome.TERMINAL],
                "sends": outcomes.total(),
            }
        )

    # 3. Vendor latency, from the window's most recent attempts.
    latency, exact = _latency({t.id: t.vendor for t in rows}, since)

    # 6. Suppressed duplicates (counted by intake in the audit trail).
    duplicates = AuditEntry.objects.filter(
        action=AuditAction.EVENT_DUPLICATE_SUPPRESSED, at__gte=since, tenant__in=[t.slug for t in rows]
    ).count()

    # 7. Open alerts by severity.
    open_alerts = {s.value: 0 for s in SEVERITY_ORDER}
    for r in (
        Alert.objects.filter(tenant_id__in=ids, state="firing").values("severity").annotate(n=Count("id"))
    ):
        open_alerts[r["severity"]] = r["n"]

    return Dashboard(
        generated_at=now,
        since=since,
        window_hours=hours,
        tenants=rows,
        by_vendor={v: dict(c) for v, c in by_vendor.items()},
        state_totals=dict(state_totals),
        sends=sends,
        retries=retries,
        conflicts=conflicts,
        events_stored=events_stored,
        duplicates_suppressed=duplicates,
        by_resource_type=by_type,
        latency=latency,
        latency_exact=exact,
        series=[series[k] for k in sorted(series)],
        open_alerts=open_alerts,
    )


def latency_sample(tenant_ids: list[int], since: datetime) -> QuerySet:
    """(tenant id, latency ms) of the window's newest LATENCY_SAMPLE timed sends, newest first."""
    tenant_of = Write.objects.filter(pk=OuterRef("write_id")).values("tenant_id")[:1]
    return (
        WriteAttempt.objects.filter(
            started_at__gte=since, outcome__in=SEND_OUTCOMES, latency_ms__isnull=False
        )
        .annotate(of_tenant=Subquery(tenant_of))
        .filter(of_tenant__in=tenant_ids)
        .order_by("-started_at")
        .values_list("of_tenant", "latency_ms")[:LATENCY_SAMPLE]
    )


def _latency(vendor_of: dict[int, str], since: datetime) -> tuple[list[dict], bool]:
    """p50 and p95 per vendor over the window's newest LATENCY_SAMPLE timed sends; exact when the
    sample holds every send of the window.

    Each attempt's tenant is read by a correlated subquery, not a join: the database then walks the
    attempts' started_at index from the newest and stops at the sample's size. With a join, a planner
    whose statistics lag a fast-growing ledger (a new tenant, autovacuum behind) looped over every
    write of the tenant times every attempt of the window, and the overview slowed by the minute."""
    sample = list(latency_sample(list(vendor_of), since))
    values: dict[str, list[float]] = defaultdict(list)
    for tenant_id, ms in sample:
        values[vendor_of[tenant_id]].append(ms)
    return [
        {"vendor": v, "p50": percentile(ms, 0.5), "p95": percentile(ms, 0.95), "samples": len(ms)}
        for v, ms in sorted(values.items())
    ], len(sample) < LATENCY_SAMPLE


def percentile(values: list[float], p: float) -> float | None:
    """Linear interpolation between closest ranks (what PERCENTILE_CONT computes)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * p
    lower = int(pos)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (pos - lower)


def _empty_series(now: datetime, hours: int, tz) -> list[HourPoint]:
    last = timezone.localtime(now, tz).replace(minute=0, second=0, microsecond=0)
    return [HourPoint(hour=last - timedelta(hours=i)) for i in range(hours - 1, -1, -1)]


def _hour_key(value: datetime, tz) -> datetime:
    # Databases hand back the truncated hour as aware or naive depending on the backend.
    if timezone.is_naive(value):
        value = timezone.make_aware(value, tz)
    return timezone.localtime(value, tz).replace(minute=0, second=0, microsecond=0)


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
