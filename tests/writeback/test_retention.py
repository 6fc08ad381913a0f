"""Retention: payload bodies of settled writes are purged after the tenant's period; hashes stay."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from tests.console.conftest import client_for
from tests.writeback.sync.conftest import drain, post
from writeback.errors import DomainError
from writeback.models import AuditEntry, BusinessEvent, Conflict, Write, WriteAttempt
from writeback.services.audit import sha256_text, verify_chain
from writeback.services.conflicts import conflict_resolve
from writeback.services.replay import write_replay
from writeback.services.retention import purge_payloads
from writeback.states import WriteState

LATER = timezone.now() + timedelta(days=31)


def _patient(sim, pid="pat-1001"):
    return next(p for p in sim.resources("Patient") if p["id"] == pid)


@pytest.fixture
def settled(live, sim, api, admin_user):
    """A committed problem, a resolved conflict (its superseded write and the committed resolution), and
    an allergy still waiting for a clinician."""
    committed = post(api, "problem.confirmed", key="p1")[0]
    before = _patient(sim)
    conflicted = post(api, "demographics.updated", key="d1", base_version=before["meta"]["versionId"])[0]
    sim.edit("Patient", "pat-1001", {"telecom": [{"system": "phone", "value": "+15559999", "use": "home"}]})
    drain()
    conflict = Conflict.objects.get(write=conflicted)
    conflict_resolve(conflict=conflict, user=admin_user, choices={"telecom": "theirs", "address": "ours"})
    waiting = post(api, "allergy.recorded", key="a1")[0]
    drain()
    committed.refresh_from_db()
    assert committed.state == WriteState.COMMITTED
    assert Write.objects.get(pk=conflicted.pk).state == WriteState.SUPERSEDED
    assert Write.objects.get(pk=waiting.pk).state == WriteState.AWAITING_APPROVAL
    live.retention_days = 30
    live.save()
    return {"committed": committed, "conflicted": conflicted, "waiting": waiting, "conflict": conflict}


def test_purge_blanks_bodies_keeps_hashes_and_the_chain_verifies(settled, live):
    committed, waiting = settled["committed"], settled["waiting"]
    hashes = {w.pk: w.payload_hash for w in Write.objects.all()}
    content = {e.pk: e.content_hash for e in BusinessEvent.objects.all()}
    body_hashes = dict(WriteAttempt.objects.values_list("pk", "request_body_hash"))
    assert WriteAttempt.objects.filter(write=committed).exclude(response_body="").exists()
    entries = AuditEntry.objects.count()

    dry = purge_payloads(tenant=live, dry_run=True, now=LATER)[0]
    assert dry.events == 2 and dry.writes == 3 and dry.conflicts == 1
    assert not Write.objects.filter(payload_purged_at__isnull=False).exists()  # a dry run changes nothing

    report = purge_payloads(tenant=live, now=LATER)[0]
    assert (report.events, report.writes, report.conflicts) == (2, 3, 1)

    committed.refresh_from_db()
    assert committed.payload_purged_at == LATER and set(committed.payload) == {"purged_at"}
    assert committed.payload_hash == hashes[committed.pk]
    event = BusinessEvent.objects.get(pk=committed.event_id)
    assert set(event.raw_payload) == {"purged_at"} and set(event.canonical_payload) == {"purged_at"}
    assert event.content_hash == content[event.pk] and event.patient_ref == "pat-1001"
    assert not WriteAttempt.objects.filter(write=committed).exclude(response_body="").exists()
    assert dict(WriteAttempt.objects.values_list("pk", "request_body_hash")) == body_hashes
    conflict = Conflict.objects.get(pk=settled["conflict"].pk)
    assert conflict.base is None and conflict.theirs is None and conflict.diff == []
    assert "+15559999" not in str(conflict.__dict__)

    # The open write and its event are untouched.
    waiting.refresh_from_db()
    assert waiting.payload_purged_at is None and waiting.payload["resourceType"] == "AllergyIntolerance"
    assert "purged_at" not in BusinessEvent.objects.get(pk=waiting.event_id).raw_payload

    assert AuditEntry.objects.count() == entries + 1
    purged = AuditEntry.objects.get(action="payloads.purged")
    assert purged.data["events"] == 2 and purged.tenant == live.slug
    assert verify_chain().ok
    call_command("verify_audit_chain")
    # A second run finds nothing new.
    assert purge_payloads(tenant=live, now=LATER)[0].events == 0


def test_nothing_is_purged_before_the_period_or_without_one(settled, live, other_tenant):
    assert purge_payloads(tenant=live, now=timezone.now() + timedelta(days=29))[0].events == 0
    live.retention_days = None
    live.save()
    assert purge_payloads(now=LATER) == [] or all(r.events == 0 for r in purge_payloads(now=LATER))
    assert not Write.objects.filter(payload_purged_at__isnull=False).exists()


def test_the_write_page_says_payload_purged_and_replay_is_refused(settled, live, admin_user):
    purge_payloads(tenant=live, now=LATER)
    committed = settled["committed"]
    page = client_for(admin_user).get(f"/writes/{committed.uid}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Payload purged on" in html and committed.payload_hash[:16] in html
    with pytest.raises(DomainError, match="purged"):
        write_replay(write=Write.objects.get(pk=settled["conflicted"].pk), user=admin_user, mode="resend")


def test_the_database_allows_only_the_purge_marker_on_events(settled):
    event = BusinessEvent.objects.get(pk=settled["committed"].event_id)
    marker = {"purged_at": "x"}
    for change in (
        {"raw_payload": {"purged_at": "x", "extra": 1}, "canonical_payload": marker},
        {"raw_payload": marker, "canonical_payload": marker, "patient_ref": "pat-9999"},
        {"raw_payload": marker, "canonical_payload": marker, "content_hash": sha256_text("forged")},
        {"type": "note.signed"},
    ):
        with pytest.raises(DatabaseError), transaction.atomic():
            BusinessEvent.objects.filter(pk=event.pk).update(**change)
    event.refresh_from_db()
    assert "purged_at" not in event.raw_payload and event.patient_ref == "pat-1001"
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM writeback_businessevent WHERE id = {int(event.pk)}")


def test_command_purges_and_refuses_bad_input(settled, live, capsys):
    with pytest.raises(CommandError, match="unknown tenant"):
        call_command("purge_payloads", "--tenant", "nope")
    call_command("purge_payloads", "--tenant", live.slug, "--dry-run")
    assert "would purge 0 event" in capsys.readouterr().out  # nothing is 30 days old yet
    live.retention_days = None
    live.save()
    with pytest.raises(CommandError, match="no retention period"):
        call_command("purge_payloads", "--tenant", live.slug)


def test_engineers_set_the_period_audited_and_bad_input_is_refused(tenant, engineer, admin_user):
    call_command("tenant_retention", tenant.slug, "90", "--by", engineer.username)
    tenant.refresh_from_db()
    assert tenant.retention_days == 90
    entry = AuditEntry.objects.get(action="tenant.retention_changed")
    assert entry.data == {"old": None, "new": 90, "channel": "command", "reason": ""}
    assert entry.actor == engineer.username
    for args, message in (
        (["nope", "90", "--by", engineer.username], "unknown tenant"),
        ([tenant.slug, "-1", "--by", engineer.username], "whole number"),
        ([tenant.slug, "3", "--by", engineer.username], "between"),
        ([tenant.slug, "90", "--by", engineer.username], "already"),
        ([tenant.slug, "off", "--by", admin_user.username], "needs"),
        ([tenant.slug, "off", "--by", "ghost"], "--by"),
    ):
        with pytest.raises(CommandError, match=message):
            call_command("tenant_retention", *args)
    tenant.refresh_from_db()
    assert tenant.retention_days == 90
    call_command("tenant_retention", tenant.slug, "off", "--by", engineer.username)
    tenant.refresh_from_db()
    assert tenant.retention_days is None
