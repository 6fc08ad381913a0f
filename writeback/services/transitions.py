"""The one function that changes a write's state, and writes the audit entry that says so."""

from typing import Any

from django.db import transaction
from django.utils import timezone

from writeback.models import AuditAction, Write
from writeback.services import audit
from writeback.states import InvalidTransition, check_transition


def transition_draft(
    write: Write,
    current: str,
    to: str,
    *,
    actor: Any,
    reason: str = "",
    data: dict[str, Any] | None = None,
    request_id: str = "",
    target_ack: bool | None = None,
    tenant_slug: str = "",
    event_uid: str = "",
) -> audit.AuditDraft:
    """The audit entry that says `write` moved from `current` to `to`: one wording wherever a state
    changes (`transition`, a settlement, a write inserted already queued by the ledger).
    `tenant_slug` and `event_uid` spare the look-ups where the caller holds them for many writes."""
    return audit.write_draft(
        AuditAction.WRITE_TRANSITION,
        write,
        actor=actor,
        tenant=tenant_slug or write.tenant.slug,
        event_uid=event_uid or str(write.event.uid),
        request_id=request_id,
        target_ack=target_ack,
        data={"from": current, "to": to, "reason": reason, **(data or {})},
    )


def transition(
    write: Write,
    to: str,
    *,
    actor: Any,
    reason: str = "",
    data: dict[str, Any] | None = None,
    fields: dict[str, Any] | None = None,
    request_id: str = "",
    target_ack: bool | None = None,
    defer_audit: list[audit.AuditDraft] | None = None,
    guard: dict[str, Any] | None = None,
) -> Write:
    """Moves `write` to `to` if the table allows it and nobody moved it meanwhile.

    `guard` adds conditions the row must still meet (a worker passes its lease: a worker whose lease
    lapsed and was taken over must not record over the new holder).

    `fields` are other columns changed in the same UPDATE. The audit entry is appended at once, or to
    `defer_audit` when the caller appends several entries at the end of its transaction (one chain lock).
    """
    current = write.state
    check_transition(current, to)
    now = timezone.now()
    updates = {"state": to, "state_changed_at": now, "updated_at": now, **(fields or {})}
    with transaction.atomic(savepoint=False):
        changed = Write.objects.filter(pk=write.pk, state=current, **(guard or {})).update(**updates)
        if changed == 1:
            for name, value in updates.items():
                setattr(write, name, value)
            entry = transition_draft(
                write,
                current,
                to,
                actor=actor,
                reason=reason,
                data=data,
                request_id=request_id,
                target_ack=target_ack,
            )
            if defer_audit is not None:
                defer_audit.append(entry)
            else:
                audit.record_many([entry])
    if changed != 1:
        # Raised after the block: nothing was written, so a caller's enclosing transaction stays usable.
        raise InvalidTransition(f"write {write.uid} is no longer {current}; refresh and try again")
    return write
