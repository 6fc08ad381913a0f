"""Triggers that change the contract stamp (writeback.models.ContractStamp) on any change to the contract
rows, the overrides or the capabilities, so an in-memory copy of a tenant's contract is never used after
a change, whichever process or path made it.

PostgreSQL: one statement-level trigger per table (TRUNCATE included). SQLite: row-level triggers per
operation; SQLite drops them when a migration rebuilds the table, so `ensure_installed` runs after every
`migrate` (writeback.apps), as the count triggers do.
"""

from django.db.backends.base.base import BaseDatabaseWrapper

from writeback.db import execute_all, installed_triggers

STAMP = "writeback_contractstamp"
TABLES = ("writeback_contractrule", "writeback_contractoverride", "writeback_capability")
OPERATIONS = ("INSERT", "UPDATE", "DELETE")

PG_FUNCTIONS = ("writeback_bump_contract_stamp",)
PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION writeback_bump_contract_stamp() RETURNS trigger AS $$
BEGIN
    UPDATE {STAMP} SET value = floor(random() * 9.2e18)::bigint;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql
"""  # noqa: S608 (a fixed table name)
_SQLITE_BODY = f"BEGIN UPDATE {STAMP} SET value = random(); END"  # noqa: S608 (a fixed table name)
PG_TRIGGERS = {f"{table}_stamp": table for table in TABLES}
SQLITE_TRIGGERS = {f"{table}_stamp_{op.lower()}": (table, op) for table in TABLES for op in OPERATIONS}


def create_sql(connection: BaseDatabaseWrapper) -> list[str]:
    if connection.vendor == "postgresql":
        sql = [PG_FUNCTION]
        for name, table in PG_TRIGGERS.items():
            sql.append(f"DROP TRIGGER IF EXISTS {name} ON {table}")
            sql.append(
                f"CREATE TRIGGER {name} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION writeback_bump_contract_stamp()"
            )
        return sql
    if connection.vendor == "sqlite":
        return [
            f"CREATE TRIGGER IF NOT EXISTS {name} AFTER {op} ON {table} {_SQLITE_BODY}"
            for name, (table, op) in SQLITE_TRIGGERS.items()
        ]
    raise NotImplementedError(f"contract stamp triggers are not written for {connection.vendor}")


def drop_sql(connection: BaseDatabaseWrapper) -> list[str]:
    if connection.vendor == "postgresql":
        return [f"DROP TRIGGER IF EXISTS {name} ON {table}" for name, table in PG_TRIGGERS.items()]
    if connection.vendor == "sqlite":
        return [f"DROP TRIGGER IF EXISTS {name}" for name in SQLITE_TRIGGERS]
    return []


def names(connection: BaseDatabaseWrapper) -> set[str]:
    return set(PG_TRIGGERS if connection.vendor == "postgresql" else SQLITE_TRIGGERS)


def installed(connection: BaseDatabaseWrapper) -> set[str]:
    return installed_triggers(connection, names(connection))


def install(connection: BaseDatabaseWrapper) -> None:
    with connection.cursor() as cursor:
        for statement in create_sql(connection):
            cursor.execute(statement)
        # The one row (a new stamp too: whatever was in memory was kept under another value).
        cursor.execute(f"SELECT count(*) FROM {STAMP}")  # noqa: S608
        if not cursor.fetchone()[0]:
            cursor.execute(f"INSERT INTO {STAMP} (value) VALUES (1)")  # noqa: S608
        cursor.execute(f"UPDATE {STAMP} SET value = value + 1")  # noqa: S608


def uninstall(connection: BaseDatabaseWrapper) -> None:
    execute_all(connection, drop_sql(connection))


def ensure_installed(connection: BaseDatabaseWrapper) -> bool:
    """Puts back missing stamp triggers (and the row); True if it had to."""
    if connection.vendor not in ("postgresql", "sqlite"):
        return False
    if installed(connection) == names(connection):
        return False
    install(connection)
    return True
