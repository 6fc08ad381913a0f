"""The second-engineer flow for tenant configuration that widens what may be written.

Capability changes and contract overrides share it: a narrowing applies at once (stopping is always
safe); a widening is stored as a pending change that another integration engineer, never the
requester, approves or turns down. Approval and rejection lock the pending row (two deciders racing
get one decision and a 409), stamp who decided when, and write the decision's audit entry together
with the change's own (`Flow.apply`) in one transaction.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import models, transaction
from django.utils import timezone

from writeback.errors import DomainError
from writeback.models import AuditAction
from writeback.services import audit
from writeback.services.permissions import refuse, require


@dataclass(frozen=True)
class Flow:
    object_type: str  # the audit entries' object type: "capability_change", "contract_override_change"
    approved: AuditAction
    rejected: AuditAction
    # What the decision entry says of the change, besides who asked and why.
    describe: Callable[[Any], dict[str, Any]]
    # Makes the change take effect (inside the decision's transaction); returns its audit entry.
    apply: Callable[[Any, Any, str], audit.AuditDraft]


def approve(
    flow: Flow,
    change: models.Model,
    user: Any,
    *,
    note: str = "",
    request_id: str = "",
    channel: str = "api",
    precondition: Callable[[], None] | None = None,
    recorded: dict[str, Any] | None = None,
) -> Any:
    """Applies a pending widening as the second engineer. `precondition` runs once the person is known
    to be a second engineer (the checklist check); `recorded`: more columns of the change to save with
    the decision (the confirmed checklist)."""
    require_second_engineer(flow, change, user, request_id=request_id, channel=channel)
    if precondition is not None:
        precondition()
    with transaction.atomic():
        change = _decide(change, change.Status.APPLIED, user, recorded or {})
        audit.record_many(
            [
                _decision_entry(flow, flow.approved, change, user, note, request_id),
                flow.apply(change, user, request_id),
            ]
        )
    return change


def reject(
    flow: Flow, change: models.Model, user: Any, *, note: str, request_id: str = "", channel: str = "api"
) -> Any:
    """Turns a pending widening down: a second engineer, or the requester withdrawing it."""
    _require_engineer(flow, change, user, request_id, channel)
    note = (note or "").strip()
    if not note:
        raise DomainError(400, "note-required", "say why the change is turned down", "note")
    with transaction.atomic():
        change = _decide(change, change.Status.REJECTED, user, {})
        audit.record_many([_decision_entry(flow, flow.rejected, change, user, note, request_id)])
    return change


def require_second_engineer(flow: Flow, change: Any, user: Any, *, request_id: str, channel: str) -> None:
    """An engineer of the change's tenant who is not the one who asked for it (refused and audited)."""
    _require_engineer(flow, change, user, request_id, channel)
    if change.requested_by_id == user.pk:
        refuse(
            user,
            "configure_tenant",
            "a widening needs a second integration engineer: the requester cannot approve it",
            rule="four-eyes",
            tenant=change.tenant,
            object_type=flow.object_type,
            object_id=str(change.uid),
            request_id=request_id,
            channel=channel,
        )


def _require_engineer(flow: Flow, change: Any, user: Any, request_id: str, channel: str) -> None:
    require(
        user,
        "configure_tenant",
        change.tenant,
        object_type=flow.object_type,
        object_id=str(change.uid),
        request_id=request_id,
        channel=channel,
    )


def _decide(change: Any, status: str, user: Any, recorded: dict[str, Any]) -> Any:
    """Locks the change, checks it still waits, and records the decision on it."""
    change = (
        type(change).objects.select_for_update().select_related("tenant", "requested_by").get(pk=change.pk)
    )
    if change.status != change.Status.PENDING:
        raise DomainError(
            409, "already-decided", f"this change is already {change.get_status_display().lower()}"
        )
    change.status, change.decided_by, change.decided_at = status, user, timezone.now()
    for name, value in recorded.items():
        setattr(change, name, value)
    change.save(update_fields=["status", "decided_by", "decided_at", *recorded])
    return change


def _decision_entry(
    flow: Flow, action: AuditAction, change: Any, user: Any, note: str, request_id: str
) -> audit.AuditDraft:
    return audit.draft(
        action,
        actor=user,
        tenant=change.tenant.slug,
        object_type=flow.object_type,
        object_id=str(change.uid),
        request_id=request_id,
        data={
            **flow.describe(change),
            "requested_by": change.requested_by.get_username(),
            "reason": (note or "").strip(),
        },
    )
