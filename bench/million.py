"""A million writes for the console benchmark, made in minutes, against the database named by DATABASE_URL.

    python bench/million.py seed                  # migrate, then the demo's realistic ledger, sent
    python bench/million.py multiply --writes N   # clone the seed in SQL until the ledger holds N writes

seed runs the product itself: the demo's four vendor simulators (in this process), its tenants, people
and consents, its opening events posted through the API (vitals, problems, notes, allergies, medication
reconciliations, referrals, demographics; a conflict, a parked stream, a shadow tenant), then a sync
worker drains them until idle. That gives a few dozen events with writes in the states a real ledger
has, their attempts, audit entries, alerts, approvals and conflicts.

multiply copies that seed K times with one `INSERT … SELECT … generate_series` per table (PostgreSQL
only), so every copy has exactly the shape the product gave, with: ids offset per copy (foreign keys
follow), fresh uuids (md5 of the old one and the copy number, so audit entries still name their write
and event), patients renumbered (pat-1001 .. pat-1020 become 20 new patients per copy, in the columns
and in the payloads), idempotency keys, message and correlation ids made unique, and every timestamp
moved back so the copies spread over the last 90 days (the newest copy is the seed, now). The audit
entries keep the chain's shape, but their hashes are made up: `verify_audit_chain` fails on such a
database, and no page measured verifies the chain.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "writeback.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

SPREAD_DAYS = 90
PATIENTS_PER_COPY = 20  # the demo's patients: pat-1001 .. pat-1020
# table -> (primary key, {foreign key column: cloned table it points to})
CLONED = {
    "writeback_businessevent": ("id", {"compensates_id": "writeback_businessevent"}),
    "writeback_write": (
        "id",
        {
            "event_id": "writeback_businessevent",
            "supersedes_id": "writeback_write",
            "compensates_id": "writeback_write",
            "replay_of_id": "writeback_write",
        },
    ),
    "writeback_writeattempt": ("id", {"write_id": "writeback_write"}),
    "writeback_approval": ("id", {"write_id": "writeback_write"}),
    "writeback_conflict": ("id", {"write_id": "writeback_write", "resolution_write_id": "writeback_write"}),
    "writeback_alert": ("id", {"write_id": "writeback_write"}),
    "writeback_auditentry": ("seq", {}),
}
UNIQUE_TEXT = ("idempotency_key", "source_message_id", "correlation_id", "request_id")
NEW_PATIENT = f"'pat-' || (substring(s.patient_ref from 'pat-([0-9]+)$')::int + {PATIENTS_PER_COPY} * k)"


def seed(_: argparse.Namespace) -> dict:
    from adapters.simulator import start_simulator
    from writeback import demo
    from writeback.sync.worker import SyncWorker

    call_command("migrate", verbosity=0)
    sims = {p: start_simulator(p, port=0, seed="demo") for p in demo.PROFILES}
    try:
        demo.seed(sims, io.StringIO())
        sent = SyncWorker(concurrency=4, until_idle=True, idle_sleep=0.2).run().processed
        _decide_some()
        sent += SyncWorker(concurrency=4, until_idle=True, idle_sleep=0.2).run().processed
    finally:
        for sim in sims.values():
            sim.stop()
    return {"sent": sent, **counts()}


def _decide_some() -> None:
    """What people do in a day: a clinician approves one write and rejects another, an admin rolls
    one back (so the seed has approvals, a rejection, a compensation and its compensating write)."""
    from django.contrib.auth.models import User

    from writeback.models import Write
    from writeback.services.approvals import write_approve, write_reject
    from writeback.services.compensation import write_compensate

    bob, ada = User.objects.get(username="bob.clinician"), User.objects.get(username="ada.admin")
    waiting = list(Write.objects.filter(state="awaiting_approval").order_by("id")[:2])
    if waiting:
        write_approve(write=waiting[0], user=bob, rationale="reviewed with the patient", channel="console")
    if len(waiting) > 1:
        write_reject(write=waiting[1], user=bob, rationale="duplicate of the chart entry", channel="console")
    committed = (
        Write.objects.filter(state="committed", resource_type="Observation", tenant__slug="generic-main")
        .order_by("id")
        .first()
    )
    if committed:
        write_compensate(write=committed, user=ada, kind="rollback", reason="sent to the wrong encounter")


def counts() -> dict:
    with connection.cursor() as cursor:
        out = {}
        for table in CLONED:
            cursor.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 - our own table names
            out[table.removeprefix("writeback_")] = cursor.fetchone()[0]
        cursor.execute("SELECT state, count(*) FROM writeback_write GROUP BY 1 ORDER BY 2 DESC")
        out["states"] = dict(cursor.fetchall())
    return out


def _columns(cursor, table: str) -> list[tuple[str, str]]:
    cursor.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s "
        "ORDER BY ordinal_position",
        [table],
    )
    return cursor.fetchall()


def _secondary_indexes(cursor, table: str) -> list[tuple[str, str]]:
    """(name, CREATE INDEX statement) of the table's indexes that back no constraint."""
    cursor.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s "
        "AND indexname NOT IN (SELECT conname FROM pg_constraint)",
        [table],
    )
    return cursor.fetchall()


