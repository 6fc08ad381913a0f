"""Threshold alerts: per-tenant measures of the pipeline's health, checked by the worker's housekeeping.

Each measure fires one alert (kind = the measure's code, subject "threshold") when it crosses its limit
and resolves that alert once it is back below, so a route hears of it once each way. Limits have
defaults here and are overridden per tenant in `tenant.settings["alerts"]` (a limit of null or 0 turns
the measure off). A rate over too few attempts is not judged either way.

The queries are bounded: the rates count attempts started inside the window (`attempt_started_idx`),
the queue measures aggregate the claimable writes (`write_tenant_state_idx`), approvals the writes in
`awaiting_approval`, drift the writes created inside the window against the discovered capabilities.
No query reads the whole ledger.
"""

import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Min, Q
from django.utils import timezone

from writeback.errors import DomainError
from writeback.models import (
    Alert,
    AlertState,
    AuditAction,
    Capability,
    Severity,
    Tenant,
    Write,
    WriteAttempt,
)
from writeback.services import audit
from writeback.services.alerts import alert_raise, alert_resolve
from writeback.states import CLAIMABLE, WriteState

SUBJECT = "threshold"

DEFAULTS: dict[str, Any] = {
    "window_minutes": 15,
    # Rates are judged only over at least this many attempts in the window.
    "min_attempts": 20,
    "conflict_rate": 0.2,
    "retry_rate": 0.5,
    "queue_depth": 10_000,
    "oldest_pending_minutes": 30,
    "outcome_unknown_minutes": 30,
    "approval_overdue": 1,
    "capability_drift": 1,
}


@dataclass(frozen=True)
class Measure:
    code: str  # the alert kind
    limit_key: str  # the key in DEFAULTS / tenant.settings["alerts"]
    severity: str
    label: str


MEASURES = [
    Measure("conflict-rate", "conflict_rate", Severity.WARNING, "share of attempts answered 412"),
    Measure("retry-rate", "retry_rate", Severity.WARNING, "share of attempts to retry"),
    Measure("queue-depth", "queue_depth", Severity.WARNING, "writes waiting to be sent"),
    Measure(
        "oldest-pending",
        "oldest_pending_minutes",
        Severity.CRITICAL,
        "minutes the oldest due write has waited",
    ),
    Measure(
        "outcome-unknown-age", "outcome_unknown_minutes", Severity.CRITICAL, "minutes an outcome is unknown"
    ),
    Measure("approval-overdue", "approval_overdue", Severity.WARNING, "writes awaiting approval past expiry"),
    Measure("capability-drift", "capability_drift", Severity.CRITICAL, "operations written, not declared"),
]
CODES = [m.code for m in MEASURES]


def tenant_thresholds(tenant: Tenant) -> dict[str, Any]:
    """The defaults, overridden by the tenant's settings["alerts"] (unknown keys are ignored)."""
    configured = (tenant.settings or {}).get("alerts", {})
    merged = dict(DEFAULTS)
    if isinstance(configured, dict):
        for key in DEFAULTS:
            if key in configured:
                merged[key] = configured[key]
    return merged


def _rates(since: datetime, tenant_ids: list[int]) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {}
    rows = (
        WriteAttempt.objects.filter(started_at__gte=since, write__tenant_id__in=tenant_ids)
        .exclude(outcome=WriteAttempt.Outcome.STEP)
        .values("write__tenant_id", "outcome")
        .annotate(n=Count("id"))
    )
    for row in rows:
        counts = out.setdefault(row["write__tenant_id"], {})
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + row["n"]
    return out


def measure_all(now: datetime, tenants: list[Tenant]) -> dict[int, dict[str, float | None]]:
    """Every measure for every tenant: a number, or None when it cannot be judged."""
    limits = {t.pk: tenant_thresholds(t) for t in tenants}
    by_window: dict[int, list[int]] = {}
    for tenant_id, lim in limits.items():
        by_window.setdefault(int(lim["window_minutes"] or DEFAULTS["window_minutes"]), []).append(tenant_id)
    rates: dict[int, dict[str, int]] = {}
    for minutes, ids in by_window.items():
        rates.update(_rates(now - timedelta(minutes=minutes), ids))
    queue = {
        row["tenant_id"]: row
        for row in Write.objects.filter(state__in=CLAIMABLE)
        .values("tenant_id")
        .annotate(
            n=Count("id"),
            due=Min("next_attempt_at", filter=Q(state=WriteState.PENDING)),
            unknown=Min("state_changed_at", filter=Q(state=WriteState.OUTCOME_UNKNOWN)),
        )
    }
    expired = now - timedelta(hours=settings.WRITEBACK_APPROVAL_TTL_HOURS)
    overdue = dict(
        Write.objects.filter(state=WriteState.AWAITING_APPROVAL, state_changed_at__lt=expired)
        .values("tenant_id")
        .annotate(n=Count("id"))
        .values_list("tenant_id", "n")
    )
    # Drift: what we wrote inside the window (write_created_idx) that the latest discovery refuses.
    refused = set(
        Capability.objects.filter(
            tenant_id__in=limits, source=Capability.Source.DISCOVERED, allowed=False
        ).values_list("tenant_id", "resource_type", "operation")
    )
    drift: dict[int, int] = {}
    if refused:
        since = now - timedelta(minutes=max(by_window))
        for key in (
            Write.objects.filter(created_at__gte=since, tenant_id__in=limits)
            .values_list("tenant_id", "resource_type", "operation")
            .distinct()
        ):
            if key in refused:
                drift[key[0]] = drift.get(key[0], 0) + 1

    out: dict[int, dict[str, float | None]] = {}
    for tenant in tenants:
        counts = rates.get(tenant.pk, {})
        total = sum(counts.values())
        judged = total >= int(limits[tenant.pk]["min_attempts"] or 0) and total > 0
        q = queue.get(tenant.pk, {})
        due, unknown = q.get("due"), q.get("unknown")
        out[tenant.pk] = {
            "conflict-rate": round(counts.get("conflict", 0) / total, 4) if judged else None,
            "retry-rate": round(counts.get("retryable", 0) / total, 4) if judged else None,
            "queue-depth": q.get("n", 0),
            "oldest-pending": round(max(0.0, (now - due).total_seconds() / 60), 1) if due else 0,
            "outcome-unknown-age": round(max(0.0, (now - unknown).total_seconds() / 60), 1) if unknown else 0,
            "approval-overdue": overdue.get(tenant.pk, 0),
            "capability-drift": drift.get(tenant.pk, 0),
        }
    return out


