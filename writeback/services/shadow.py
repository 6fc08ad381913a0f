"""Shadow divergence: per tenant and field, how often what we would write differs from what the EHR holds.

Shadowed writes carry `divergence` (recorded by the worker in shadow mode): the fields compared and
whether each differs. This aggregates the most recent SAMPLE of them in a window (one query) so an
engineer can see which fields would change the chart before switching a tenant live.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from writeback.models import Tenant, Write
from writeback.states import WriteState

SAMPLE = 20_000


@dataclass
class FieldRow:
    resource_type: str
    field: str
    compared: int = 0
    # The EHR holds another value / holds nothing there (a new entry, not a disagreement).
    differing: int = 0
    absent: int = 0
    example_write: str = ""
    example_ours: Any = None
    example_theirs: Any = None

    @property
    def rate(self) -> float:
        return self.differing / self.compared if self.compared else 0.0


@dataclass
class TenantShadow:
    slug: str
    name: str
    mode: str
    writes: int = 0
    differing_writes: int = 0
    new_entries: int = 0
    read_errors: int = 0
    fields: list[FieldRow] = field(default_factory=list)

    @property
    def rate(self) -> float:
        compared = self.writes - self.new_entries - self.read_errors
        return self.differing_writes / compared if compared > 0 else 0.0


@dataclass
class ShadowReport:
    since: datetime
    sampled: int
    truncated: bool
    tenants: list[TenantShadow]


def shadow_divergence(
    tenants: QuerySet[Tenant], *, days: int = 30, now: datetime | None = None
) -> ShadowReport:
    since = (now or timezone.now()) - timedelta(days=days)
    by_id = {t.pk: TenantShadow(t.slug, t.name or t.slug, t.mode) for t in tenants.order_by("slug")}
    rows = list(
        Write.objects.filter(
            tenant_id__in=list(by_id),
            state=WriteState.SHADOWED,
            created_at__gte=since,
            divergence__isnull=False,
        )
        .order_by("-id")
        .values_list("tenant_id", "resource_type", "uid", "divergence")[: SAMPLE + 1]
    )
    truncated = len(rows) > SAMPLE
    fields: dict[int, dict[tuple[str, str], FieldRow]] = defaultdict(dict)
    for tenant_id, resource_type, uid, divergence in rows[:SAMPLE]:
        report = by_id[tenant_id]
        report.writes += 1
        if not isinstance(divergence, dict):
            continue
        if divergence.get("read_error"):
            report.read_errors += 1
        if divergence.get("compared_with") is None and not divergence.get("read_error"):
            report.new_entries += 1
        elif divergence.get("differs"):
            report.differing_writes += 1
        for item in divergence.get("fields") or []:
            key = (resource_type, item.get("field", "?"))
            row = fields[tenant_id].get(key)
            if row is None:
                row = fields[tenant_id][key] = FieldRow(resource_type, key[1])
            row.compared += 1
            if not item.get("differs"):
                continue
            if item.get("theirs") is None:
                row.absent += 1
                continue
            row.differing += 1
            if not row.example_write:  # rows are newest first: keep the latest example
                row.example_write = str(uid)
                row.example_ours, row.example_theirs = item.get("ours"), item.get("theirs")
    for tenant_id, report in by_id.items():
        report.fields = sorted(
            fields[tenant_id].values(),
            key=lambda r: (-r.rate, -r.differing, -r.absent, r.resource_type, r.field),
        )
    return ShadowReport(
        since=since, sampled=min(len(rows), SAMPLE), truncated=truncated, tenants=list(by_id.values())
    )
