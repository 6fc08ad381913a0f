"""Claim latency: milliseconds per claim of 20 writes with 50,000 pending.

Run as a script against a prepared database (Django reads DATABASE_URL at start-up):

    DATABASE_URL=postgres://.../db python bench/claim.py --claims 200

Each claim is `claim_due(worker_id, 20)`, exactly as the worker calls it (the holds query, then
SELECT ... FOR UPDATE SKIP LOCKED and the lease UPDATE in one transaction). Between claims the claimed
writes are marked committed with a plain UPDATE (not timed), as if a worker had sent them, so every claim
sees the queue shrinking by 20 and the stream-order check meets committed predecessors. Prints JSON:
median and p95 milliseconds per claim, and PostgreSQL's own execution time for the claim's SELECT.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "writeback.settings")

import django  # noqa: E402

django.setup()

from django.db import connection, transaction  # noqa: E402

from writeback.models import Write  # noqa: E402
from writeback.services.holds import current_holds  # noqa: E402
from writeback.states import WriteState  # noqa: E402
from writeback.sync.claim import claim_due, due_writes  # noqa: E402


def explain_ms() -> float:
    """PostgreSQL's execution time for the claim's SELECT (EXPLAIN ANALYZE, median of 5)."""
    times = []
    for _ in range(5):
        with transaction.atomic():
            qs = due_writes(holds=current_holds()).select_for_update(skip_locked=True, of=("self",))
            sql, params = qs.select_related("tenant", "event")[:20].query.sql_with_params()
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
                plan = cursor.fetchone()[0]
            transaction.set_rollback(True)
        plan = json.loads(plan) if isinstance(plan, str) else plan
        times.append(plan[0]["Execution Time"])
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--claims", type=int, default=200)
    parser.add_argument("--batch", type=int, default=20)
    args = parser.parse_args()
    pending = Write.objects.filter(state=WriteState.PENDING).count()
    plan_ms = explain_ms()
    times = []
    for _ in range(args.claims):
        began = time.perf_counter()
        claimed = claim_due("bench-claimer", args.batch)
        times.append(time.perf_counter() - began)
        if len(claimed) != args.batch:
            raise SystemExit(f"claim returned {len(claimed)} writes, expected {args.batch}")
        Write.objects.filter(pk__in=[w.pk for w in claimed]).update(
            state=WriteState.COMMITTED, lease_owner="", lease_expires_at=None
        )
    times.sort()
    print(
        json.dumps(
            {
                "pending_at_start": pending,
                "claims": len(times),
                "median_ms": 1000 * statistics.median(times),
                "p95_ms": 1000 * times[int(0.95 * (len(times) - 1))],
                "select_execution_ms": plan_ms,
            }
        )
    )


if __name__ == "__main__":
    main()
