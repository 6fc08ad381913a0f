"""Prometheus metrics: counters and histograms incremented where things happen, gauges read at scrape time.

Counters and histograms live in prometheus-client's registry and are incremented by the worker's record
path (writeback/sync/record.py), intake and the approval service, each after its transaction commits, so
a rolled-back step is never counted. Gauges (queue depth, oldest pending age, open writes, open alerts)
are computed when /metrics is scraped, by `LedgerCollector`, from one selector
(`writeback.selectors.queue_gauges`): a bounded number of queries whatever the size of the ledger.

Several processes (gunicorn workers, run_sync_worker): set PROMETHEUS_MULTIPROC_DIR to a directory
shared by all of them on one host (emptied before they start); each process then writes its samples
there and any web process's /metrics serves the sum (prometheus-client's multiprocess mode). Without
it, /metrics serves the web process's own counters. See docs/operations.md, "Metrics".
"""

import os
from collections.abc import Iterable, Iterator

from django.db import transaction
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    Metric,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# `_created` series double every counter's output and alert rules do not use them.
disable_created_metrics()

WRITE_LABELS = ("tenant", "vendor", "resource_type", "event_type")
RETRY_OUTCOMES = frozenset({"retryable", "ambiguous", "lost"})
# The decisive outcome of an attempt; "step" rows are lookups and reads around it.
STEP = "step"

EVENTS = Counter(
    "writeback_events_received",
    "Business events received by intake: stored, or suppressed as a duplicate of one already stored.",
    ("tenant", "event_type", "result"),
)
WRITE_OUTCOMES = Counter(
    "writeback_write_outcomes",
    "Recorded outcomes of write attempts, one per decisive attempt in the ledger (committed, found, "
    "conflict, retryable, ambiguous, lost, terminal, not_found, held).",
    (*WRITE_LABELS, "outcome"),
)
RETRIES = Counter(
    "writeback_write_retries",
    "Write attempts that must be tried again (retryable, ambiguous or lost).",
    WRITE_LABELS,
)
CONFLICTS = Counter(
    "writeback_write_conflicts",
    "Version conflicts recorded (a 412, or a target that moved from the base version).",
    WRITE_LABELS,
)
DUPLICATES = Counter(
    "writeback_duplicates_suppressed",
    "Resends suppressed because the check by read found the write already on the target.",
    WRITE_LABELS,
)
VENDOR_LATENCY = Histogram(
    "writeback_vendor_request_duration_seconds",
    "Time the EHR took to answer one HTTP request (sends, lookups and reads).",
    ("tenant", "vendor", "resource_type", "method"),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0),
)
APPROVAL_LATENCY = Histogram(
    "writeback_approval_latency_seconds",
    "Time from a write's creation to a clinician's approval or rejection.",
    ("tenant", "resource_type", "event_type", "decision"),
    buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800),
)


def _write_labels(write) -> dict[str, str]:
    # `write.tenant` and `write.event` come with the claim (select_related): no query here.
    return {
        "tenant": write.tenant.slug,
        "vendor": write.tenant.vendor,
        "resource_type": write.resource_type,
        "event_type": write.event.type,
    }


def _after_commit(fn) -> None:
    transaction.on_commit(fn, robust=True)


def attempts_recorded(write, rows: Iterable) -> None:
    """Counts the attempt rows just saved for `write` once their transaction commits."""
    labels = _write_labels(write)
    rows = list(rows)

    def count() -> None:
        for row in rows:
            if row.latency_ms is not None:
                VENDOR_LATENCY.labels(
                    labels["tenant"], labels["vendor"], labels["resource_type"], row.method or "-"
                ).observe(row.latency_ms / 1000)
            if row.outcome == STEP:
                continue
            WRITE_OUTCOMES.labels(**labels, outcome=row.outcome).inc()
            if row.outcome in RETRY_OUTCOMES:
                RETRIES.labels(**labels).inc()
            elif row.outcome == "found":
                DUPLICATES.labels(**labels).inc()

    _after_commit(count)


