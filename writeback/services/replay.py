"""Replay, in three labelled modes. Every replay links to its original (lineage) and never rewrites
its history; none makes a second chart entry, because a replayed resource keeps the original's
identifier and the worker looks it up before sending whenever an earlier try may have landed.

- resend: the same write, same request, same key, queued again (after a terminal failure).
- rederive: the stored event through today's canonicalization and mapping; a new write.
- edit: an operator-edited payload; a new write, approval required for high risk.
Any mode with shadow=True makes a new write that is compared with the EHR and never written.
"""

from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from writeback.canonical import canonicalize
from writeback.errors import DomainError
from writeback.fhir_mapping import plan_writes
from writeback.models import RISK_ORDER, AuditAction, BusinessEvent, Risk, Write, WriteEditor
from writeback.services import audit
from writeback.services.approvals import write_editors_record
from writeback.services.contract import TenantContract, touched_fields
from writeback.services.ledger import derived_write, ledger_add, planned_write
from writeback.services.patient_binding import require_same_binding
from writeback.services.permissions import require
from writeback.services.requests import identity_uid
from writeback.services.transitions import transition
from writeback.states import ALLOWED_TRANSITIONS, WriteState

MODES = ("resend", "rederive", "edit")
RESENDABLE = (WriteState.FAILED_TERMINAL, WriteState.FAILED_RETRYABLE, WriteState.OUTCOME_UNKNOWN)


def write_replay(
    *,
    write: Write,
    user: Any,
    mode: str,
    payload: dict | None = None,
    reason: str = "",
    shadow: bool = False,
    request_id: str = "",
    channel: str = "api",
) -> Write:
    require(
        user,
        "replay",
        write.tenant,
        object_type="write",
        object_id=str(write.uid),
        request_id=request_id,
        channel=channel,
    )
    if mode not in MODES:
        raise DomainError(400, "invalid-value", f"mode must be one of {', '.join(MODES)}", "mode")
    write = Write.objects.select_related("tenant", "event").get(pk=write.pk)  # decide on the current state
    if write.payload_purged_at is not None:
        raise DomainError(
            409, "payload-purged", "this write's payload was purged (retention): nothing to replay"
        )
    if mode == "resend" and not shadow:
        return _resend(write, user, reason, request_id)
    if write.state == WriteState.COMMITTED and not shadow:
        raise DomainError(
            409,
            "already-committed",
            "this write is in the chart; replay it into shadow to compare, or compensate it",
            "state",
        )
    if write.state == WriteState.HELD_AUTHORIZATION and not shadow:
        raise DomainError(409, "held-authorization", _LEFT_ALONE[WriteState.HELD_AUTHORIZATION], "state")
    binding = {"user": user, "action": "replay", "request_id": request_id, "channel": channel}
    if mode == "edit":
        if isinstance(payload, dict) and payload.get("resourceType") == write.resource_type:
            # Before the contract looks at it: moving a write to another patient is refused as that
            # (a payload of another type is refused as malformed below).
            require_same_binding(write, payload, **binding)
        new_payload = _edited(write, payload)
    elif mode == "rederive":
        new_payload = _rederived(write)
        require_same_binding(write, new_payload, **binding)
    else:
        new_payload = write.payload
    return _new_write(write, user, mode, new_payload, reason, shadow, request_id)


# Final states an event replay leaves alone, and why.
_LEFT_ALONE = {
    WriteState.COMMITTED: "in the chart already; compensate it to change it",
    WriteState.REJECTED: "rejected by an approver",
    WriteState.COMPENSATED: "compensated",
    WriteState.RESOLVED: "resolved by hand",
    WriteState.PREVIEWED: "previewed (dry run)",
    WriteState.SHADOWED: "shadowed",
    WriteState.HELD_AUTHORIZATION: "held because its authorisation lapsed: a clinician re-approves it or "
    "an admin resolves it",
}
_QUEUED = (WriteState.VALIDATED, WriteState.AWAITING_APPROVAL, WriteState.PENDING)


