"""The keyed audit chain: HMAC under a key from the environment, key rotation, the unkeyed legacy prefix,
and what an attacker with the database but without the key can and cannot make verify."""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import CommandError, call_command
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from writeback import audit_keys
from writeback.db import triggers
from writeback.models import AuditAction, AuditEntry
from writeback.services import audit

ROOT = Path(__file__).resolve().parents[2]
KEY_A = "a" * 20 + "-first-audit-key-for-tests"
KEY_B = "b" * 20 + "-second-audit-key-for-tests"
MALLORY = "m" * 20 + "-a-key-the-installation-never-had"


def _record(n: int, what: str = "entry") -> list[AuditEntry]:
    return [
        audit.record(AuditAction.CONSENT_CREATED, actor="tests", object_id=f"{what}-{i}", data={"i": i})
        for i in range(n)
    ]


def _rewrite(entries: list[AuditEntry]) -> None:
    """What a schema owner without the key can do: drop the triggers, replace rows, put the triggers back."""
    triggers.uninstall(connection)
    AuditEntry.objects.filter(seq__gte=entries[0].seq).delete()
    AuditEntry.objects.bulk_create(entries)
    triggers.install(connection)


def _forge(
    start: int, *, key_id: str = "", key: bytes | None = None, actor: str = "mallory"
) -> list[AuditEntry]:
    """The chain from `start` on, with `actor` changed and every hash recomputed: unkeyed (legacy SHA-256),
    or HMAC under `key` while claiming `key_id`."""
    entries = list(AuditEntry.objects.order_by("seq"))
    prev = entries[start - 2].hash if start > 1 else audit.GENESIS_HASH
    forged = []
    for entry in entries[start - 1 :]:
        entry.actor, entry.prev_hash, entry.key_id = actor, prev, key_id
        entry.hash = audit._keyed_hash(entry, key) if key else audit._legacy_hash(entry)
        prev = entry.hash
        forged.append(entry)
    return forged


def _legacy_entry(seq: int, prev: str) -> AuditEntry:
    return AuditEntry(
        seq=seq,
        at=datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
        actor="ada.admin",
        actor_user_id=7,
        action="write.transition",
        tenant="generic-main",
        object_type="write",
        object_id="w-1",
        write_uid="00000000-0000-0000-0000-000000000001",
        correlation_id="c-1",
        request_id="r-1",
        data={"from": "pending", "to": "committed", "n": 1.5, "note": {"sha256": "ab"}, "who": "Zoë"},
        prev_hash=prev,
    )


# Hashes the unkeyed chain gave these two entries before it was keyed: legacy entries must keep verifying.
LEGACY_HASHES = [
    "388c72c6a2b998411fec7a89a90ceb158a54959bf76b62858fe4525f5664bb82",
    "02482933c8ab00c241d160462a3e62d48861fc9b9897fb0c3b8ef2ec91508355",
]


def _legacy_prefix() -> list[AuditEntry]:
    first = _legacy_entry(1, audit.GENESIS_HASH)
    first.hash = LEGACY_HASHES[0]
    second = _legacy_entry(2, first.hash)
    second.hash = LEGACY_HASHES[1]
    AuditEntry.objects.bulk_create([first, second])
    return [first, second]


def test_new_entries_are_keyed_with_the_current_key(db, settings):
    settings.WRITEBACK_AUDIT_KEY = KEY_A
    entry = _record(1)[0]
    stored = AuditEntry.objects.get(seq=entry.seq)
    assert stored.key_id == audit_keys.audit_key_id(KEY_A) and len(stored.key_id) == 16
    assert KEY_A not in json.dumps(list(AuditEntry.objects.values()), default=str)
    content = audit._content(stored) | {"key_id": stored.key_id}
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert stored.hash == hmac.new(KEY_A.encode(), blob, hashlib.sha256).hexdigest()
    assert stored.hash != hashlib.sha256(blob).hexdigest()
    assert audit.verify_chain().ok


def test_the_key_id_is_a_fingerprint_that_reveals_nothing_of_the_key():
    assert audit_keys.audit_key_id(KEY_A) != audit_keys.audit_key_id(KEY_B)
    assert audit_keys.audit_key_id(KEY_A) == audit_keys.audit_key_id(KEY_A)
    assert audit_keys.audit_key_id(KEY_A) not in hashlib.sha256(KEY_A.encode()).hexdigest()