def conflict_recorded(write) -> None:
    labels = _write_labels(write)
    _after_commit(lambda: CONFLICTS.labels(**labels).inc())


def event_received(tenant_slug: str, event_type: str, *, duplicate: bool) -> None:
    result = "duplicate" if duplicate else "stored"
    _after_commit(lambda: EVENTS.labels(tenant_slug, event_type, result).inc())


def approval_decided(write, decision: str, seconds: float) -> None:
    labels = _write_labels(write)
    _after_commit(
        lambda: APPROVAL_LATENCY.labels(
            labels["tenant"], labels["resource_type"], labels["event_type"], decision
        ).observe(max(0.0, seconds))
    )


# -- exposition -------------------------------------------------------------------------------------


class LedgerCollector(Collector):
    """Gauges read from the ledger at scrape time, for the given tenants."""

    def __init__(self, tenant_ids: list[int]) -> None:
        self.tenant_ids = tenant_ids

    def collect(self) -> Iterator[Metric]:
        from writeback.selectors import queue_gauges

        snapshot = queue_gauges(self.tenant_ids)
        depth = GaugeMetricFamily(
            "writeback_queue_depth",
            "Writes waiting to be sent (pending, retrying or with an unknown outcome).",
            labels=("tenant", "vendor"),
        )
        oldest = GaugeMetricFamily(
            "writeback_oldest_pending_age_seconds",
            "Seconds the longest-waiting due write has waited to be sent (0 when none waits).",
            labels=("tenant", "vendor"),
        )
        unknown = GaugeMetricFamily(
            "writeback_oldest_outcome_unknown_age_seconds",
            "Age of the oldest write whose outcome is unknown (0 when none).",
            labels=("tenant", "vendor"),
        )
        open_writes = GaugeMetricFamily(
            "writeback_open_writes",
            "Writes not yet settled, by state (waiting to be sent, for approval, or for an operator).",
            labels=("tenant", "vendor", "state"),
        )
        alerts = GaugeMetricFamily(
            "writeback_open_alerts",
            "Unacknowledged alerts by severity.",
            labels=("tenant", "severity"),
        )
        for row in snapshot.tenants:
            depth.add_metric([row.slug, row.vendor], row.queue_depth)
            oldest.add_metric([row.slug, row.vendor], row.oldest_pending_seconds)
            unknown.add_metric([row.slug, row.vendor], row.oldest_unknown_seconds)
            for state, n in sorted(row.open_by_state.items()):
                open_writes.add_metric([row.slug, row.vendor, state], n)
            for severity, n in sorted(row.open_alerts.items()):
                alerts.add_metric([row.slug, severity], n)
        yield from (depth, oldest, unknown, open_writes, alerts)


class TenantScoped(Collector):
    """Another registry's metrics without the series of tenants the caller may not see."""

    def __init__(self, source: CollectorRegistry, slugs: set[str]) -> None:
        self.source, self.slugs = source, slugs

    def collect(self) -> Iterator[Metric]:
        for family in self.source.collect():
            kept = [s for s in family.samples if s.labels.get("tenant", None) in (None, *self.slugs)]
            if len(kept) != len(family.samples):
                family = _with_samples(family, kept)
            yield family


def _with_samples(family: Metric, samples: list) -> Metric:
    copy = Metric(family.name, family.documentation, family.type, family.unit)
    copy.samples = samples
    return copy


def _counters_registry() -> CollectorRegistry:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    return registry


def exposition(tenants: Iterable[tuple[int, str]]) -> bytes:
    """The text a scrape gets: counters, histograms and gauges of these (id, slug) tenants only."""
    tenants = list(tenants)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TenantScoped(_counters_registry(), {slug for _, slug in tenants}))
    registry.register(LedgerCollector([pk for pk, _ in tenants]))
    return generate_latest(registry)
