"""Least-privilege database roles (db_roles_sql): the runtime role may SELECT and INSERT audit entries and
nothing more; it owns nothing, so it cannot drop or disable the triggers that keep the trail append-only.

The PostgreSQL test creates a throwaway login role (unique name) on the shared server, applies the
printed statements, connects as that role and tries every way around; the role is dropped afterwards.
"""

import uuid
from io import StringIO

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from psycopg import errors

from writeback.models import AuditAction, AuditEntry, BusinessEvent
from writeback.services import audit


def _sql(*args: str) -> list[str]:
    out = StringIO()
    call_command("db_roles_sql", *args, stdout=out)
    return [line.rstrip(";") for line in out.getvalue().splitlines() if not line.startswith("--")]


def test_the_statements_grant_only_select_and_insert_on_the_append_only_tables(db):
    sql = _sql("--runtime-role", "wb_app", "--owner-role", "wb_owner", "--dbname", "writeback")
    assert 'REVOKE UPDATE, DELETE, TRUNCATE ON "public"."writeback_auditentry" FROM "wb_app"' in sql
    assert 'REVOKE UPDATE, DELETE, TRUNCATE ON "public"."writeback_businessevent" FROM "wb_app"' in sql
    assert 'REVOKE "wb_owner" FROM "wb_app"' in sql
    grants = [s for s in sql if "GRANT" in s and not s.startswith("REVOKE")]
    assert not [s for s in grants if "TRUNCATE" in s or "TRIGGER" in s or "GRANT ALL" in s]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--runtime-role", "wb_app", "--owner-role", "wb_app", "--dbname", "x"], "must not be the owner"),
        (["--runtime-role", 'wb"; DROP TABLE x; --', "--owner-role", "o", "--dbname", "x"], "identifier"),
        (["--runtime-role", "wb_app", "--owner-role", "wb_owner", "--dbname", "bad name"], "identifier"),
    ],
)
def test_bad_names_are_refused(db, args, message):
    with pytest.raises(CommandError, match=message):
        _sql(*args)


def test_the_database_is_the_configured_one_or_must_be_named(db):
    if connection.vendor == "postgresql":
        sql = _sql("--runtime-role", "wb_app", "--owner-role", "wb_owner")
        assert f'GRANT CONNECT ON DATABASE "{connection.settings_dict["NAME"]}" TO "wb_app"' in sql
    else:
        with pytest.raises(CommandError, match="--dbname"):
            _sql("--runtime-role", "wb_app", "--owner-role", "wb_owner")


@pytest.fixture
def runtime_role(transactional_db):
    """A throwaway runtime role with the printed rights, as a connection; dropped afterwards."""
    name = f"wb_test_runtime_{uuid.uuid4().hex[:12]}"
    settings = connection.settings_dict
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        owner = cursor.fetchone()[0]
        cursor.execute(f'CREATE ROLE "{name}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS')
    try:
        with connection.cursor() as cursor:
            for statement in _sql("--runtime-role", name, "--owner-role", owner):
                cursor.execute(statement)
        conn = psycopg.connect(
            host=settings["HOST"], port=settings["PORT"] or 5432, dbname=settings["NAME"], user=name
        )
        try:
            yield conn
        finally:
            conn.close()
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP OWNED BY "{name}"')
            cursor.execute(f'DROP ROLE "{name}"')


def _refused(conn: psycopg.Connection, sql: str, params=()) -> str:
    with pytest.raises(errors.InsufficientPrivilege) as refusal, conn.transaction():
        conn.execute(sql, params)
    return str(refusal.value)


@pytest.mark.postgres
def test_the_runtime_role_cannot_rewrite_the_audit_trail(runtime_role):
    for i in range(3):
        audit.record(AuditAction.CONSENT_CREATED, actor="tests", object_id=str(i))
    before = list(AuditEntry.objects.order_by("seq").values_list("seq", "hash", "actor"))
    conn = runtime_role

    # What the app needs: read the trail, append to it, take the chain lock.
    with conn.transaction():
        assert conn.execute("SELECT count(*) FROM writeback_auditentry").fetchone()[0] == 3
        conn.execute("SELECT pg_advisory_xact_lock(1)")
        conn.execute(
            "INSERT INTO writeback_auditentry (seq, at, actor, action, tenant, object_type, object_id, "
            "event_uid, write_uid, correlation_id, request_id, data, prev_hash, hash, key_id) VALUES "
            "(4, now(), 'app', 'consent.created', '', '', '', '', '', '', '', '{}', %s, %s, '')",
            [before[-1][1], "f" * 64],
        )
        conn.execute("SELECT count(*) FROM writeback_businessevent").fetchone()
        # Ordinary tables keep ordinary rights.
        conn.execute("UPDATE writeback_write SET attempts = attempts WHERE false")
        conn.execute("DELETE FROM writeback_alert WHERE false")
    assert AuditEntry.objects.count() == 4

    assert "permission denied" in _refused(conn, "UPDATE writeback_auditentry SET actor = 'mallory'")
    _refused(conn, "DELETE FROM writeback_auditentry")
    _refused(conn, "TRUNCATE writeback_auditentry")
    _refused(conn, "UPDATE writeback_businessevent SET raw_payload = '{}'")
    _refused(conn, "TRUNCATE writeback_businessevent CASCADE")
    assert "must be owner" in _refused(
        conn, "DROP TRIGGER writeback_auditentry_append_only ON writeback_auditentry"
    )
    _refused(conn, "DROP TRIGGER writeback_auditentry_no_truncate ON writeback_auditentry")
    _refused(conn, "ALTER TABLE writeback_auditentry DISABLE TRIGGER ALL")
    _refused(conn, "ALTER TABLE writeback_auditentry OWNER TO CURRENT_USER")
    _refused(conn, "DROP TABLE writeback_auditentry")
    _refused(
        conn,
        "CREATE OR REPLACE FUNCTION writeback_refuse_change() RETURNS trigger AS $$ BEGIN RETURN NEW; END; "
        "$$ LANGUAGE plpgsql",
    )
    _refused(conn, "SET session_replication_role = replica")

    after = list(AuditEntry.objects.order_by("seq").values_list("seq", "hash", "actor"))
    assert after[:3] == before and len(after) == 4
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgname FROM pg_trigger "
            "WHERE tgrelid = 'writeback_auditentry'::regclass AND NOT tgisinternal"
        )
        assert {row[0] for row in cursor.fetchall()} == {
            "writeback_auditentry_append_only",
            "writeback_auditentry_no_truncate",
        }
    assert BusinessEvent.objects.count() == 0


@pytest.mark.postgres
def test_transfer_ownership_names_every_table(db):
    sql = _sql("--runtime-role", "wb_app", "--owner-role", "wb_owner", "--transfer-ownership")
    assert 'ALTER TABLE "public"."writeback_auditentry" OWNER TO "wb_owner"' in sql
    assert 'ALTER FUNCTION "public".writeback_refuse_change() OWNER TO "wb_owner"' in sql
    assert 'ALTER FUNCTION "public".writeback_bump_contract_stamp() OWNER TO "wb_owner"' in sql
    assert len([s for s in sql if s.startswith("ALTER TABLE")]) == len(connection.introspection.table_names())