def test_entries_under_a_retired_key_still_verify_after_rotation(db, settings, capsys):
    settings.WRITEBACK_AUDIT_KEY = KEY_A
    before = _record(4, "before")
    settings.WRITEBACK_AUDIT_KEY, settings.WRITEBACK_AUDIT_OLD_KEYS = KEY_B, [KEY_A]
    after = _record(3, "after")
    assert {e.key_id for e in before} == {audit_keys.audit_key_id(KEY_A)}
    assert {e.key_id for e in after} == {audit_keys.audit_key_id(KEY_B)}
    report = audit.verify_chain()
    assert report.ok and report.checked == 7
    assert report.keys == (audit_keys.audit_key_id(KEY_A), audit_keys.audit_key_id(KEY_B))
    call_command("verify_audit_chain")
    assert "OK: 7 entries" in capsys.readouterr().out


def test_a_chain_with_a_key_the_verifier_lacks_fails_clearly(db, settings):
    settings.WRITEBACK_AUDIT_KEY = KEY_A
    _record(3, "before")
    settings.WRITEBACK_AUDIT_KEY = KEY_B  # rotated, but the retired key was not kept
    _record(2, "after")
    report = audit.verify_chain()
    assert not report.ok and report.broken_seq == 1
    assert f"audit key {audit_keys.audit_key_id(KEY_A)}" in report.reason
    assert "WRITEBACK_AUDIT_OLD_KEYS" in report.reason
    with pytest.raises(CommandError, match=f"#1: hashed with audit key {audit_keys.audit_key_id(KEY_A)}"):
        call_command("verify_audit_chain")


def test_a_row_rewritten_with_its_hash_recomputed_without_the_key_is_found(db):
    _record(8)
    # Same key id, hashes recomputed the old unkeyed way: the first rewritten entry no longer matches.
    forged = _forge(4, key_id=audit.current_key_id())
    for entry in forged:
        entry.hash = audit._legacy_hash(entry)
    _rewrite(forged)
    report = audit.verify_chain()
    assert not report.ok and report.broken_seq == 4 and "altered" in report.reason


def test_a_tail_rewritten_as_unkeyed_entries_is_found(db):
    _record(8)
    _rewrite(_forge(5))
    report = audit.verify_chain()
    assert not report.ok and report.broken_seq == 5
    assert "unkeyed entry after keyed ones" in report.reason


def test_a_tail_rewritten_under_another_key_is_found(db):
    _record(8)
    _rewrite(_forge(5, key_id=audit.current_key_id(), key=MALLORY.encode()))
    report = audit.verify_chain()
    assert not report.ok and report.broken_seq == 5 and "altered" in report.reason
    _rewrite(_forge(5, key_id=audit_keys.audit_key_id(MALLORY), key=MALLORY.encode()))
    report = audit.verify_chain()
    assert not report.ok and report.broken_seq == 5
    assert f"audit key {audit_keys.audit_key_id(MALLORY)}" in report.reason


def test_entries_under_the_published_development_key_are_named_as_such(db, settings, capsys):
    settings.WRITEBACK_AUDIT_KEY = settings.WRITEBACK_DEV_AUDIT_KEY
    _record(2)
    call_command("verify_audit_chain")
    assert "(the development key)" in capsys.readouterr().out


def test_legacy_unkeyed_entries_still_verify_as_the_chain_prefix(db):
    legacy = _legacy_prefix()
    assert [audit.compute_hash(e) for e in legacy] == LEGACY_HASHES
    _record(3)
    report = audit.verify_chain()
    assert report.ok and report.checked == 5 and report.legacy == 2
    assert "WRITEBACK_AUDIT_LEGACY_MAX_SEQ=2" in str(report)
    assert AuditEntry.objects.filter(key_id="").count() == 2


def test_pinning_the_legacy_prefix_refuses_unkeyed_entries_after_it(db, settings):
    _legacy_prefix()
    _record(2)
    settings.WRITEBACK_AUDIT_LEGACY_MAX_SEQ = 2
    assert audit.verify_chain().ok
    settings.WRITEBACK_AUDIT_LEGACY_MAX_SEQ = 1
    report = audit.verify_chain()
    assert not report.ok and report.broken_seq == 2 and "WRITEBACK_AUDIT_LEGACY_MAX_SEQ" in report.reason


def test_a_whole_chain_rewritten_unkeyed_is_refused_once_the_legacy_prefix_is_pinned(db, settings):
    """Rewritten from #1 without the key, the chain looks like one long legacy prefix: the pin (or an
    exported head, test_audit_anchor) is what tells them apart."""
    _record(6)
    _rewrite(_forge(1))
    assert audit.verify_chain().legacy == 6
    settings.WRITEBACK_AUDIT_LEGACY_MAX_SEQ = 0
    report = audit.verify_chain()
    assert not report.ok and report.broken_seq == 1


