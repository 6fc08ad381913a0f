"""Database triggers that make the audit trail and business events append-only.

The application never updates or deletes these rows; the triggers make the database refuse it too, so a
bug, a console mistake or a stray SQL session cannot rewrite history. Only a schema owner who drops a
trigger can alter a row, and `verify_audit_chain` then finds the broken link.
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
    return sql


def postgres_drop_sql() -> list[str]:
    return [f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}" for table, _, _ in PROTECTED_TABLES]


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
