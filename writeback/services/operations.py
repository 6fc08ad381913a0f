"""Closing a write by hand (replay and compensation have their own modules: replay.py, compensation.py)."""

from typing import Any

from django.db import transaction

from writeback.errors import DomainError
from writeback.models import Write
from writeback.services import audit
from writeback.services.permissions import require
from writeback.services.transitions import transition
from writeback.states import ALLOWED_TRANSITIONS, WriteState


def write_resolve(*, write: Write, user: Any, note: str, request_id: str = "", channel: str = "api") -> Write:
    """Closes a write by hand (admins), with a required note: the operator fixed it some other way."""
    require(
        user,
        "resolve",
        write.tenant,
        object_type="write",
        object_id=str(write.uid),
        request_id=request_id,
        channel=channel,
    )
    if not note or not note.strip():
        raise DomainError(400, "note-required", "resolving by hand needs a note saying what was done", "note")
    with transaction.atomic():
        write = Write.objects.select_for_update().select_related("tenant", "event").get(pk=write.pk)
        if WriteState.RESOLVED not in ALLOWED_TRANSITIONS[write.state]:
            raise DomainError(
                409, "invalid-transition", f"a {write.state} write cannot be resolved by hand", "state"
            )
        drafts: list[audit.AuditDraft] = []
        transition(
            write,
            WriteState.RESOLVED,
            actor=user,
            reason="resolved by hand",
            request_id=request_id,
            data={"resolution_note": note.strip()},
            fields={"lease_owner": "", "lease_expires_at": None},
            defer_audit=drafts,
        )
        audit.record_many(drafts)
    return write
