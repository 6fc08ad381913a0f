"""Authorisation checked again just before a write leaves (safety rule 7).

A write may wait in the queue for hours (a paused tenant, an approval, a retry). Before it is sent, the
people and the token behind it must still hold the authority that admitted it:

- its initiator and its submitter are still active and still granted the tenant;
- the API token it was submitted with is not revoked and still names the tenant;
- where it was approved, the approver is still an active clinician of the tenant.

A write that fails is held (`held_authorization`, with the reason) for a person: a clinician who did not
shape it re-approves it, and then answers for it in place of the lapsed initiator, submitter or token
(the approver is still checked), or rejects it; an admin may resolve it by hand. It is never sent as is,
and never lost.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model

from writeback.models import Tenant, Write
from writeback.services.access import user_may_access, users_with_access
from writeback.services.approvals import valid_approval
from writeback.services.permissions import allowed
from writeback.services.tokens import token_lapse

if TYPE_CHECKING:
    from writeback.services.send_reads import SendReads


@dataclass(frozen=True)
class Lapse:
    rule: str  # initiator-lapsed, submitter-lapsed, token-revoked, token-lapsed, approver-lapsed
    reason: str
    approver: bool = False  # the approval no longer counts (voided when the write is held)


def _why_not(user, tenant: Tenant) -> str:
    if not user.is_active:
        return "is deactivated"
    if not user_may_access(user, tenant):
        return f"is no longer granted tenant {tenant.slug}"
    return "no longer holds the role it acted in"


def send_authorization_lapse(write: Write, reads: "SendReads | None" = None) -> Lapse | None:
    """The first authority behind `write` that lapsed since it was queued, or None when all still hold.
    Two queries for a write that needs no approval (its people, its token), or none where the worker
    read them for its whole batch (`reads`, from `load_send_reads` over a batch holding `write`)."""
    tenant = write.tenant
    if write.approval_required or "held_authorization" in (write.context or {}):
        approval = valid_approval(write)
        if approval is not None:
            approver = approval.approver
            if not allowed(approver, "approve", tenant):
                why = _why_not(approver, tenant)
                return Lapse("approver-lapsed", f"approver {approver.get_username()} {why}", approver=True)
            if approval.reauthorizes:
                return None  # the re-approving clinician answers for it now
    event = write.event
    if event.initiator_id is None:
        return Lapse("initiator-lapsed", "the event names no initiator: nobody answers for this write")
    people = {"initiator": event.initiator_id, "submitter": event.submitter_id}
    standing = (
        reads.standing[tenant.pk]
        if reads is not None
        else users_with_access({pk for pk in people.values() if pk is not None}, tenant)
    )
    for who, pk in people.items():
        if pk is not None and pk not in standing:
            user = get_user_model().objects.get(pk=pk)
            return Lapse(f"{who}-lapsed", f"{who} {user.get_username()} {_why_not(user, tenant)}")
    if event.submitted_token_id is not None:
        token = event.submitted_token_id
        lapsed = reads.tokens[(token, tenant.pk)] if reads is not None else token_lapse(token, tenant)
        if lapsed:
            return Lapse(*lapsed)
    return None
