"""Signed chain heads (export_audit_head) and `verify_audit_chain --expect-head`: what the chain alone
cannot show (a cut tail, an emptied table, a chain rewritten from the start) is caught against a head
exported before, and a head file that was altered or signed by an unknown key is refused."""

import base64
import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import CommandError, call_command
from django.db import connection

from tests.writeback.helpers import EVENT_TYPES, consent_for, event
from tests.writeback.test_audit_keys import _forge, _record, _rewrite
from writeback import audit_keys
from writeback.db import triggers
from writeback.models import AuditAction, AuditEntry
from writeback.services import audit

ROOT = Path(__file__).resolve().parents[2]


def _export(path: Path) -> dict:
    call_command("export_audit_head", "--output", str(path), stderr=StringIO())
    return json.loads(path.read_text())


def _verify(*paths: Path) -> str:
    out = StringIO()
    call_command("verify_audit_chain", "--expect-head", *map(str, paths), stdout=out)
    return out.getvalue()


def _as_owner(sql: str, params=()) -> None:
    """Drop the triggers, run `sql`, put them back: what only the tables' owner can do."""
    triggers.uninstall(connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    triggers.install(connection)


def _empty_table() -> None:
    _as_owner(
        "TRUNCATE writeback_auditentry"
        if connection.vendor == "postgresql"
        else "DELETE FROM writeback_auditentry"
    )


@pytest.fixture
def anchored(db, tmp_path):
    """A chain of 10 entries, its head exported (entry #11 records the export), 3 more entries."""
    _record(10, "before")
    head = tmp_path / "head.json"
    doc = _export(head)
    _record(3, "after")
    return head, doc


def test_the_export_is_signed_complete_and_audited(anchored):
    head, doc = anchored
    assert doc["head_seq"] == doc["entries"] == 10
    assert doc["head_hash"] == AuditEntry.objects.get(seq=10).hash
    assert doc["key_id"] == audit.current_key_id()
    assert {"format", "head_at", "exported_at", "signing_key_id", "signature"} <= set(doc)
    exported = AuditEntry.objects.get(action=AuditAction.AUDIT_HEAD_EXPORTED)
    assert exported.seq == 11 and exported.actor == "command:export_audit_head"
    assert exported.data == {
        "head_seq": 10,
        "head_hash": doc["head_hash"],
        "signing_key_id": doc["signing_key_id"],
    }
    out = _verify(head)
    assert out.startswith("OK: 14 entries") and "entry #10 still carries the anchored hash" in out


def test_the_export_goes_to_stdout_without_output(db, capsys):
    _record(2)
    call_command("export_audit_head")
    assert json.loads(capsys.readouterr().out)["head_seq"] == 2


def test_an_altered_row_with_hashes_recomputed_without_the_key_is_found(anchored):
    """(a) The owner drops the triggers, changes entry #4 and recomputes every hash from there on,
    unkeyed: the chain breaks at #4, and the anchored head no longer matches."""
    head, _ = anchored
    _rewrite(_forge(4))
    with pytest.raises(CommandError) as failure:
        _verify(head)
    assert "BROKEN at entry #4: unkeyed entry after keyed ones" in str(failure.value)
    assert "anchors #10" in str(failure.value)


def test_a_chain_rewritten_from_the_start_without_the_key_is_found_by_the_head(anchored):
    """Rewritten from #1, unkeyed, the chain verifies on its own (a long legacy prefix); the head does not."""
    head, doc = anchored
    _rewrite(_forge(1))
    assert audit.verify_chain().ok
    with pytest.raises(CommandError, match=r"anchors #10 = .*but entry #10 has hash .*rewritten"):
        _verify(head)


def test_a_truncated_tail_is_found(anchored):
    """(b) Entries #8 onwards removed: what is left verifies, but the head says there was a #10."""
    head, _ = anchored
    _as_owner("DELETE FROM writeback_auditentry WHERE seq >= 8")
    assert audit.verify_chain().ok
    with pytest.raises(CommandError, match=r"chain ends at #7: entries #8-#10 were removed \(tail cut\)"):
        _verify(head)


def test_a_truncated_tail_written_on_again_is_found(anchored):
    """Cut back to #7, then the app appends again: #8-#10 exist but are not the anchored ones."""
    head, _ = anchored
    _as_owner("DELETE FROM writeback_auditentry WHERE seq >= 8")
    _record(5, "again")
    assert audit.verify_chain().ok
    with pytest.raises(CommandError, match="entry #10 has hash"):
        _verify(head)


def test_a_truncated_table_is_found(anchored):
    """(c) The whole table emptied (TRUNCATE on PostgreSQL, DELETE on SQLite): an empty chain verifies."""
    head, _ = anchored
    _empty_table()
    assert audit.verify_chain().ok and audit.verify_chain().checked == 0
    with pytest.raises(CommandError, match="the audit trail is empty: the table was emptied"):
        _verify(head)


def test_a_reinserted_prefix_is_found(anchored):
    """The table emptied and filled again with a look-alike chain: same seq numbers, new hashes."""
    head, _ = anchored
    _empty_table()
    _record(14, "look-alike")
    assert audit.verify_chain().ok
    with pytest.raises(CommandError, match="entry #10 has hash"):
        _verify(head)


def test_several_heads_are_checked_and_each_problem_named(anchored, tmp_path):
    first, _ = anchored
    second = tmp_path / "second.json"
    _export(second)  # head #14
    _as_owner("DELETE FROM writeback_auditentry WHERE seq >= 12")
    with pytest.raises(CommandError) as failure:
        _verify(first, second)
    message = str(failure.value)
    assert (
        "head.json" not in message and "second.json" in message and "entries #12-#14 were removed" in message
    )


def test_an_altered_head_file_is_refused(anchored):
    head, doc = anchored
    head.write_text(json.dumps(doc | {"head_seq": 3, "head_hash": AuditEntry.objects.get(seq=3).hash}))
    with pytest.raises(CommandError, match="signature does not match"):
        _verify(head)


def test_a_head_signed_by_an_untrusted_key_is_refused_until_its_public_key_is_listed(anchored, settings):
    head, _ = anchored
    exporter = Ed25519PrivateKey.generate()
    settings.WRITEBACK_AUDIT_SIGNING_KEY = base64.b64encode(exporter.private_bytes_raw()).decode()
    other = head.with_name("other.json")
    _export(other)
    settings.WRITEBACK_AUDIT_SIGNING_KEY = ""  # the verifying host holds no signing key
    with pytest.raises(CommandError, match="which is not trusted here"):
        _verify(other)
    settings.WRITEBACK_AUDIT_HEAD_PUBLIC_KEYS = [audit_keys.public_key_text(exporter.public_key())]
    assert "still carries the anchored hash" in _verify(other)
    with pytest.raises(CommandError, match="which is not trusted here"):
        _verify(head)  # signed with the development key, no longer trusted here


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not an audit head document"),
        ('{"format": "fhir-writeback/audit-head/1", "head_seq": "10"}', "field 'head_seq'"),
    ],
)
def test_a_malformed_head_file_is_refused(db, tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(CommandError, match=message):
        _verify(bad)
    with pytest.raises(CommandError, match="cannot be read"):
        _verify(tmp_path / "missing.json")


def test_export_refuses_a_broken_chain_and_writes_nothing(db, tmp_path):
    _record(5)
    _rewrite(_forge(3))
    head = tmp_path / "head.json"
    with pytest.raises(CommandError, match="does not verify"):
        _export(head)
    assert not head.exists()
    assert not AuditEntry.objects.filter(action=AuditAction.AUDIT_HEAD_EXPORTED).exists()


def test_export_refuses_without_a_signing_key_and_never_overwrites(anchored, settings):
    head, doc = anchored
    before = AuditEntry.objects.count()
    with pytest.raises(CommandError, match="exists already"):
        _export(head)
    assert json.loads(head.read_text()) == doc
    settings.WRITEBACK_AUDIT_SIGNING_KEY = ""
    with pytest.raises(CommandError, match="no signing key"):
        _export(head.with_name("new.json"))
    assert AuditEntry.objects.count() == before


def test_malformed_signing_keys_are_a_clear_error(anchored, settings):
    head, _ = anchored
    settings.WRITEBACK_AUDIT_HEAD_PUBLIC_KEYS = ["c2hvcnQ="]
    with pytest.raises(CommandError, match="trusted signing keys cannot be read"):
        _verify(head)
    settings.WRITEBACK_AUDIT_SIGNING_KEY = "not a key"
    with pytest.raises(CommandError, match="WRITEBACK_AUDIT_SIGNING_KEY cannot be read"):
        _export(head.with_name("new.json"))


def test_public_key_option_prints_what_verifiers_list(db, settings, capsys):
    call_command("export_audit_head", "--public-key")
    printed = capsys.readouterr().out.strip()
    own = audit_keys.signing_key_from(settings.WRITEBACK_AUDIT_SIGNING_KEY).public_key()
    assert audit_keys.public_key_from(printed).public_bytes_raw() == own.public_bytes_raw()


def test_the_console_check_walks_the_keyed_chain(db, tenant, clinician, api):
    from tests.conftest import make_user
    from writeback.services.audit_export import audit_chain_check

    consent_for(tenant)
    for event_type in EVENT_TYPES[:3]:
        assert api.post("/api/v1/events", event(event_type), format="json").status_code == 201
    auditor = make_user("al.auditor", "auditor")
    assert audit_chain_check(user=auditor).ok
    _rewrite(_forge(2))
    report = audit_chain_check(user=auditor)
    assert not report.ok and report.broken_seq == 2
    check = AuditEntry.objects.filter(action=AuditAction.AUDIT_CHAIN_VERIFIED).order_by("-seq").first()
    assert check.data["ok"] is False and check.data["broken_seq"] == 2


def _database_url() -> str:
    s = connection.settings_dict
    if connection.vendor == "postgresql":
        return f"postgres://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"
    return f"sqlite:///{s['NAME']}"


def test_the_command_exits_non_zero_with_a_clear_message(transactional_db, tmp_path):
    _record(6)
    head = tmp_path / "head.json"
    _export(head)
    _as_owner("DELETE FROM writeback_auditentry WHERE seq >= 5")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WRITEBACK_AUDIT", "DJANGO_"))}
    env |= {"DATABASE_URL": _database_url(), "DJANGO_SETTINGS_MODULE": "writeback.settings"}
    run = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "verify_audit_chain", "--expect-head", str(head)],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 1
    assert "chain ends at #4: entries #5-#6 were removed (tail cut)" in run.stderr