def event_replay(
    *,
    event: BusinessEvent,
    user: Any,
    mode: str,
    reason: str = "",
    shadow: bool = False,
    request_id: str = "",
    channel: str = "api",
) -> list[dict[str, Any]]:
    """Re-runs an event's pipeline, idempotently: each of its current writes is replayed in `mode`
    where that is safe, and left alone (with the reason) where it is not: a committed write is never
    sent again (outside shadow). A re-derive also adds writes for resources today's mapping produces
    that the event never had. Returns one row per write: what was done and why."""
    require(
        user,
        "replay",
        event.tenant,
        object_type="event",
        object_id=str(event.uid),
        request_id=request_id,
        channel=channel,
    )
    if mode not in ("resend", "rederive"):
        raise DomainError(400, "invalid-value", "an event replays as resend or rederive", "mode")
    if "purged_at" in (event.raw_payload or {}):
        raise DomainError(
            409, "payload-purged", "this event's payload was purged (retention): nothing to replay"
        )
    writes = list(
        event.writes.select_related("tenant", "event")
        .exclude(state=WriteState.SUPERSEDED)
        .exclude(context__has_key="shadow_only")
        .order_by("position", "id")
    )
    rows: list[dict[str, Any]] = []
    for write in writes:
        why = _why_left_alone(write, mode, shadow)
        if why:
            rows.append({"write": str(write.uid), "action": "left", "reason": why})
            continue
        new = write_replay(
            write=write,
            user=user,
            mode=mode,
            reason=reason,
            shadow=shadow,
            request_id=request_id,
            channel=channel,
        )
        rows.append({"write": str(write.uid), "action": "replayed", "replay": str(new.uid)})
    if mode == "rederive" and not shadow:
        known = set(event.writes.values_list("position", flat=True))
        for new in _added_by_rederive(event, known, user, request_id):
            rows.append({"write": str(new.uid), "action": "added", "resource_type": new.resource_type})
    return rows


def _why_left_alone(write: Write, mode: str, shadow: bool) -> str:
    if shadow:
        return ""  # comparing with the EHR never writes
    if write.state in _LEFT_ALONE:
        return _LEFT_ALONE[write.state]
    if write.state in _QUEUED:
        return "still queued: the worker will send it"
    if mode == "resend" and write.state not in RESENDABLE:
        return f"a {write.state} write is not resent; reconcile it"
    return ""


def _added_by_rederive(event: BusinessEvent, known: set[int], user: Any, request_id: str) -> list[Write]:
    """Writes for the positions today's mapping adds to the event (a mapping that learned to write
    more). Each is a new write of the same event, queued like intake queues one."""
    planned = _planned_today(event)
    contract = TenantContract.load(event.tenant)
    now = timezone.now()
    added = [
        planned_write(p, i, event, event.tenant, contract, now)
        for i, p in enumerate(planned)
        if i not in known and contract.rule_for(p.resource_type) is not None
    ]
    if not added:
        return []
    with transaction.atomic():
        drafts: list[audit.AuditDraft] = []
        ledger_add(
            added,
            event=event,
            actor=user,
            reason="added by a re-derive of its event",
            drafts=drafts,
            request_id=request_id,
        )
        audit.record_many(drafts)
    return added


def _planned_today(event: BusinessEvent) -> list:
    result = canonicalize(event.raw_payload, now=event.received_at)
    if result.event is None:
        raise DomainError(
            422,
            "rederive-failed",
            "today's canonicalization no longer accepts the stored event: "
            + "; ".join(f"{i.rule} at {i.path}" for i in result.issues if i.is_error),
        )
    planned, issues = plan_writes(
        result.event, identifier_system=settings.WRITEBACK_IDENTIFIER_SYSTEM, author=event.author
    )
    if any(i.is_error for i in issues):
        raise DomainError(422, "rederive-failed", "; ".join(i.message for i in issues if i.is_error))
    return planned


def _resend(write: Write, user: Any, reason: str, request_id: str) -> Write:
    with transaction.atomic():
        write = Write.objects.select_for_update().select_related("tenant", "event").get(pk=write.pk)
        if write.state not in RESENDABLE:
            raise DomainError(409, "invalid-transition", f"a {write.state} write cannot be resent", "state")
        target = (
            WriteState.PENDING if write.state != WriteState.OUTCOME_UNKNOWN else WriteState.OUTCOME_UNKNOWN
        )
        drafts: list[audit.AuditDraft] = []
        fields = {
            "attempts": 0,
            "next_attempt_at": timezone.now(),
            "lease_owner": "",
            "lease_expires_at": None,
            # A fresh count of failed checks by read too: the alert comes again if they keep failing.
            "context": {k: v for k, v in write.context.items() if k != "failed_checks"},
        }
        if target == write.state:
            Write.objects.filter(pk=write.pk).update(**fields)
        else:
            transition(
                write,
                target,
                actor=user,
                reason="replay: resend as is",
                request_id=request_id,
                fields=fields,
                defer_audit=drafts,
            )
        drafts.append(_replay_entry(write, write, user, "resend", reason, False, request_id))
        audit.record_many(drafts)
    return write


