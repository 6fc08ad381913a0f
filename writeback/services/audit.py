"""Appending to, and verifying, the keyed hash chain of the audit trail.

Each entry's hash is HMAC-SHA256, under the audit key it names (`key_id`), over its own content plus the
previous entry's hash, and sequence numbers are contiguous: altering, deleting or inserting a row anywhere
breaks the chain from that point on, and without the key nobody can recompute hashes that verify. The
keys live in the environment (writeback.audit_keys), never in the database. Entries written before the
chain was keyed (key_id "") carry plain SHA-256 and verify only as the chain's first entries.

What the chain alone cannot show is a cut tail or an emptied table (the rest still verifies): heads
exported with `export_audit_head` to write-once storage anchor it (writeback.services.audit_anchor).

Appends take a chain lock (an advisory transaction lock on PostgreSQL; SQLite transactions already hold
the write lock), so call `record()` late in a transaction to keep the lock short.
"""

import hashlib
import hmac
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from writeback import audit_keys
from writeback.models import AuditAction, AuditEntry
from writeback.services.statements import insert_rows

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


_DJANGO_JSON = DjangoJSONEncoder()
# Dates and times go to DjangoJSONEncoder (orjson's own format differs: microseconds, "+00:00"), as do
# dataclasses (which DjangoJSONEncoder refuses), so the result equals the json round trip it replaces;
# except that Infinity and NaN, which are not JSON (PostgreSQL refused the entry), become null.
_NORMALIZE_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_NON_STR_KEYS
)


def _normalize(data: Mapping[str, Any]) -> dict[str, Any]:
    # Round-trip through JSON so the hashed form equals what the database gives back.
    try:
        return orjson.loads(orjson.dumps(data, default=_DJANGO_JSON.default, option=_NORMALIZE_OPTIONS))
    except orjson.JSONEncodeError:
        # Integers beyond 64 bits and very deep nesting, which only the json module takes.
        return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def _content(entry: AuditEntry) -> dict[str, Any]:
    at = entry.at if entry.at.tzinfo is UTC else entry.at.astimezone(UTC)
    at = at.isoformat(timespec="microseconds")
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


def _canonical(content: dict[str, Any]) -> bytes:
    """The hashed bytes of a keyed entry: compact JSON, keys sorted (the content is JSON-plain already)."""
    try:
        return orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        # Integers beyond 64 bits: the same content always takes this path, at writing and at verifying.
        return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _legacy_hash(entry: AuditEntry) -> str:
    """Unkeyed SHA-256 of the json module's form: how entries were hashed before the chain was keyed."""
    blob = json.dumps(_content(entry), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


@lru_cache(maxsize=16)
def _mac(key: bytes) -> hmac.HMAC:
    # Copying a keyed HMAC skips hashing the key's pads again for every entry.
    return hmac.new(key, digestmod=hashlib.sha256)


def _keyed_hash(entry: AuditEntry, key: bytes) -> str:
    content = _content(entry)
    content["key_id"] = entry.key_id  # bound in: an entry cannot be passed off as another key's
    mac = _mac(key).copy()
    mac.update(_canonical(content))
    return mac.hexdigest()


class UnknownAuditKey(LookupError):
    """An entry names an audit key this installation does not have."""


def compute_hash(entry: AuditEntry, keys: audit_keys.Keyring | None = None) -> str:
    """The hash `entry` must carry: keyed under the key it names, or legacy SHA-256 when it names none."""
    if not entry.key_id:
        return _legacy_hash(entry)
    keys = keys or audit_keys.keyring()
    try:
        return _keyed_hash(entry, keys.keys[entry.key_id])
    except KeyError:
        raise UnknownAuditKey(entry.key_id) from None


def current_key_id() -> str:
    return audit_keys.keyring().current_id


def _lock_chain() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])


def _chain_head() -> tuple[int, str] | None:
    """(seq, hash) of the last entry, read under the chain lock (a statement built once)."""
    q = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {q('seq')}, {q('hash')} FROM {q(AuditEntry._meta.db_table)} "  # noqa: S608 - names only
            f"ORDER BY {q('seq')} DESC LIMIT 1"
        )
        return cursor.fetchone()


def record_many(drafts: Iterable[AuditDraft]) -> list[AuditEntry]:
    drafts = list(drafts)
    if not drafts:
        return []
    keys = audit_keys.keyring()
    with transaction.atomic(savepoint=False):
        _lock_chain()
        last = _chain_head()
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
                key_id=keys.current_id,
            )
            entry.hash = _keyed_hash(entry, keys.current)
            prev = entry.hash
            entries.append(entry)
        insert_rows(AuditEntry, entries)
    return entries


def record(action: AuditAction, *, actor: Any = None, **fields: Any) -> AuditEntry:
    name, user_id = actor_fields(actor)
    return record_many([AuditDraft(action=action, actor=name, actor_user_id=user_id, **fields)])[0]


