"""The ledger's running counts: folding their delta rows, and rebuilding them from the ledger.

The triggers in writeback.db.counters keep the counts; nothing here is needed for them to be right.
`compact` only keeps the tables small (the worker's housekeeping runs it); `rebuild` recomputes them
from the ledger after a restore, a manual repair or a trigger that was missing (`rebuild_counts`).
"""

from collections import defaultdict
from datetime import UTC

from django.db import connection, transaction
from django.db.models import Count
from django.db.models.functions import TruncHour
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from writeback.db import counters
from writeback.models import BusinessEvent, HourCount, Write, WriteAttempt, WriteCount


@transaction.atomic
def compact() -> int:
    """Folds the delta rows into one row per key (keys that net to zero vanish); returns the rows removed.

    DELETE ... RETURNING takes exactly the rows it removes, so a delta committed meanwhile by another
    transaction is either folded here or left for the next pass, never lost or counted twice."""
    removed = 0
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {counters.WRITE_COUNTS} RETURNING tenant_id, state, resource_type, n")  # noqa: S608
        deleted = cursor.fetchall()
        removed += len(deleted)
        writes: dict[tuple, int] = defaultdict(int)
        for tenant_id, state, resource_type, n in deleted:
            writes[(tenant_id, state, resource_type)] += n
        cursor.execute(
            f"DELETE FROM {counters.HOUR_COUNTS} RETURNING tenant_id, hour, resource_type, outcome, n"  # noqa: S608
        )
        deleted = cursor.fetchall()
        removed += len(deleted)
        hours: dict[tuple, int] = defaultdict(int)
        for tenant_id, hour, resource_type, outcome, n in deleted:
            hours[(tenant_id, _aware(hour), resource_type, outcome)] += n
    WriteCount.objects.bulk_create(
        WriteCount(tenant_id=t, state=s, resource_type=r, n=n) for (t, s, r), n in writes.items() if n
    )
    HourCount.objects.bulk_create(
        HourCount(tenant_id=t, hour=h, resource_type=r, outcome=o, n=n)
        for (t, h, r, o), n in hours.items()
        if n
    )
    folded = len([n for n in writes.values() if n]) + len([n for n in hours.values() if n])
    return removed - folded


@transaction.atomic
def rebuild() -> tuple[int, int]:
    """Replaces the counts with a GROUP BY of the ledger; returns (write count rows, hour count rows).

    On PostgreSQL the counted tables are locked against writers (SHARE) for the length of the
    rebuild, so no transition lands between emptying the counts and reading the ledger."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"LOCK TABLE {counters.WRITES}, {counters.ATTEMPTS}, {counters.EVENTS} IN SHARE MODE"
            )
    WriteCount.objects.all().delete()
    HourCount.objects.all().delete()
    write_rows = WriteCount.objects.bulk_create(
        WriteCount(tenant_id=r["tenant_id"], state=r["state"], resource_type=r["resource_type"], n=r["n"])
        for r in Write.objects.order_by()
        .values("tenant_id", "state", "resource_type")
        .annotate(n=Count("id"))
    )
    attempts = (
        WriteAttempt.objects.order_by()
        .annotate(hour=TruncHour("started_at", tzinfo=UTC))
        .values("write__tenant_id", "hour", "write__resource_type", "outcome")
        .annotate(n=Count("id"))
    )
    events = (
        BusinessEvent.objects.order_by()
        .annotate(hour=TruncHour("received_at", tzinfo=UTC))
        .values("tenant_id", "hour")
        .annotate(n=Count("id"))
    )
    hour_rows = HourCount.objects.bulk_create(
        [
            *(
                HourCount(
                    tenant_id=r["write__tenant_id"],
                    hour=_aware(r["hour"]),
                    resource_type=r["write__resource_type"],
                    outcome=r["outcome"],
                    n=r["n"],
                )
                for r in attempts
            ),
            *(
                HourCount(
                    tenant_id=r["tenant_id"],
                    hour=_aware(r["hour"]),
                    resource_type="",
                    outcome=HourCount.EVENT,
                    n=r["n"],
                )
                for r in events
            ),
        ]
    )
    return len(write_rows), len(hour_rows)


def ensure_installed(using: str = "default") -> bool:
    """Puts back missing count triggers and, if any were missing, rebuilds the counts; True if it did.
    Run after every `migrate`: on SQLite, rebuilding a table for a new column drops its triggers."""
    conn = transaction.get_connection(using)
    if conn.vendor not in ("postgresql", "sqlite"):
        return False
    if counters.installed(conn) == counters.names(conn):
        return False
    with transaction.atomic(using=using):
        counters.install(conn)
        rebuild()
    return True


def _aware(value):
    # Raw SQLite rows hand back text; PostgreSQL and the ORM hand back datetimes, naive on SQLite.
    if isinstance(value, str):
        value = parse_datetime(value)
    if timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    return value
