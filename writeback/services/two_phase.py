"""The two-phase commit surrogate for referral status changes: the abort.

The worker runs phase 1 (prepare: read the Task, record its version and current status) and phase 2
(commit: update with If-Match on that version); both are visible on the write. The client app that
sent `referral.status_changed` keeps its own side of the change. When that side fails, the app aborts:

- the EHR side has committed: a compensating write restores the status the Task had before (a
  rollback caused by the abort, mapped by the vendor's adapter: an API write or a manual task);
- the EHR side has not been sent yet: the write is closed (`resolved`) and never sent;
- the EHR side may be in flight or its outcome is unknown: 409, ask again once it has settled (the
  worker settles an unknown outcome by reading the target, never by guessing).
"""

from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from writeback.errors import DomainError
from writeback.models import Compensation, Write
from writeback.services.compensation import compensate_unchecked
from writeback.services.permissions import require
from writeback.services.transitions import transition
from writeback.states import InvalidTransition, WriteState

# States in which nothing has been sent for the write, or nothing that landed: closing it is safe.
_NOT_SENT = (
    WriteState.VALIDATED,
    WriteState.AWAITING_APPROVAL,
    WriteState.PENDING,
    WriteState.FAILED_RETRYABLE,
    WriteState.FAILED_TERMINAL,
    WriteState.CONFLICT,
    WriteState.HELD_AUTHORIZATION,
)


def is_two_phase(write: Write) -> bool:
    return write.resource_type == "Task" and "to_status" in (write.context or {})


def two_phase_abort(
    *, write: Write, user: Any, reason: str, request_id: str = "", channel: str = "api"
) -> dict[str, Any]:
    """Undoes (or stops) the EHR side of a referral status change whose internal side failed.
    Returns what was done: {"outcome": "compensating" | "cancelled", ...}.

    A client app may abort only the changes it submitted itself; admins and engineers any."""
    require(
        user,
        "abort_two_phase",
        write.tenant,
        object_type="write",
        object_id=str(write.uid),
        request_id=request_id,
        channel=channel,
        submitter_id=write.event.submitter_id,
    )
    if not reason or not reason.strip():
        raise DomainError(400, "reason-required", "say why the internal side failed", "reason")
    write = Write.objects.select_related("tenant", "event").get(pk=write.pk)
    if not is_two_phase(write):
        raise DomainError(
            409, "not-two-phase", "only referral status changes (two-phase writes) can be aborted", "id"
        )
    reason = f"internal side failed: {reason.strip()}"
    if write.state == WriteState.COMMITTED:
        comp = compensate_unchecked(
            write=write,
            user=user,
            kind=Compensation.Kind.ROLLBACK,
            reason=reason,
            request_id=request_id,
            channel=channel,
            cause="two_phase_abort",
        )
        return {"outcome": "compensating", "compensation": str(comp.uid), "status": comp.status}
    if write.state in _NOT_SENT:
        return _cancel(write, user, reason, request_id)
    if write.state == WriteState.OUTCOME_UNKNOWN:
        raise DomainError(
            409,
            "outcome-unknown",
            "the EHR side may have committed; ask again once the worker has settled it by reading the Task",
            "state",
        )
    raise DomainError(409, "invalid-transition", f"a {write.state} write cannot be aborted", "state")


def _cancel(write: Write, user: Any, reason: str, request_id: str) -> dict[str, Any]:
    now = timezone.now()
    # Not while a worker holds it: its request may be on the wire.
    not_leased = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
    with transaction.atomic():
        if not Write.objects.filter(not_leased, pk=write.pk, state=write.state).exists():
            raise DomainError(
                409, "in-flight", "a worker is sending this write right now; ask again in a moment", "state"
            )
        try:
            transition(
                write,
                WriteState.RESOLVED,
                actor=user,
                reason=f"two-phase abort before the EHR side was sent ({reason})",
                request_id=request_id,
                data={"cause": "two_phase_abort"},
                fields={"lease_owner": "", "lease_expires_at": None},
                guard={"lease_owner": write.lease_owner},
            )
        except InvalidTransition:
            raise DomainError(409, "in-flight", "the write moved meanwhile; ask again", "state")
    return {"outcome": "cancelled", "state": write.state}
