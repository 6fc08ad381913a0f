"""Audit chain hashing, in process, no database: entries/s for the steps an append and a verification pay.

    python bench/audit_hash.py [--entries 20000] [--runs 5] [--walk]

- normalize: an entry's data made JSON-plain (what the database gives back), as `record_many` does;
- hash: an entry's chain hash (`compute_hash`): canonical JSON, then the digest;
- verify: `verify_chain` over a ready chain in memory (links, numbers, hashes; no SQL);
- walk (--walk): `verify_chain()` reading the chain from a throwaway SQLite database, as the command does.

Entries carry data shaped like the trail's own (state changes, intake, attempts). Prints the median of
--runs runs (min-max) per step, in entries per CPU second of this process (the process's CPU time, so
other work on a shared machine weighs less on the figures than it would on wall-clock time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _django(database: Path | None) -> None:
    if database is not None:
        os.environ["DATABASE_URL"] = f"sqlite:///{database}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "writeback.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def _datas(n: int) -> list[dict]:
    at = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    shapes = [
        lambda i: {"from": "pending", "to": "committed", "reason": "201 Created", "version": str(i)},
        lambda i: {
            "type": "vitals.recorded",
            "kind": "clinical",
            "writes": [str(uuid.UUID(int=i)), str(uuid.UUID(int=i + 1))],
            "occurred_at": at + timedelta(seconds=i),
            "consent": {"id": str(uuid.UUID(int=i + 2)), "scope": ["Observation"], "status": "active"},
            "identifier": f"MRN{i}",
        },
        lambda i: {
            "attempt": i % 7,
            "status": 503,
            "latency_ms": Decimal("12.5"),
            "retry_after": 30,
            "url": f"http://ehr.example.org/fhir/Observation/{i}",
            "error": "Service Unavailable: maintenance window",
        },
    ]
    return [shapes[i % len(shapes)](i) for i in range(n)]


def _chain(audit, datas: list[dict]):
    from writeback.models import AuditEntry

    key_id = audit.current_key_id() if hasattr(audit, "current_key_id") else None
    prev, entries, at = audit.GENESIS_HASH, [], datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    for seq, data in enumerate(datas, start=1):
        entry = AuditEntry(
            seq=seq,
            at=at,
            actor="worker:bench:1",
            action="write.transition",
            tenant="generic-main",
            object_type="write",
            object_id=str(uuid.UUID(int=seq)),
            write_uid=str(uuid.UUID(int=seq)),
            correlation_id=str(uuid.UUID(int=seq * 7)),
            data=audit._normalize(data),
            prev_hash=prev,
        )
        if key_id is not None:
            entry.key_id = key_id
        entry.hash = audit.compute_hash(entry)
        prev = entry.hash
        entries.append(entry)
    return entries


def _fill_database(audit, datas: list[dict]) -> None:
    from django.core.management import call_command

    from writeback.models import AuditAction

    call_command("migrate", verbosity=0)
    for start in range(0, len(datas), 500):
        audit.record_many(
            [
                audit.draft(AuditAction.WRITE_TRANSITION, actor="bench", data=d)
                for d in datas[start : start + 500]
            ]
        )


def _rate(step: Callable[[], None], items: int, runs: int) -> tuple[float, float, float]:
    rates = []
    for _ in range(runs):
        start = time.process_time()
        step()
        rates.append(items / (time.process_time() - start))
    return statistics.median(rates), min(rates), max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--walk", action="store_true", help="also time a verification read from SQLite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        _django(Path(folder) / "walk.sqlite3" if args.walk else None)
        _measure(args)


def _measure(args: argparse.Namespace) -> None:
    from writeback.services import audit

    datas = _datas(args.entries)
    chain = _chain(audit, datas)
    steps = {
        "normalize": lambda: [audit._normalize(d) for d in datas],
        "hash": lambda: [audit.compute_hash(e) for e in chain],
        "verify": lambda: audit.verify_chain(chain),
    }
    if args.walk:
        _fill_database(audit, datas)
        steps["walk"] = audit.verify_chain
    keyed = "keyed HMAC-SHA256" if getattr(chain[0], "key_id", "") else "unkeyed SHA-256"
    print(f"{args.entries} entries, {keyed}, median of {args.runs} runs (min-max), entries per CPU second")
    for name, step in steps.items():
        median, low, high = _rate(step, args.entries, args.runs)
        print(f"  {name:<10} {median:>10,.0f}  ({low:,.0f}-{high:,.0f})")


if __name__ == "__main__":
    main()
