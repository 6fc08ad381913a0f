"""Appending to, and verifying, the hash-chained audit trail.

Each entry's hash is SHA-256 over its own content plus the previous entry's hash, and sequence numbers
are contiguous, so altering, deleting or inserting a row anywhere breaks the chain from that point on.
Appends take a chain lock (an advisory transaction lock on PostgreSQL; SQLite transactions already hold
the write lock), so call `record()` late in a transaction to keep the lock short.
"""

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from writeback.models import AuditAction, AuditEntry

GENESIS_HASH = "0" * 64
# Any constant works; it names the one advisory lock that serializes appends to the chain.
_CHAIN_LOCK_KEY = 0x57B_A0D17


@dataclass
class AuditDraft:
    action: AuditAction
    actor: str
    actor_user_id: int | None = None
    tenant: str = ""
    object_type: str = ""
    object_id: str = ""
    event_uid: str = ""
    write_uid: str = ""
    correlation_id: str = ""
    request_id: str = ""
    target_ack: bool | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # One vocabulary: an action the enum lacks is a bug (ValueError), never a new free string.
        self.action = AuditAction(self.action)


def actor_fields(actor: Any) -> tuple[str, int | None]:
    """(name, user id) for a user, or a system name such as 'worker:host:123'."""
    if actor is None:
        return "system", None
    if isinstance(actor, str):
        return actor, None
    return actor.get_username(), actor.pk


def sha256_text(value: Any) -> str:
    if not isinstance(value, str):
        value = json.dumps(value, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder)
    return hashlib.sha256(value.encode()).hexdigest()


def redact(value: Any, sensitive: frozenset[str] | None = None) -> Any:
    """Replaces the values of sensitive keys (policy: WRITEBACK_AUDIT_SENSITIVE_KEYS) by their hash."""
    sensitive = sensitive if sensitive is not None else frozenset(settings.WRITEBACK_AUDIT_SENSITIVE_KEYS)
    if isinstance(value, Mapping):
        return {
            k: (
                {"sha256": sha256_text(v)}
                if k in sensitive and v not in (None, "", [], {})
                else redact(v, sensitive)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, sensitive) for v in value]
    return value


def _normalize(data: Mapping[str, Any]) -> dict[str, Any]:
    # Round-trip through JSON so the hashed form equals what the database gives back.
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def _content(entry: AuditEntry) -> dict[str, Any]:
    at = entry.at.astimezone(UTC).isoformat(timespec="microseconds")
    return {
        "seq": entry.seq,
        "at": at,
        "actor": entry.actor,
        "actor_user_id": entry.actor_user_id,
        "action": entry.action,
        "tenant": entry.tenant,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "event_uid": entry.event_uid,
        "write_uid": entry.write_uid,
        "correlation_id": entry.correlation_id,
        "request_id": entry.request_id,
        "target_ack": entry.target_ack,
        "data": entry.data,
        "prev_hash": entry.prev_hash,
    }


def compute_hash(entry: AuditEntry) -> str:
    blob = json.dumps(_content(entry), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def _lock_chain() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])


def record_many(drafts: Iterable[AuditDraft]) -> list[AuditEntry]:
    drafts = list(drafts)
    if not drafts:
        return []
    with transaction.atomic(savepoint=False):
        _lock_chain()
        last = AuditEntry.objects.order_by("-seq").values_list("seq", "hash").first()
        seq, prev = last if last else (0, GENESIS_HASH)
        now = timezone.now()
        entries = []
        for d in drafts:
            seq += 1
            entry = AuditEntry(
                seq=seq,
                at=now,
                actor=d.actor[:150],
                actor_user_id=d.actor_user_id,
                action=d.action,
                tenant=d.tenant,
                object_type=d.object_type,
                object_id=str(d.object_id),
                event_uid=str(d.event_uid or ""),
                write_uid=str(d.write_uid or ""),
                correlation_id=d.correlation_id,
                request_id=d.request_id,
                target_ack=d.target_ack,
                data=_normalize(redact(d.data)),
                prev_hash=prev,
            )
            entry.hash = compute_hash(entry)
            prev = entry.hash
            entries.append(entry)
        AuditEntry.objects.bulk_create(entries)
    return entries


def record(action: AuditAction, *, actor: Any = None, **fields: Any) -> AuditEntry:
    name, user_id = actor_fields(actor)
    return record_many([AuditDraft(action=action, actor=name, actor_user_id=user_id, **fields)])[0]


def draft(action: AuditAction, *, actor: Any = None, **fields: Any) -> AuditDraft:
    name, user_id = actor_fields(actor)
    return AuditDraft(action=action, actor=name, actor_user_id=user_id, **fields)


@dataclass
class ChainReport:
    ok: bool
    checked: int
    broken_seq: int | None = None
    reason: str = ""
    last_hash: str = GENESIS_HASH

    def __str__(self) -> str:
        if self.ok:
            return f"OK: {self.checked} entries, chain head {self.last_hash[:16]}"
        return f"BROKEN at entry #{self.broken_seq}: {self.reason} ({self.checked} entries checked)"


def verify_chain(entries: Iterable[AuditEntry] | None = None) -> ChainReport:
    """Walks the chain from the start; reports the first entry whose content, link or number is wrong."""
    if entries is None:
        entries = AuditEntry.objects.order_by("seq").iterator(chunk_size=2000)
    prev, expected_seq, checked = GENESIS_HASH, 1, 0
    for entry in entries:
        if entry.seq != expected_seq:
            return ChainReport(False, checked, entry.seq, f"expected entry #{expected_seq} (missing rows)")
        if entry.prev_hash != prev:
            return ChainReport(False, checked, entry.seq, "link to the previous entry does not match")
        if compute_hash(entry) != entry.hash:
            return ChainReport(False, checked, entry.seq, "content does not match its hash (row altered)")
        prev, expected_seq, checked = entry.hash, expected_seq + 1, checked + 1
    return ChainReport(True, checked, last_hash=prev)


def trail_for_write(write_uid: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(write_uid=str(write_uid)).order_by("seq"))


def now_utc() -> datetime:
    return timezone.now()
