"""Clinician approval of high-risk writes: four eyes, bound to the exact payload, and it lapses."""

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from writeback import metrics
from writeback.errors import DomainError
from writeback.models import Approval, AuditAction, Write, WriteEditor
from writeback.services import audit
from writeback.services.permissions import refuse, require
from writeback.services.transitions import transition
from writeback.states import DECIDABLE, WriteState


def _locked(write: Write) -> Write:
    return Write.objects.select_for_update().select_related("event", "tenant").get(pk=write.pk)


# The states a clinician decides in: a write waiting for its approval, and one held at send time
# because the people or token behind it lost their authority (a re-approval answers for it).


def payload_shapers(write: Write) -> dict[int, str]:
    """Everyone who shaped this write's payload, by user id: its event's initiator and submitter, and
    whoever edited it since (an edited replay, a conflict's resolution, a correction). The four-eyes
    rule keeps them all from approving or rejecting it. Uses `editors` when prefetched."""
    event = write.event
    shapers = {event.initiator_id: "initiated", event.submitter_id: "submitted"}
    for editor in write.editors.all():
        shapers.setdefault(editor.user_id, _EDITED[editor.how])
    shapers.pop(None, None)
    return shapers


# "You ... this change": how an editor shaped it.
_EDITED = {
    WriteEditor.How.EDIT: "edited",
    WriteEditor.How.CONFLICT_RESOLUTION: "reconciled",
    WriteEditor.How.CORRECTION: "corrected",
}


def shaped_by(write: Write, user: Any) -> str:
    """How `user` shaped the write's payload ('initiated', 'submitted', ...), or '' if they did not."""
    return payload_shapers(write).get(user.pk, "")


def _check_four_eyes(write: Write, user: Any, action: str, request_id: str, channel: str) -> None:
    how = shaped_by(write, user)
    if how:
        refuse(
            user,
            action,
            f"you {how} this change, so a second clinician must approve or reject it (four eyes)",
            rule="four-eyes",
            tenant=write.tenant,
            object_type="write",
            object_id=str(write.uid),
            request_id=request_id,
            channel=channel,
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
    _check_four_eyes(write, user, action, request_id, channel)
    if not rationale or not rationale.strip():
        raise DomainError(400, "rationale-required", f"to {action} a write, give a rationale", "rationale")
    with transaction.atomic():
        write = _locked(write)
        if write.state not in DECIDABLE:
            raise DomainError(
                409, "invalid-transition", f"write is {write.state}, not awaiting approval", "state"
            )
        held = write.state == WriteState.HELD_AUTHORIZATION
        now = timezone.now()
        approval = Approval.objects.create(
            write=write,
            approver=user,
            decision=decision,
            rationale=rationale.strip(),
            payload_hash=write.payload_hash,
            decided_at=now,
            expires_at=now + timedelta(hours=settings.WRITEBACK_APPROVAL_TTL_HOURS) if approve else now,
            reauthorizes=held and approve,
        )
        metrics.approval_decided(write, decision, (now - write.created_at).total_seconds())
        drafts: list[audit.AuditDraft] = []
        reason = "approved" if approve else "rejected by approver"
        if approve and held:
            reason = "re-approved: the approver answers for it in place of the lapsed authority"
        transition(
            write,
            WriteState.PENDING if approve else WriteState.REJECTED,
            actor=user,
            reason=reason,
            request_id=request_id,
            data={"approval": approval.pk, "payload_hash": write.payload_hash, "reauthorizes": held},
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
            "reauthorizes": approval.reauthorizes,
        },
    )


def valid_approval(write: Write) -> Approval | None:
    """The approval that covers this write's current payload now, if any (checked before sending)."""
    for approval in Approval.objects.filter(
        write=write, decision=Approval.Decision.APPROVED, voided_at__isnull=True
    ).select_related("approver"):
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


def write_editors_record(
    new: Write, *, inherit_from: Write | None = None, user: Any = None, how: str = ""
) -> None:
    """Records who shaped `new`'s payload: the editors of the write it stands in for (`inherit_from`)
    and, when a person edited it, `user` (`how`: a WriteEditor.How). Call it in the transaction that
    makes `new`."""
    rows = []
    if inherit_from is not None:
        rows += [
            WriteEditor(write=new, user_id=e.user_id, how=e.how, at=e.at)
            for e in WriteEditor.objects.filter(write=inherit_from)
        ]
    if user is not None and how:
        rows.append(WriteEditor(write=new, user=user, how=how))
    WriteEditor.objects.bulk_create(rows, ignore_conflicts=True)
