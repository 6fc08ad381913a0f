"""Anchoring the audit chain outside the database: signed chain heads, and checking the chain against them.

The keyed chain shows any altered, inserted or removed entry *before* the last one, but not a cut tail
or an emptied table: what is left still verifies. So the head (its seq and hash) is exported, signed, to
write-once storage after each day or deploy; `verify_audit_chain --expect-head FILE` then requires the
entry at that seq to carry that hash. As each hash covers every entry before it, that one comparison
also catches a rewritten or re-inserted prefix, keyed or not.

Heads are signed with Ed25519, not with the audit key: anyone holding a public key (an auditor, the
owner of the WORM bucket) can check a head without being able to make one, and the app servers, which
must hold the audit key to append, need not hold the signing key (only the host that exports does).
"""

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import orjson
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from writeback import audit_keys
from writeback.models import AuditAction, AuditEntry
from writeback.services import audit

HEAD_FORMAT = "fhir-writeback/audit-head/1"
# The signed fields, all of them required, with their types.
_FIELDS: dict[str, type] = {
    "format": str,
    "head_seq": int,
    "head_hash": str,
    "head_at": str,
    "entries": int,
    "key_id": str,
    "exported_at": str,
    "signing_key_id": str,
}


class AnchorError(Exception):
    """A head that cannot be made (broken chain, no signing key) or cannot be trusted (bad file)."""


@dataclass(frozen=True)
class Head:
    source: str  # where it came from, for messages (a file name)
    seq: int
    hash: str
    exported_at: str


def _signed_bytes(doc: dict[str, Any]) -> bytes:
    return orjson.dumps({name: doc[name] for name in _FIELDS}, option=orjson.OPT_SORT_KEYS)


def audit_head_export(*, actor: Any) -> dict[str, Any]:
    """Verifies the whole chain, then returns its head, signed, and records the export in the trail (the
    export's own entry comes after the head it anchors)."""
    try:
        signer = audit_keys.signing_key()
    except (ImproperlyConfigured, ValueError) as exc:
        raise AnchorError(f"WRITEBACK_AUDIT_SIGNING_KEY cannot be read: {exc}") from None
    if signer is None:
        raise AnchorError(
            "no signing key: set WRITEBACK_AUDIT_SIGNING_KEY (or _FILE) on the host that exports heads"
        )
    report = audit.verify_chain()
    if not report.ok:
        raise AnchorError(f"the chain does not verify, so its head is not worth anchoring: {report}")
    head = AuditEntry.objects.filter(seq=report.checked).values("at", "key_id").first()
    at = head["at"].astimezone(UTC).isoformat() if head else ""
    doc: dict[str, Any] = {
        "format": HEAD_FORMAT,
        "head_seq": report.checked,
        "head_hash": report.last_hash,
        "head_at": at,
        "entries": report.checked,
        "key_id": head["key_id"] if head else "",
        "exported_at": timezone.now().astimezone(UTC).isoformat(),
        "signing_key_id": audit_keys.signing_key_id(signer.public_key()),
    }
    doc["signature"] = base64.b64encode(signer.sign(_signed_bytes(doc))).decode()
    audit.record(
        AuditAction.AUDIT_HEAD_EXPORTED,
        actor=actor,
        object_type="audit",
        object_id=str(report.checked),
        data={
            "head_seq": report.checked,
            "head_hash": report.last_hash,
            "signing_key_id": doc["signing_key_id"],
        },
    )
    return doc


def audit_head_load(text: str, *, source: str) -> Head:
    """A head document, once its shape and its signature (by a trusted key) are checked."""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise AnchorError(f"{source}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != HEAD_FORMAT:
        raise AnchorError(f"{source}: not an audit head document (format {HEAD_FORMAT!r})")
    for name, kind in {**_FIELDS, "signature": str}.items():
        value = doc.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise AnchorError(f"{source}: field {name!r} is missing or not a {kind.__name__}")
    if doc["head_seq"] < 0:
        raise AnchorError(f"{source}: head_seq is negative")
    try:
        key = audit_keys.trusted_public_keys().get(doc["signing_key_id"])
    except (ImproperlyConfigured, ValueError) as exc:
        raise AnchorError(f"the trusted signing keys cannot be read: {exc}") from None
    if key is None:
        raise AnchorError(
            f"{source}: signed with key {doc['signing_key_id']}, which is not trusted here "
            "(its public key belongs in WRITEBACK_AUDIT_HEAD_PUBLIC_KEYS)"
        )
    try:
        signature = base64.b64decode(doc["signature"], validate=True)
    except (binascii.Error, ValueError):
        signature = b""
    if not audit_keys.signature_valid(key, signature, _signed_bytes(doc)):
        raise AnchorError(f"{source}: the signature does not match: the file was altered or forged")
    return Head(source, doc["head_seq"], doc["head_hash"], doc["exported_at"])


def audit_heads_problems(heads: list[Head], report: audit.ChainReport) -> list[str]:
    """What the chain, as walked by `verify_chain(capture={h.seq for h in heads})`, lacks of each head."""
    problems = []
    for head in heads:
        anchored = f"{head.source} (exported {head.exported_at}) anchors #{head.seq} = {head.hash[:16]}"
        if head.seq == 0:
            continue
        if not report.ok and head.seq >= (report.broken_seq or 0):
            problems.append(f"{anchored}, past the break at #{report.broken_seq}")
        elif report.checked == 0:
            problems.append(f"{anchored}, but the audit trail is empty: the table was emptied")
        elif head.seq > report.checked:
            problems.append(
                f"{anchored}, but the chain ends at #{report.checked}: "
                f"entries #{report.checked + 1}-#{head.seq} were removed (tail cut)"
            )
        elif report.hashes.get(head.seq) != head.hash:
            found = report.hashes.get(head.seq, "")[:16]
            problems.append(
                f"{anchored}, but entry #{head.seq} has hash {found}: the chain up to it was "
                "rewritten (or emptied and filled again)"
            )
    return problems