def _expression(table: str, column: str, kind: str, spans: dict[str, int], copies: int) -> str:
    """What copy k of seed row s holds in `column`."""
    pk, fks = CLONED[table]
    c = f"s.{column}"
    if column == pk:
        return f"{c} + k * {spans[table]}"
    if column in fks:
        return f"{c} + k * {spans[fks[column]]}"
    if column == "compensation_id":
        return "NULL"  # compensations are not cloned
    if kind == "uuid":
        return f"md5({c}::text || ':' || k)::uuid"
    if kind == "timestamp with time zone":
        # Copy k is (copies + 1 - k) steps older than the seed: the higher the id, the newer the row.
        return f"{c} - ({copies} + 1 - k) * interval '{SPREAD_DAYS * 86400 / max(1, copies):.3f} seconds'"
    if column in ("write_uid", "event_uid"):
        return f"CASE WHEN {c} = '' THEN '' ELSE md5({c} || ':' || k)::uuid::text END"
    if column in ("hash", "prev_hash"):
        return f"encode(sha256(convert_to({c} || ':' || k, 'UTF8')), 'hex')"
    if (table, column) == ("writeback_alert", "subject"):
        # One firing alert per tenant, code and subject (alert_one_firing): a copy is another subject.
        return f"CASE WHEN {c} = '' THEN {c} ELSE {c} || ' #' || k END"
    if column in UNIQUE_TEXT:
        return f"CASE WHEN {c} IS NULL OR {c} = '' THEN {c} ELSE {c} || '-' || k END"
    if column == "patient_ref":
        return f"CASE WHEN s.patient_ref ~ 'pat-[0-9]+$' THEN {NEW_PATIENT} ELSE s.patient_ref END"
    if column == "stream_key":
        return f"replace({c}, ':' || s.patient_ref || ':', ':' || {NEW_PATIENT} || ':')"
    if kind == "jsonb" and column in ("payload", "raw_payload", "canonical_payload"):
        # "pat-1003" and "Patient/pat-1003" alike: the id followed by its closing quote.
        return (
            f"CASE WHEN s.patient_ref ~ 'pat-[0-9]+$' THEN replace({c}::text, "
            f"s.patient_ref || '\"', {NEW_PATIENT} || '\"')::jsonb ELSE {c} END"
        )
    return c


def multiply(args: argparse.Namespace) -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM writeback_write")
        seed_writes = cursor.fetchone()[0]
        copies = max(0, -(-args.writes // seed_writes) - 1)  # the seed is copy 0
        spans = {}
        for table, (pk, _) in CLONED.items():
            cursor.execute(f"SELECT coalesce(max({pk}), 0) FROM {table}")  # noqa: S608
            spans[table] = cursor.fetchone()[0] + 1
        cursor.execute("SET synchronous_commit = off")
        cursor.execute("SET maintenance_work_mem = '512MB'")
        timings = {}
        # Parents before children, one statement per table: the copies of a whole table in one go, into
        # the table without its secondary indexes (built again afterwards, much faster in bulk).
        for table in CLONED:
            began = time.monotonic()
            indexes = _secondary_indexes(cursor, table)
            for name, _ in indexes:
                cursor.execute(f'DROP INDEX "{name}"')
            columns = _columns(cursor, table)
            names = ", ".join(name for name, _ in columns)
            exprs = ", ".join(_expression(table, name, kind, spans, copies) for name, kind in columns)
            if "patient_ref" not in {n for n, _ in columns}:
                exprs = exprs.replace("s.patient_ref", "''")
            cursor.execute(
                f"INSERT INTO {table} ({names}) SELECT {exprs} "  # noqa: S608 - built from the schema
                f"FROM {table} AS s, generate_series(1, %s) AS k WHERE s.{CLONED[table][0]} < %s",
                [copies, spans[table]],
            )
            for _, definition in indexes:
                cursor.execute(definition)
            timings[table.removeprefix("writeback_")] = round(time.monotonic() - began, 1)
        for table, (pk, _) in CLONED.items():
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{pk}'), (SELECT max({pk}) FROM {table}))"  # noqa: S608
            )
        began = time.monotonic()
        cursor.execute("VACUUM ANALYZE")
        timings["analyze"] = round(time.monotonic() - began, 1)
    return {"copies": copies, "seconds": timings, **counts()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("seed").set_defaults(run=seed)
    m = sub.add_parser("multiply")
    m.add_argument("--writes", type=int, required=True)
    m.set_defaults(run=multiply)
    sub.add_parser("counts").set_defaults(run=lambda _: counts())
    args = parser.parse_args()
    print(json.dumps(args.run(args)))


if __name__ == "__main__":
    main()