def write_resend_missing(*, write: Write, user: Any, reason: str, request_id: str = "") -> Write:
    """A committed write that reconciliation found gone (or entered-in-error) at the EHR, sent again as
    a new write linked to it (`replay_of`, `supersedes`). The caller has checked who may ask.

    The new write carries its own identifier, not the original's: the original's may still mark the
    entered-in-error resource, and a conditional create or a check by read would take that for this
    write having landed."""
    write = Write.objects.select_related("tenant", "event").get(pk=write.pk)
    if write.state != WriteState.COMMITTED or write.operation != "create":
        raise DomainError(
            409,
            "invalid-transition",
            f"only a committed create is resent; this one is a {write.state} {write.operation}",
            "state",
        )
    return _new_write(write, user, "resend", write.payload, reason, False, request_id, own_identity=True)


def _rederived(write: Write) -> dict:
    planned = _planned_today(write.event)
    same = [p for p in planned if p.resource_type == write.resource_type]
    candidates = [
        p for i, p in enumerate(planned) if i == write.position and p.resource_type == write.resource_type
    ]
    chosen = (candidates or same or [None])[0]
    if chosen is None:
        raise DomainError(
            422, "rederive-failed", f"today's mapping produces no {write.resource_type} for this event"
        )
    return chosen.resource  # the ledger stamps it with the original's identifier


def _edited(write: Write, payload: dict | None) -> dict:
    if not isinstance(payload, dict) or payload.get("resourceType") != write.resource_type:
        raise DomainError(
            400, "invalid-value", f"an edited payload must be a {write.resource_type} resource", "payload"
        )
    from fhir.resources.R4B import get_fhir_model_class

    try:
        get_fhir_model_class(write.resource_type).model_validate(payload)
    except Exception as exc:  # pydantic's ValidationError and friends: report, never 500
        raise DomainError(
            422,
            "invalid-fhir",
            f"the edited {write.resource_type} is not valid FHIR R4: {exc}"[:2000],
            "payload",
        )
    fields = touched_fields(write.resource_type, payload)
    decision = TenantContract.load(write.tenant).decide(write.resource_type, write.operation, fields)
    if not decision:
        raise DomainError(422, decision.rule, decision.reason, "payload")
    return payload  # the ledger stamps a create with the original's identifier


def _new_write(
    original: Write,
    user,
    mode: str,
    payload: dict,
    reason: str,
    shadow: bool,
    request_id: str,
    *,
    own_identity: bool = False,
) -> Write:
    needs_approval = not shadow and (
        original.approval_required or (mode == "edit" and RISK_ORDER[original.risk] >= RISK_ORDER[Risk.HIGH])
    )
    with transaction.atomic():
        original = Write.objects.select_for_update().select_related("tenant", "event").get(pk=original.pk)
        new = derived_write(
            original,
            payload=payload,
            context={
                **({} if own_identity else {"identity": identity_uid(original)}),
                "replay_mode": mode,
                **({"shadow_only": True} if shadow else {}),
            },
            approval_required=needs_approval,
            target_resource_id=original.target_resource_id if original.operation != "create" else "",
            stream_key=original.stream_key if not shadow else f"shadow:{original.stream_key}",
            replay_of=original,
            supersedes=None if shadow else original,
        )
        if own_identity:
            new.context.pop("identity", None)
        drafts: list[audit.AuditDraft] = []
        if not shadow and WriteState.SUPERSEDED in ALLOWED_TRANSITIONS[original.state]:
            # The original stops here (and stops blocking its stream); the replay carries on for it.
            transition(
                original,
                WriteState.SUPERSEDED,
                actor=user,
                reason=f"replayed ({mode}) as write {new.uid}",
                request_id=request_id,
                data={"replay": str(new.uid)},
                defer_audit=drafts,
            )
        ledger_add(
            [new],
            event=original.event,
            actor=user,
            reason=f"replay ({mode}{', shadow' if shadow else ''}) of write {original.uid}",
            drafts=drafts,
            request_id=request_id,
        )
        write_editors_record(
            new, inherit_from=original, user=user if mode == "edit" else None, how=WriteEditor.How.EDIT
        )
        drafts.append(_replay_entry(original, new, user, mode, reason, shadow, request_id))
        audit.record_many(drafts)
    return new


def _replay_entry(original: Write, new: Write, user, mode: str, reason: str, shadow: bool, request_id: str):
    return audit.draft(
        AuditAction.WRITE_REPLAYED,
        actor=user,
        tenant=original.tenant.slug,
        object_type="write",
        object_id=str(original.uid),
        write_uid=str(original.uid),
        event_uid=str(original.event.uid),
        correlation_id=original.correlation_id,
        request_id=request_id,
        data={
            "mode": mode,
            "shadow": shadow,
            "replay_write": str(new.uid),
            "reason": reason,
            "payload_hash": new.payload_hash,
        },
    )
