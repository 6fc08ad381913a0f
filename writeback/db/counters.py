"""Triggers that keep the ledger's running counts (writeback.models.counts) in the writer's transaction.

Why triggers and not calls in `transition()`: writes are created by intake, replay, compensation and
conflict resolution (several with `bulk_create`) and moved by `transition()` and the
worker's guarded updates; a trigger counts every one of them, and any path added later, with no way to
forget one. The triggers only INSERT delta rows, never update a shared counter row, so concurrent
writers neither lose increments nor wait on each other.

PostgreSQL: statement-level triggers with transition tables (one grouped INSERT per statement, so a bulk
create of 1,000 writes adds a handful of rows). SQLite: row-level triggers (SQLite has no other kind).

SQLite drops a table's triggers when a migration rebuilds the table (adding or altering a column), so
`ensure_installed` runs after every `migrate` and rebuilds the counts when it had to put them back.
"""

from django.db.backends.base.base import BaseDatabaseWrapper

from writeback.db import execute_all, installed_triggers

WRITES = "writeback_write"
ATTEMPTS = "writeback_writeattempt"
EVENTS = "writeback_businessevent"
WRITE_COUNTS = "writeback_writecount"
HOUR_COUNTS = "writeback_hourcount"

PG_FUNCTIONS = ("writeback_count_writes", "writeback_count_attempts", "writeback_count_events")
PG_TRIGGERS = {
    "writeback_write_count_ins": (WRITES, "INSERT", "NEW TABLE AS new_rows", "writeback_count_writes"),
    "writeback_write_count_upd": (
        WRITES,
        "UPDATE",
        "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "writeback_count_writes",
    ),
    "writeback_write_count_del": (WRITES, "DELETE", "OLD TABLE AS old_rows", "writeback_count_writes"),
    "writeback_attempt_count_ins": (ATTEMPTS, "INSERT", "NEW TABLE AS new_rows", "writeback_count_attempts"),
    "writeback_event_count_ins": (EVENTS, "INSERT", "NEW TABLE AS new_rows", "writeback_count_events"),
}

_PG_FUNCTIONS = [
    f"""
    CREATE OR REPLACE FUNCTION writeback_count_writes() RETURNS trigger AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO {WRITE_COUNTS} (tenant_id, state, resource_type, n)
            SELECT tenant_id, state, resource_type, count(*) FROM new_rows GROUP BY 1, 2, 3;
        ELSIF TG_OP = 'DELETE' THEN
            INSERT INTO {WRITE_COUNTS} (tenant_id, state, resource_type, n)
            SELECT tenant_id, state, resource_type, -count(*) FROM old_rows GROUP BY 1, 2, 3;
        ELSE
            -- Lease renewals and other updates that keep the key net to zero and add nothing.
            INSERT INTO {WRITE_COUNTS} (tenant_id, state, resource_type, n)
            SELECT tenant_id, state, resource_type, sum(d) FROM (
                SELECT tenant_id, state, resource_type, -1 AS d FROM old_rows
                UNION ALL
                SELECT tenant_id, state, resource_type, 1 AS d FROM new_rows
            ) AS moved GROUP BY 1, 2, 3 HAVING sum(d) <> 0;
        END IF;
        RETURN NULL;
    END;
    $$ LANGUAGE plpgsql
    """,  # noqa: S608 (fixed table names)
    f"""
    CREATE OR REPLACE FUNCTION writeback_count_attempts() RETURNS trigger AS $$
    BEGIN
        INSERT INTO {HOUR_COUNTS} (tenant_id, hour, resource_type, outcome, n)
        SELECT w.tenant_id, date_trunc('hour', a.started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
               w.resource_type, a.outcome, count(*)
        FROM new_rows a JOIN {WRITES} w ON w.id = a.write_id
        GROUP BY 1, 2, 3, 4;
        RETURN NULL;
    END;
    $$ LANGUAGE plpgsql
    """,  # noqa: S608 (fixed table names)
    f"""
    CREATE OR REPLACE FUNCTION writeback_count_events() RETURNS trigger AS $$
    BEGIN
        INSERT INTO {HOUR_COUNTS} (tenant_id, hour, resource_type, outcome, n)
        SELECT tenant_id, date_trunc('hour', received_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
               '', 'event', count(*)
        FROM new_rows GROUP BY 1, 2;
        RETURN NULL;
    END;
    $$ LANGUAGE plpgsql
    """,  # noqa: S608 (fixed table names)
]

