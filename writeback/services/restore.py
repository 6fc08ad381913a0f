"""After a database restore: never send again what may have landed since the backup.

A restored ledger shows writes as pending that the workers sent after the backup was taken; sending
them again as they stand would put a second entry in the chart wherever the EHR ignores
`If-None-Exist`. So every write that could still be sent is marked *verify before sending*: the worker
looks it up at the EHR by our identifier first and records it committed (an attempt with outcome
`found` says so) when it is there. A reconciliation sweep of the window then finds what else differs.

The restore is also detected without a person: workers keep the audit chain head they last saw in a
small file outside the database (`WRITEBACK_GENERATION_FILE`). The chain only grows, and its entries
are keyed hashes, so a database whose chain no longer holds that head (fewer entries, or another
entry at that place) was restored or rolled back; the worker that notices marks the writes itself and
raises an alert, so a forgotten manual step cannot duplicate.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from writeback.models import AuditAction, AuditEntry, Severity, Tenant, Write
from writeback.services import audit
from writeback.services.alerts import alert_raise
from writeback.states import CLAIMABLE, STREAM_BLOCKING

log = logging.getLogger(__name__)

RESTORE_ALERT = "restore-detected"
# Every state from which a write can still reach the EHR (after an approval, a retry or a resend).
MAY_STILL_BE_SENT = STREAM_BLOCKING


def mark_for_verification(
    *, tenant: Tenant | None = None, actor: Any = "system", reason: str = "database restored"
) -> dict[str, int]:
    """Marks the writes that may have been sent after the backup point as verify-before-send, and makes
    the claimable ones due now. Returns the count per tenant slug (each tenant's count is audited).

    Every open write is marked, whatever its age: one created long before the backup may still have
    been sent after it. A check by read costs one search."""
    tenants = [tenant] if tenant is not None else list(Tenant.objects.all())
    counts: dict[str, int] = {}
    now = timezone.now()
    for t in tenants:
        with transaction.atomic():
            mine = Write.objects.filter(tenant=t, state__in=MAY_STILL_BE_SENT)
            marked = mine.update(verify_before_send=True)
            mine.filter(state__in=CLAIMABLE).update(next_attempt_at=now)
            counts[t.slug] = marked
            audit.record(
                AuditAction.RESTORE_RECOVERY,
                actor=actor,
                tenant=t.slug,
                object_type="tenant",
                object_id=t.slug,
                data={"marked_verify_before_send": marked, "reason": reason},
            )
    return counts


# -- restore detection -------------------------------------------------------------------------------------


def _marker_path() -> Path | None:
    path = settings.WRITEBACK_GENERATION_FILE
    return Path(path) if path else None


def chain_head() -> tuple[int, str]:
    head = AuditEntry.objects.order_by("-seq").values_list("seq", "hash").first()
    return head if head else (0, "")


def write_marker() -> None:
    """Records the current chain head outside the database (atomically: a crash leaves the old file)."""
    path = _marker_path()
    if path is None:
        return
    seq, digest = chain_head()
    payload = {"seq": seq, "hash": digest, "at": timezone.now().isoformat()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".generation-")
    with os.fdopen(fd, "w") as out:
        json.dump(payload, out)
    os.replace(tmp, path)


def read_marker() -> dict[str, Any] | None:
    path = _marker_path()
    if path is None or not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        return {"seq": int(data["seq"]), "hash": str(data["hash"]), "at": str(data.get("at", ""))}
    except (ValueError, KeyError, TypeError):
        log.warning("restore marker %s is unreadable; rewriting it", path)
        return None


def behind_marker(marker: dict[str, Any]) -> bool:
    """The database no longer holds the head the marker recorded: it was restored (or rolled back)."""
    if marker["seq"] == 0:
        return False
    held = AuditEntry.objects.filter(seq=marker["seq"]).values_list("hash", flat=True).first()
    return held != marker["hash"]


def check_for_restore(actor: Any = "system") -> dict[str, int] | None:
    """On worker start: if the database is behind the marker, mark writes verify-before-send, raise an
    alert per tenant and audit it; then record the current head. Returns the counts when it acted."""
    if _marker_path() is None:
        return None
    marker = read_marker()
    acted = None
    if marker is not None and behind_marker(marker):
        seq, _ = chain_head()
        reason = (
            f"restore detected: the audit chain head recorded at {marker['at']} (entry #{marker['seq']}) "
            f"is not in this database (its head is #{seq})"
        )
        log.warning("%s; marking open writes verify-before-send", reason)
        acted = mark_for_verification(actor=actor, reason=reason)
        with transaction.atomic():
            drafts = []
            for t in Tenant.objects.filter(slug__in=list(acted)):
                drafts.append(
                    audit.draft(
                        AuditAction.RESTORE_DETECTED,
                        actor=actor,
                        tenant=t.slug,
                        object_type="tenant",
                        object_id=t.slug,
                        data={"marker_seq": marker["seq"], "database_seq": seq, "marked": acted[t.slug]},
                    )
                )
                alert_raise(
                    tenant=t,
                    code=RESTORE_ALERT,
                    severity=Severity.CRITICAL,
                    message=f"{reason}. {acted[t.slug]} open write(s) will be checked at the EHR before "
                    "sending; run `recover_after_restore --since <backup time>` to sweep the window.",
                    drafts=drafts,
                )
            audit.record_many(drafts)
    write_marker()
    return acted


def parse_instant(text: str | None, name: str) -> datetime | None:
    """An ISO 8601 time for a command option (a naive one is taken in the server's time zone)."""
    from django.utils.dateparse import parse_datetime

    if not text:
        return None
    value = parse_datetime(text.strip())
    if value is None:
        raise ValueError(f"--{name}: {text!r} is not an ISO 8601 time (e.g. 2026-12-07T03:00:00Z)")
    if timezone.is_naive(value):
        value = timezone.make_aware(value)
    return value
