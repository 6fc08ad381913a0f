"""Clinician approval of high-risk writes: four eyes, bound to the exact payload, and it lapses."""

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from writeback.errors import DomainError
from writeback.models import Approval, AuditAction, Write
from writeback.services import audit
from writeback.services.permissions import refuse, require
from writeback.services.transitions import transition
from writeback.states import WriteState


def _locked(write: Write) -> Write:
    return Write.objects.select_for_update().select_related("event", "tenant").get(pk=write.pk)


def _check_four_eyes(write: Write, user: Any, action: str, request_id: str) -> None:
    if write.event.initiator_id is not None and write.event.initiator_id == user.pk:
        refuse(
            user,
            action,
            "the initiator of a write cannot approve or reject it (four eyes)",
            rule="four-eyes",
            tenant=write.tenant,
            object_type="write",
            object_id=str(write.uid),
            request_id=request_id,
        )


def write_approve(
    *, write: Write, user: Any, rationale: str, request_id: str = "", channel: str = "api"
) -> Approval:
    """A clinician approves the exact payload of a write awaiting approval; it may then be sent."""
    return _decide(write, user, rationale, Approval.Decision.APPROVED, request_id, channel)


def write_reject(
    *, write: Write, user: Any, rationale: str, request_id: str = "", channel: str = "api"
) -> Approval:
    """A clinician rejects a write awaiting approval; it is never sent."""
    return _decide(write, user, rationale, Approval.Decision.REJECTED, request_id, channel)


def _decide(
    write: Write, user: Any, rationale: str, decision: str, request_id: str, channel: str
) -> Approval:
    approve = decision == Approval.Decision.APPROVED
    action = "approve" if approve else "reject"
    require(
        user,
        action,
        write.tenant,
        object_type="write",
        object_id=str(write.uid),
        request_id=request_id,
        channel=channel,
    )
    _check_four_eyes(write, user, action, request_id)
    if not rationale or not rationale.strip():
        raise DomainError(400, "rationale-required", f"to {action} a write, give a rationale", "rationale")
    with transaction.atomic():
        write = _locked(write)
        if write.state != WriteState.AWAITING_APPROVAL:
            raise DomainError(
                409, "invalid-transition", f"write is {write.state}, not awaiting approval", "state"
            )
        now = timezone.now()
        approval = Approval.objects.create(
            write=write,
            approver=user,
            decision=decision,
            rationale=rationale.strip(),
            payload_hash=write.payload_hash,
            decided_at=now,
            expires_at=now + timedelta(hours=settings.WRITEBACK_APPROVAL_TTL_HOURS) if approve else now,
        )
        drafts: list[audit.AuditDraft] = []
        transition(
            write,
            WriteState.PENDING if approve else WriteState.REJECTED,
            actor=user,
            reason="approved" if approve else "rejected by approver",
            request_id=request_id,
            data={"approval": approval.pk, "payload_hash": write.payload_hash},
            defer_audit=drafts,
        )
        entry_action = AuditAction.WRITE_APPROVED if approve else AuditAction.WRITE_REJECTED
        drafts.append(_decision_entry(entry_action, write, user, approval, request_id))
        audit.record_many(drafts)
    return approval


def _decision_entry(
    action: AuditAction, write: Write, user: Any, approval: Approval, request_id: str
) -> audit.AuditDraft:
    return audit.draft(
        action,
        actor=user,
        tenant=write.tenant.slug,
        object_type="approval",
        object_id=str(approval.pk),
        write_uid=str(write.uid),
        event_uid=str(write.event.uid),
        correlation_id=write.correlation_id,
        request_id=request_id,
        data={
            "decision": approval.decision,
            "rationale_text": approval.rationale,
            "payload_hash": approval.payload_hash,
            "expires_at": approval.expires_at,
        },
    )


def valid_approval(write: Write) -> Approval | None:
    """The approval that covers this write's current payload now, if any (checked before sending)."""
    for approval in Approval.objects.filter(
        write=write, decision=Approval.Decision.APPROVED, voided_at__isnull=True
    ):
        if approval.is_valid_for(write.payload_hash):
            return approval
    return None


def void_approvals(*, write: Write, reason: str, actor: Any, drafts: list[audit.AuditDraft]) -> int:
    """Voids every live approval of a write (its payload changed, or it lapsed)."""
    now = timezone.now()
    count = Approval.objects.filter(
        write=write, voided_at__isnull=True, decision=Approval.Decision.APPROVED
    ).update(voided_at=now, void_reason=reason[:200])
    if count:
        drafts.append(
            audit.draft(
                AuditAction.APPROVAL_VOIDED,
                actor=actor,
                tenant=write.tenant.slug,
                object_type="write",
                object_id=str(write.uid),
                write_uid=str(write.uid),
                correlation_id=write.correlation_id,
                data={"reason": reason, "count": count},
            )
        )
    return count