def draft(action: AuditAction, *, actor: Any = None, **fields: Any) -> AuditDraft:
    name, user_id = actor_fields(actor)
    return AuditDraft(action=action, actor=name, actor_user_id=user_id, **fields)


def write_draft(
    action: AuditAction,
    write: Any,
    *,
    actor: Any,
    tenant: str,
    event_uid: str,
    data: dict[str, Any],
    request_id: str = "",
    target_ack: bool | None = None,
) -> AuditDraft:
    """An entry about one write, with the columns every such entry fills alike (the console and the
    export find a write's history by them)."""
    return draft(
        action,
        actor=actor,
        tenant=tenant,
        object_type="write",
        object_id=str(write.uid),
        write_uid=str(write.uid),
        event_uid=event_uid,
        correlation_id=write.correlation_id,
        request_id=request_id,
        target_ack=target_ack,
        data=data,
    )


@dataclass
class ChainReport:
    ok: bool
    checked: int
    broken_seq: int | None = None
    reason: str = ""
    last_hash: str = GENESIS_HASH
    # Unkeyed entries at the start of the chain (written before it was keyed).
    legacy: int = 0
    # The audit keys the verified entries were hashed with, as described by the keyring.
    keys: tuple[str, ...] = ()
    # The hash of each entry asked for with `capture` (anchored seqs) that the walk reached.
    hashes: dict[int, str] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.ok:
            return f"BROKEN at entry #{self.broken_seq}: {self.reason} ({self.checked} entries checked)"
        text = f"OK: {self.checked} entries, chain head {self.last_hash[:16]}"
        if self.keys:
            text += f"; audit keys: {', '.join(self.keys)}"
        if self.legacy:
            text += (
                f"; entries #1-#{self.legacy} predate the keyed chain (pin them with "
                f"WRITEBACK_AUDIT_LEGACY_MAX_SEQ={self.legacy})"
            )
        return text


def verify_chain(
    entries: Iterable[AuditEntry] | None = None, *, capture: Collection[int] = ()
) -> ChainReport:
    """Walks the chain from the start; reports the first entry whose content, link, number or key is
    wrong. Unkeyed entries are accepted only before the first keyed one (and, when
    WRITEBACK_AUDIT_LEGACY_MAX_SEQ is set, only up to it): anyone can compute an unkeyed hash."""
    if entries is None:
        # Named rows, not model instances: the same attributes at a third less of the walk's time.
        fields = [f.attname for f in AuditEntry._meta.concrete_fields]
        entries = (
            AuditEntry.objects.order_by("seq").values_list(*fields, named=True).iterator(chunk_size=2000)
        )
    keys = audit_keys.keyring()
    legacy_max = settings.WRITEBACK_AUDIT_LEGACY_MAX_SEQ
    prev, expected_seq, checked, legacy = GENESIS_HASH, 1, 0, 0
    seen: dict[str, None] = {}
    hashes: dict[int, str] = {}

    def broken(entry: AuditEntry, reason: str) -> ChainReport:
        return ChainReport(False, checked, entry.seq, reason, prev, legacy, tuple(seen), hashes)

    for entry in entries:
        if entry.seq != expected_seq:
            return broken(entry, f"expected entry #{expected_seq} (missing rows)")
        if entry.prev_hash != prev:
            return broken(entry, "link to the previous entry does not match")
        if not entry.key_id:
            if seen:
                return broken(entry, "unkeyed entry after keyed ones (rewritten without the audit key)")
            if legacy_max is not None and entry.seq > legacy_max:
                return broken(
                    entry,
                    f"unkeyed entry after #{legacy_max}, the last legacy one "
                    "(WRITEBACK_AUDIT_LEGACY_MAX_SEQ)",
                )
            legacy += 1
        elif entry.key_id not in keys.keys:
            return broken(
                entry,
                f"hashed with audit key {entry.key_id}, which this installation does not have "
                "(a retired key missing from WRITEBACK_AUDIT_OLD_KEYS, or a forged entry)",
            )
        else:
            seen.setdefault(keys.describe(entry.key_id))
        # Compared as bytes: a hash column holding non-ASCII text must read as altered, not crash.
        if not hmac.compare_digest(compute_hash(entry, keys).encode(), entry.hash.encode()):
            return broken(entry, "content does not match its hash (row altered)")
        if entry.seq in capture:
            hashes[entry.seq] = entry.hash
        prev, expected_seq, checked = entry.hash, expected_seq + 1, checked + 1
    return ChainReport(True, checked, last_hash=prev, legacy=legacy, keys=tuple(seen), hashes=hashes)


def trail_for_write(write_uid: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(write_uid=str(write_uid)).order_by("seq"))


def now_utc() -> datetime:
    return timezone.now()
