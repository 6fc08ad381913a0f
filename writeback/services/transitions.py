"""The one function that changes a write's state, and writes the audit entry that says so."""

from typing import Any

from django.db import transaction
from django.utils import timezone

from writeback.models import AuditAction, Write
from writeback.services import audit
from writeback.states import InvalidTransition, check_transition


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
            entry = audit.write_draft(
                AuditAction.WRITE_TRANSITION,
                write,
                actor=actor,
                tenant=write.tenant.slug,
                event_uid=str(write.event.uid),
                request_id=request_id,
                target_ack=target_ack,
                data={"from": current, "to": to, "reason": reason, **(data or {})},
            )
            if defer_audit is not None:
                defer_audit.append(entry)
            else:
                audit.record_many([entry])
    if changed != 1:
        # Raised after the block: nothing was written, so a caller's enclosing transaction stays usable.
        raise InvalidTransition(f"write {write.uid} is no longer {current}; refresh and try again")
    return write


def transition_many(
    writes: list[Write],
    to: str,
    *,
    actor: Any,
    tenant_slug: str,
    event_uid: str,
    reason: str = "",
    request_id: str = "",
    defer_audit: list[audit.AuditDraft],
) -> None:
    """Moves several writes of one event, all in the same state, with one UPDATE (intake's hot path)."""
    if not writes:
        return
    current = writes[0].state
    if any(w.state != current for w in writes):
        raise InvalidTransition("transition_many needs writes in one state")
    check_transition(current, to)
    now = timezone.now()
    changed = Write.objects.filter(pk__in=[w.pk for w in writes], state=current).update(
        state=to, state_changed_at=now, updated_at=now
    )
    if changed != len(writes):
        raise InvalidTransition(f"{len(writes) - changed} write(s) moved while being queued")
    for w in writes:
        w.state, w.state_changed_at = to, now
        defer_audit.append(
            audit.write_draft(
                AuditAction.WRITE_TRANSITION,
                w,
                actor=actor,
                tenant=tenant_slug,
                event_uid=event_uid,
                request_id=request_id,
                data={"from": current, "to": to, "reason": reason},
            )
        )