# Django stores SQLite datetimes as UTC text "YYYY-MM-DD HH:MM:SS[.ffffff]".
_SQLITE_HOUR = "strftime('%Y-%m-%d %H:00:00', {})"
_INSERT_WRITE_COUNT = f"INSERT INTO {WRITE_COUNTS} (tenant_id, state, resource_type, n) VALUES"
SQLITE_TRIGGERS = {
    "writeback_write_count_ins": (
        f"AFTER INSERT ON {WRITES} BEGIN "
        f"{_INSERT_WRITE_COUNT} (NEW.tenant_id, NEW.state, NEW.resource_type, 1); END"
    ),
    "writeback_write_count_upd": (
        f"AFTER UPDATE OF state, tenant_id, resource_type ON {WRITES} "
        "WHEN OLD.state IS NOT NEW.state OR OLD.tenant_id IS NOT NEW.tenant_id "
        "OR OLD.resource_type IS NOT NEW.resource_type BEGIN "
        f"{_INSERT_WRITE_COUNT} (OLD.tenant_id, OLD.state, OLD.resource_type, -1); "
        f"{_INSERT_WRITE_COUNT} (NEW.tenant_id, NEW.state, NEW.resource_type, 1); END"
    ),
    "writeback_write_count_del": (
        f"AFTER DELETE ON {WRITES} BEGIN "
        f"{_INSERT_WRITE_COUNT} (OLD.tenant_id, OLD.state, OLD.resource_type, -1); END"
    ),
    "writeback_attempt_count_ins": (
        f"AFTER INSERT ON {ATTEMPTS} BEGIN "  # noqa: S608
        f"INSERT INTO {HOUR_COUNTS} (tenant_id, hour, resource_type, outcome, n) "
        f"SELECT w.tenant_id, {_SQLITE_HOUR.format('NEW.started_at')}, w.resource_type, NEW.outcome, 1 "
        f"FROM {WRITES} w WHERE w.id = NEW.write_id; END"
    ),
    "writeback_event_count_ins": (
        f"AFTER INSERT ON {EVENTS} BEGIN "  # noqa: S608
        f"INSERT INTO {HOUR_COUNTS} (tenant_id, hour, resource_type, outcome, n) "
        f"VALUES (NEW.tenant_id, {_SQLITE_HOUR.format('NEW.received_at')}, '', 'event', 1); END"
    ),
}


def sqlite_create_sql() -> list[str]:
    return [f"CREATE TRIGGER IF NOT EXISTS {name} {body}" for name, body in SQLITE_TRIGGERS.items()]


def sqlite_drop_sql() -> list[str]:
    return [f"DROP TRIGGER IF EXISTS {name}" for name in SQLITE_TRIGGERS]


def postgres_create_sql() -> list[str]:
    sql = list(_PG_FUNCTIONS)
    for name, (table, op, referencing, function) in PG_TRIGGERS.items():
        sql.append(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        sql.append(
            f"CREATE TRIGGER {name} AFTER {op} ON {table} REFERENCING {referencing} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
        )
    return sql


def postgres_drop_sql() -> list[str]:
    return [f"DROP TRIGGER IF EXISTS {name} ON {table}" for name, (table, *_) in PG_TRIGGERS.items()]


def create_sql(connection: BaseDatabaseWrapper) -> list[str]:
    if connection.vendor == "postgresql":
        return postgres_create_sql()
    if connection.vendor == "sqlite":
        return sqlite_create_sql()
    raise NotImplementedError(f"count triggers are not written for {connection.vendor}")


def drop_sql(connection: BaseDatabaseWrapper) -> list[str]:
    if connection.vendor == "postgresql":
        return postgres_drop_sql()
    if connection.vendor == "sqlite":
        return sqlite_drop_sql()
    return []


def names(connection: BaseDatabaseWrapper) -> set[str]:
    return set(PG_TRIGGERS if connection.vendor == "postgresql" else SQLITE_TRIGGERS)


def installed(connection: BaseDatabaseWrapper) -> set[str]:
    return installed_triggers(connection, names(connection))


def install(connection: BaseDatabaseWrapper) -> None:
    execute_all(connection, create_sql(connection))


def uninstall(connection: BaseDatabaseWrapper) -> None:
    execute_all(connection, drop_sql(connection))