def thresholds_evaluate(now: datetime | None = None) -> dict[str, int]:
    """Fires the crossed measures that are not alerted yet and resolves the alerted ones back below
    their limit. Returns {"fired": n, "resolved": n}."""

    now = now or timezone.now()
    tenants = list(Tenant.objects.all())
    values = measure_all(now, tenants)
    current = {
        (a.tenant_id, a.code): a
        for a in Alert.objects.filter(code__in=CODES, subject=SUBJECT)
        .exclude(state=AlertState.RESOLVED)
        .select_related("tenant")
    }
    fired = resolved = 0
    for tenant in tenants:
        limits = tenant_thresholds(tenant)
        for measure in MEASURES:
            value = values[tenant.pk][measure.code]
            limit = limits[measure.limit_key]
            alert = current.get((tenant.pk, measure.code))
            if value is None:
                continue  # too few attempts to judge a rate: leave things as they are
            crossed = bool(limit) and value >= float(limit)
            details = {"measure": measure.label, "value": value, "limit": limit}
            if crossed and alert is None:
                alert_raise(
                    tenant=tenant,
                    code=measure.code,
                    subject=SUBJECT,
                    severity=measure.severity,
                    message=f"{measure.label}: {value} (limit {limit})",
                    details={**details, "window_minutes": limits["window_minutes"]},
                )
                fired += 1
            elif not crossed and alert is not None:
                try:
                    alert_resolve(
                        alert=alert,
                        actor="system",
                        note=f"back below the limit: {measure.label} {value} (limit {limit})",
                        details={"value": value},
                    )
                except DomainError:
                    continue  # another worker's evaluation (or a person) resolved it first
                resolved += 1
    return {"fired": fired, "resolved": resolved}


_last_run = [0.0]


def thresholds_evaluate_throttled(now: datetime | None = None) -> dict[str, int] | None:
    """At most once every WRITEBACK_ALERT_EVALUATE_SECONDS per process (housekeeping runs every
    second; the measures move slower than that)."""
    interval = getattr(settings, "WRITEBACK_ALERT_EVALUATE_SECONDS", 15)
    if time.monotonic() - _last_run[0] < interval:
        return None
    _last_run[0] = time.monotonic()
    return thresholds_evaluate(now)


def thresholds_set(*, tenant: Tenant, changes: dict[str, str], actor: Any) -> dict[str, Any]:
    """Sets some of a tenant's limits (`tenant.settings["alerts"]`), checked and audited; "default"
    removes an override. Returns the effective limits."""
    parsed: dict[str, float | int | None] = {}
    for key, raw in changes.items():
        if key not in DEFAULTS and key != "escalation_minutes":
            known = ", ".join(sorted([*DEFAULTS, "escalation_minutes"]))
            raise DomainError(400, "threshold-unknown", f"no threshold {key!r} (known: {known})", key)
        if raw == "default":
            parsed[key] = None
            continue
        try:
            value = float(raw)
        except ValueError as exc:
            raise DomainError(400, "threshold-invalid", f"{key} takes a number, not {raw!r}", key) from exc
        rate = key.endswith("_rate")
        lowest = 1 if key in ("escalation_minutes", "window_minutes") else 0
        if not math.isfinite(value) or value < lowest or (rate and value > 1):
            bound = "between 0 and 1" if rate else f"{lowest} or more"
            raise DomainError(400, "threshold-invalid", f"{key} must be {bound}", key)
        if not rate and not value.is_integer():
            raise DomainError(400, "threshold-invalid", f"{key} takes a whole number", key)
        parsed[key] = value if rate else int(value)
    with transaction.atomic():
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        tenant_settings = dict(locked.settings or {})
        before = dict(tenant_settings.get("alerts") or {})
        after = dict(before)
        for key, value in parsed.items():
            if value is None:
                after.pop(key, None)
            else:
                after[key] = value
        tenant_settings["alerts"] = after
        locked.settings = tenant_settings
        locked.save(update_fields=["settings", "updated_at"])
        tenant.settings = tenant_settings
        audit.record(
            AuditAction.TENANT_ALERT_THRESHOLDS_CHANGED,
            actor=actor,
            tenant=tenant.slug,
            object_type="tenant",
            object_id=tenant.slug,
            data={"before": before, "after": after},
        )
    return {**tenant_thresholds(tenant), "escalation_minutes": after.get("escalation_minutes")}
