"""The audit trail: hash-chained, append-only at the database, tamper detected by verify_audit_chain."""

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from tests.writeback.helpers import EVENT_TYPES, consent_for, event
from writeback.db import triggers
from writeback.models import AuditAction, AuditEntry, BusinessEvent, ImmutableError
from writeback.services import audit


@pytest.fixture
def scenario(api, tenant, clinician):
    consent_for(tenant)
    for event_type in EVENT_TYPES:
        assert api.post("/api/v1/events", event(event_type), format="json").status_code == 201
    return api


def test_chain_verifies_after_a_full_scenario(scenario, capsys):
    assert AuditEntry.objects.count() > 20
    call_command("verify_audit_chain")
    assert capsys.readouterr().out.startswith("OK:")


def test_update_and_delete_of_audit_rows_are_refused_by_the_database(scenario):
    for sql in ("UPDATE writeback_auditentry SET actor = 'mallory'", "DELETE FROM writeback_auditentry"):
        with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)
    assert not AuditEntry.objects.filter(actor="mallory").exists()


def test_business_events_are_immutable(scenario):
    stored = BusinessEvent.objects.first()
    with pytest.raises(ImmutableError):
        stored.save()
    with pytest.raises(ImmutableError):
        stored.delete()
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE writeback_businessevent SET raw_payload = '{}'")
    stored.refresh_from_db()
    assert stored.raw_payload != {}


def _tamper(sql: str, params=()) -> None:
    """What only a schema owner can do: drop the trigger, change a row, put the trigger back."""
    triggers.uninstall(connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    triggers.install(connection)


def test_an_altered_row_is_found(scenario):
    victim = AuditEntry.objects.order_by("seq")[5]
    _tamper("UPDATE writeback_auditentry SET actor = %s WHERE seq = %s", ["mallory", victim.seq])
    report = audit.verify_chain()
    assert not report.ok and report.broken_seq == victim.seq
    assert "altered" in report.reason
    with pytest.raises(CommandError, match=f"#{victim.seq}"):
        call_command("verify_audit_chain")


def test_a_deleted_row_is_found(scenario):
    victim = AuditEntry.objects.order_by("seq")[3]
    _tamper("DELETE FROM writeback_auditentry WHERE seq = %s", [victim.seq])
    report = audit.verify_chain()
    assert not report.ok and report.broken_seq == victim.seq + 1


def test_a_rewritten_row_with_a_fresh_hash_still_breaks_the_next_link(scenario):
    victim = AuditEntry.objects.order_by("seq")[2]
    victim.actor = "mallory"
    fake = audit.compute_hash(victim)
    _tamper(
        "UPDATE writeback_auditentry SET actor = %s, hash = %s WHERE seq = %s", ["mallory", fake, victim.seq]
    )
    report = audit.verify_chain()
    assert not report.ok and report.broken_seq == victim.seq + 1


def test_sensitive_values_are_stored_as_hashes(db):
    entry = audit.record(
        AuditAction.CONSENT_CREATED, actor="tests", data={"note": "patient is anxious", "count": 3}
    )
    entry.refresh_from_db()
    assert entry.data["count"] == 3
    assert set(entry.data["note"]) == {"sha256"}
    assert "anxious" not in str(entry.data)


@pytest.mark.postgres
@pytest.mark.parametrize(
    "sql",
    [
        "TRUNCATE writeback_auditentry",
        "TRUNCATE writeback_businessevent CASCADE",
        # Reaches the event table through its foreign key to the tenant.
        "TRUNCATE writeback_tenant CASCADE",
    ],
)
def test_truncate_of_audit_rows_and_events_is_refused_by_postgresql(scenario, sql):
    entries, events = AuditEntry.objects.count(), BusinessEvent.objects.count()
    with connection.cursor() as cursor:
        # The test's own transaction holds deferred foreign-key checks, which TRUNCATE refuses first.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    with (
        pytest.raises(DatabaseError, match="append-only|immutable"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql)
    assert (AuditEntry.objects.count(), BusinessEvent.objects.count()) == (entries, events)
    assert audit.verify_chain().ok
