"""Database triggers that make the audit trail and business events append-only.

The application never updates, deletes or truncates these rows; the triggers make the database refuse it
too, so a bug, a console mistake or a stray SQL session cannot rewrite history. On PostgreSQL a
statement-level trigger also refuses TRUNCATE (row triggers never see it; SQLite has no TRUNCATE). Only
the tables' owner can drop a trigger (the runtime role is not the owner: writeback.db.roles), and what
it then changes is found by `verify_audit_chain`: the keyed hashes, and exported heads for a cut tail.
"""

from django.db.backends.base.base import BaseDatabaseWrapper

from writeback.db import execute_all

# (table, operations refused, message)
PROTECTED_TABLES = [
    ("writeback_auditentry", ("UPDATE", "DELETE"), "audit entries are append-only"),
    ("writeback_businessevent", ("UPDATE", "DELETE"), "business events are immutable"),
]


# Business events are immutable with one exception: retention (writeback.services.retention) may replace
# both payloads by a purge marker, {"purged_at": ...}, and nothing else. Every hash stays.
EVENT_TABLE = "writeback_businessevent"
PURGEABLE = ("raw_payload", "canonical_payload")


def _event_columns(connection: BaseDatabaseWrapper) -> list[str]:
    """The event table's columns as they are now (not as the model says: during migrations they differ,
    and SQLite re-checks triggers on every table rename)."""
    with connection.cursor() as cursor:
        columns = connection.introspection.get_table_description(cursor, EVENT_TABLE)
    return [c.name for c in columns if c.name not in PURGEABLE]


def _sqlite_purge_only(connection: BaseDatabaseWrapper) -> str:
    same = " AND ".join(f'OLD."{c}" IS NEW."{c}"' for c in _event_columns(connection))
    marker = " AND ".join(f"json_remove(NEW.{c}, '$.purged_at') = '{{}}'" for c in PURGEABLE)
    return f" WHEN NOT ({marker} AND {same})"


def _sqlite_trigger_name(table: str, op: str) -> str:
    return f"{table}_no_{op.lower()}"


def sqlite_create_sql(connection: BaseDatabaseWrapper | None = None) -> list[str]:
    if connection is None:
        from django.db import connection
    return [
        f"CREATE TRIGGER IF NOT EXISTS {_sqlite_trigger_name(table, op)} BEFORE {op} ON {table}"
        f"{_sqlite_purge_only(connection) if (table, op) == (EVENT_TABLE, 'UPDATE') else ''} "
        f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
        for table, ops, message in PROTECTED_TABLES
        for op in ops
    ]


def sqlite_drop_sql() -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS {_sqlite_trigger_name(table, op)}"
        for table, ops, _ in PROTECTED_TABLES
        for op in ops
    ]


def postgres_create_sql() -> list[str]:
    sql = [
        """
        CREATE OR REPLACE FUNCTION writeback_refuse_change() RETURNS trigger AS $$
        BEGIN
            RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'integrity_constraint_violation';
        END;
        $$ LANGUAGE plpgsql
        """,
        """
        CREATE OR REPLACE FUNCTION writeback_event_guard() RETURNS trigger AS $$
        BEGIN
            IF TG_OP = 'UPDATE'
               AND (to_jsonb(NEW) - 'raw_payload' - 'canonical_payload')
                   = (to_jsonb(OLD) - 'raw_payload' - 'canonical_payload')
               AND NEW.raw_payload ? 'purged_at' AND (NEW.raw_payload - 'purged_at') = '{}'::jsonb
               AND NEW.canonical_payload ? 'purged_at'
               AND (NEW.canonical_payload - 'purged_at') = '{}'::jsonb THEN
                RETURN NEW;
            END IF;
            RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'integrity_constraint_violation';
        END;
        $$ LANGUAGE plpgsql
        """,
    ]
    for table, ops, message in PROTECTED_TABLES:
        guard = "writeback_event_guard" if table == EVENT_TABLE else "writeback_refuse_change"
        sql.append(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        sql.append(
            f"CREATE TRIGGER {table}_append_only BEFORE {' OR '.join(ops)} ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {guard}('{message}')"
        )
    return sql + postgres_truncate_create_sql()


def postgres_truncate_create_sql() -> list[str]:
    """Statement-level: TRUNCATE (also through another table's TRUNCATE ... CASCADE) never fires row
    triggers. Needs writeback_refuse_change(), made by postgres_create_sql()."""
    sql = []
    for table, _, message in PROTECTED_TABLES:
        sql.append(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        sql.append(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION writeback_refuse_change('{message}')"
        )
    return sql


def postgres_truncate_drop_sql() -> list[str]:
    return [f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}" for table, _, _ in PROTECTED_TABLES]


def postgres_drop_sql() -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}" for table, _, _ in PROTECTED_TABLES
    ] + postgres_truncate_drop_sql()


def create_sql(connection: BaseDatabaseWrapper) -> list[str]:
    if connection.vendor == "postgresql":
        return postgres_create_sql()
    if connection.vendor == "sqlite":
        return sqlite_create_sql(connection)
    raise NotImplementedError(f"append-only triggers are not written for {connection.vendor}")


def drop_sql(connection: BaseDatabaseWrapper) -> list[str]:
    if connection.vendor == "postgresql":
        return postgres_drop_sql()
    if connection.vendor == "sqlite":
        return sqlite_drop_sql()
    return []


def install(connection: BaseDatabaseWrapper) -> None:
    execute_all(connection, create_sql(connection))


def uninstall(connection: BaseDatabaseWrapper) -> None:
    execute_all(connection, drop_sql(connection))
