"""Least-privilege PostgreSQL roles: an owner that runs `migrate`, and a runtime role for the app.

The runtime role (web and worker processes) owns nothing, so it cannot ALTER or DROP a table, drop or
disable a trigger, or replace the trigger function: only the owner can. It reads and writes the ordinary
tables, and may only SELECT and INSERT on the append-only ones (no UPDATE, DELETE or TRUNCATE, on top of
the triggers). Every statement can be run again; run them after each `migrate` (as the owner or a
superuser), so new tables get the same rights.
"""

import re

from writeback.db import counters, stamps, triggers

# PostgreSQL identifiers we are willing to print unquoted-safe: no quoting games in generated SQL.
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


def valid_identifier(name: str) -> bool:
    return bool(_IDENTIFIER.match(name))


def runtime_role_sql(
    *, runtime_role: str, owner_role: str, database: str, schema: str = "public"
) -> list[str]:
    """GRANT/REVOKE statements that give `runtime_role` the app's rights, and no more."""
    for name in (runtime_role, owner_role, database, schema):
        if not valid_identifier(name):
            raise ValueError(f"not a plain PostgreSQL identifier: {name!r}")
    if runtime_role == owner_role:
        raise ValueError("the runtime role must not be the owner: the owner can drop the triggers")
    rt, owner, db, sch = (f'"{name}"' for name in (runtime_role, owner_role, database, schema))
    sql = [
        # A member of the owner role would have the owner's powers.
        f"REVOKE {owner} FROM {rt}",
        f"GRANT CONNECT ON DATABASE {db} TO {rt}",
        f"GRANT USAGE ON SCHEMA {sch} TO {rt}",
        # Nobody but the owner creates objects in the schema (PostgreSQL 15 and later: already so).
        f"REVOKE CREATE ON SCHEMA {sch} FROM PUBLIC",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {sch} FROM {rt}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {sch} FROM {rt}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {sch} TO {rt}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {sch} TO {rt}",
    ]
    for table, _, _ in triggers.PROTECTED_TABLES:
        sql.append(f'REVOKE UPDATE, DELETE, TRUNCATE ON {sch}."{table}" FROM {rt}')
    # Tables of later migrations get ordinary rights without waiting for the next run (never TRUNCATE).
    sql += [
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {sch} "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {rt}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {sch} GRANT USAGE, SELECT ON SEQUENCES TO {rt}",
    ]
    return sql


def ownership_sql(*, owner_role: str, tables: list[str], schema: str = "public") -> list[str]:
    """Hands existing tables (and the trigger function) to the owner role, for a database first
    migrated by another role. A table's own sequences follow it."""
    for name in (owner_role, schema, *tables):
        if not valid_identifier(name):
            raise ValueError(f"not a plain PostgreSQL identifier: {name!r}")
    sql = [f'ALTER TABLE "{schema}"."{table}" OWNER TO "{owner_role}"' for table in tables]
    # The count and stamp functions too: whoever owns one could make the ledger's counts lie, or keep
    # the contract stamp still so intake goes on deciding under a contract that changed.
    functions = ["writeback_refuse_change", *counters.PG_FUNCTIONS, *stamps.PG_FUNCTIONS]
    return [*sql, *(f'ALTER FUNCTION "{schema}".{name}() OWNER TO "{owner_role}"' for name in functions)]
