"""Database triggers that make the audit trail and business events append-only.

The application never updates, deletes or truncates these rows; the triggers make the database refuse it
too, so a bug, a console mistake or a stray SQL session cannot rewrite history. On PostgreSQL a
statement-level trigger also refuses TRUNCATE (row triggers never see it; SQLite has no TRUNCATE). Only
the tables' owner can drop a trigger (the runtime role is not the owner: writeback.db.roles), and what
it then changes is found by `verify_audit_chain`: the keyed hashes, and exported heads for a cut tail.
"""

from django.db.backends.base.base import BaseDatabaseWrapper

# (table, operations refused, message)
PROTECTED_TABLES = [
    ("writeback_auditentry", ("UPDATE", "DELETE"), "audit entries are append-only"),
    ("writeback_businessevent", ("UPDATE", "DELETE"), "business events are immutable"),
]


def _sqlite_trigger_name(table: str, op: str) -> str:
    return f"{table}_no_{op.lower()}"


def sqlite_create_sql() -> list[str]:
    return [
        f"CREATE TRIGGER IF NOT EXISTS {_sqlite_trigger_name(table, op)} BEFORE {op} ON {table} "
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
        """
    ]
    for table, ops, message in PROTECTED_TABLES:
        sql.append(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        sql.append(
            f"CREATE TRIGGER {table}_append_only BEFORE {' OR '.join(ops)} ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION writeback_refuse_change('{message}')"
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
        return sqlite_create_sql()
    raise NotImplementedError(f"append-only triggers are not written for {connection.vendor}")


def drop_sql(connection: BaseDatabaseWrapper) -> list[str]:
    if connection.vendor == "postgresql":
        return postgres_drop_sql()
    if connection.vendor == "sqlite":
        return sqlite_drop_sql()
    return []


def install(connection: BaseDatabaseWrapper) -> None:
    with connection.cursor() as cursor:
        for statement in create_sql(connection):
            cursor.execute(statement)


def uninstall(connection: BaseDatabaseWrapper) -> None:
    with connection.cursor() as cursor:
        for statement in drop_sql(connection):
            cursor.execute(statement)