def test_an_empty_audit_key_refuses_to_write(db, settings):
    from django.core.exceptions import ImproperlyConfigured

    settings.WRITEBACK_AUDIT_KEY = ""
    with pytest.raises(ImproperlyConfigured):
        _record(1)
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize(
    "value",
    [
        {"at": datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC), "naive": datetime(2026, 1, 2, 3, 4, 5, 6)},
        {"d": date(2026, 1, 2), "t": time(1, 2, 3, 456789), "td": timedelta(days=1, seconds=5)},
        {"dec": Decimal("12.50"), "u": uuid.UUID(int=5), "tuple": (1, "x"), 3: "int key"},
        {"action": AuditAction.WRITE_TRANSITION, "nested": [{"x": None, "y": True, "z": -0.0, "f": 1e16}]},
        {"huge": 2**70, "text": "Zoë ☃"},
    ],
)
def test_normalize_gives_what_the_json_round_trip_gave(value):
    assert audit._normalize(value) == json.loads(json.dumps(value, cls=DjangoJSONEncoder))


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _json, max_size=6))
def test_normalize_matches_the_json_round_trip_on_any_json(value):
    assert audit._normalize(value) == json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def test_normalize_stores_non_finite_numbers_as_null():
    # The json module wrote Infinity and NaN, which are not JSON: PostgreSQL refused the whole entry.
    assert audit._normalize({"a": float("inf"), "b": [float("nan")]}) == {"a": None, "b": [None]}


def test_signing_keys_load_from_base64_or_pem(settings):
    key = Ed25519PrivateKey.generate()
    raw = base64.b64encode(key.private_bytes_raw()).decode()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    ids = {audit_keys.signing_key_id(audit_keys.signing_key_from(v).public_key()) for v in (raw, pem)}
    assert ids == {audit_keys.signing_key_id(key.public_key())}


def _problems(**overrides) -> list[str]:
    from writeback import settings as base

    values = {
        "audit_key": "k" * 40,
        "old_keys": [],
        "signing": "",
        "public_keys": [],
        "development_key": base.WRITEBACK_DEV_AUDIT_KEY,
        "development_signing_key": base.WRITEBACK_DEV_AUDIT_SIGNING_KEY,
    }
    return audit_keys.production_problems(**(values | overrides))


def test_production_refuses_missing_short_or_published_audit_keys():
    from writeback import settings as base

    dev_public = audit_keys.public_key_text(
        audit_keys.signing_key_from(base.WRITEBACK_DEV_AUDIT_SIGNING_KEY).public_key()
    )
    assert _problems() == []
    assert _problems(signing=base64.b64encode(os.urandom(32)).decode()) == []
    for bad in (
        {"audit_key": ""},
        {"audit_key": "short"},
        {"audit_key": base.WRITEBACK_DEV_AUDIT_KEY},
        {"old_keys": [base.WRITEBACK_DEV_AUDIT_KEY]},
        {"signing": base.WRITEBACK_DEV_AUDIT_SIGNING_KEY},
        {"signing": "not base64 at all!"},
        {"public_keys": [dev_public]},
        {"public_keys": ["c2hvcnQ="]},
    ):
        assert _problems(**bad), bad


def _production_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WRITEBACK_AUDIT", "DJANGO_"))}
    env |= {
        "DJANGO_SETTINGS_MODULE": "writeback.production_settings",
        "SECRET_KEY": base64.b64encode(os.urandom(48)).decode(),
        "ALLOWED_HOSTS": "writeback.example.org",
        "DATABASE_URL": "sqlite:///unused.sqlite3",
    }
    return env | extra


def test_production_settings_refuse_to_start_without_a_real_audit_key(tmp_path):
    check = [sys.executable, str(ROOT / "manage.py"), "check", "--deploy", "--fail-level", "WARNING"]
    refused = subprocess.run(check, env=_production_env(), cwd=tmp_path, capture_output=True, text=True)
    assert refused.returncode != 0 and "WRITEBACK_AUDIT_KEY" in refused.stderr
    key_file = tmp_path / "audit-key"
    key_file.write_text(base64.b64encode(os.urandom(36)).decode() + "\n")
    started = subprocess.run(
        check, env=_production_env(WRITEBACK_AUDIT_KEY_FILE=str(key_file)), cwd=tmp_path, capture_output=True
    )
    assert started.returncode == 0, started.stderr


def test_a_hash_column_holding_garbage_reads_as_altered(db):
    _record(3)
    triggers.uninstall(connection)
    AuditEntry.objects.filter(seq=2).update(hash="é" * 64)
    triggers.install(connection)
    report = audit.verify_chain()
    assert not report.ok and report.broken_seq == 2 and "altered" in report.reason
