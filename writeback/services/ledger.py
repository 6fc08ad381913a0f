"""The one way a write enters the ledger: intake, replays (into the same tenant or a test tenant),
conflict resolutions, compensations and their Provenance all build their rows here and store them with
`ledger_add`.

Why one function: every new write must carry the same things whatever made it (our identifier on what
it creates, the payload hash, its position and contract version, its lineage) and be queued the same
way (`validated`, then awaiting approval or pending through the state machine, each step audited).
`ledger_add` stores an event's writes with one INSERT, and leaves their audit entries to the caller's
single `audit.record_many`.
"""

from typing import Any

from django.conf import settings
from django.utils import timezone

from adapters.identifiers import identifiers_of, stamp_identifier
from writeback.fhir_mapping import PlannedWrite
from writeback.models import AuditAction, BusinessEvent, Tenant, Write
from writeback.services import audit
from writeback.services.requests import fresh_context, identity_uid
from writeback.services.statements import insert_rows
from writeback.services.transitions import transition_draft
from writeback.states import WriteState, check_transition

# Resources that carry no identifier of ours: a Patient and a Task are updated in place (never
# created by us), and Provenance has no identifier element in R4 (the adapter PUTs it under its uid).
UNSTAMPED = frozenset({"Patient", "Task", "Provenance"})


def payload_hash(resource: dict) -> str:
    return audit.sha256_text(resource)


def planned_write(
    p: PlannedWrite,
    position: int,
    event: BusinessEvent,
    tenant: Tenant,
    contract: Any,
    now: Any,
    amended: Write | None = None,
) -> Write:
    """The row for one write the mapping planned for `event`, decided under `tenant`'s `contract`."""
    rule = contract.rule_for(p.resource_type)
    context = dict(p.context or {})
    amends = amended if amended is not None and p.resource_type == "DocumentReference" else None
    if amends is not None:
        context["amends_write_uid"] = str(amends.uid)
    return Write(
        uid=p.uid,
        event=event,
        tenant=tenant,
        position=position,
        resource_type=p.resource_type,
        operation=p.operation,
        payload=p.resource,
        base_version=p.base_version or "",
        target_resource_id=p.target_id or "",
        risk=rule.risk,
        # Software proposes, people decide: whatever the contract says, a write of an event proposed by
        # automation or AI waits for a clinician. No tenant setting reaches this. (The Provenance only
        # attests what the approved writes did, and is sent after them.)
        approval_required=rule.approval_required
        or (event.source_kind != BusinessEvent.SourceKind.HUMAN and p.resource_type != "Provenance"),
        contract_version=contract.version_for(p.resource_type),
        max_attempts=settings.WRITEBACK_MAX_ATTEMPTS.get(rule.risk, 8),
        next_attempt_at=now,
        patient_ref=event.patient_ref,
        stream_key=Write.make_stream_key(tenant.pk, event.patient_ref, p.resource_type),
        correlation_id=event.correlation_id,
        context=context,
        supersedes=amends,
        created_at=now,
    )


def derived_write(
    original: Write,
    *,
    payload: dict,
    context: dict,
    approval_required: bool,
    base_version: str | None = None,
    target_resource_id: str | None = None,
    stream_key: str | None = None,
    replay_of: Write | None = None,
    supersedes: Write | None = None,
) -> Write:
    """A new write standing in for `original` (a replay, a conflict's resolution): same event, tenant,
    position, resource, risk, contract version and patient; its own payload and lineage. `context` is
    added to the original's (less what belongs to one send)."""
    return Write(
        event=original.event,
        tenant=original.tenant,
        position=original.position,
        resource_type=original.resource_type,
        operation=original.operation,
        payload=payload,
        base_version=original.base_version if base_version is None else base_version,
        target_resource_id=original.target_resource_id if target_resource_id is None else target_resource_id,
        risk=original.risk,
        approval_required=approval_required,
        contract_version=original.contract_version,
        max_attempts=original.max_attempts,
        patient_ref=original.patient_ref,
        stream_key=original.stream_key if stream_key is None else stream_key,
        correlation_id=original.correlation_id,
        context={**fresh_context(original.context), **context},
        replay_of=replay_of,
        supersedes=supersedes,
        compensates=original.compensates,
        compensation=original.compensation,
    )


def compensating_write(
    original: Write,
    req: Any,
    *,
    event: BusinessEvent,
    compensation: Any,
    position: int,
    approval_required: bool,
    contract_version: str,
) -> Write:
    """One write of a rollback or correction of `original` (`req`: the adapter's WriteRequest). A new
    resource (a superseding document) is a create with its own identity; anything else is a
    `compensate` sent as the adapter's wire operation."""
    is_new_resource = req.operation == "create"
    return Write(
        event=event,
        tenant=original.tenant,
        position=position,
        resource_type=req.resource_type,
        operation="create" if is_new_resource else "compensate",
        payload=req.resource,
        base_version=req.base_version,
        target_resource_id=req.target_id,
        risk=original.risk,
        approval_required=approval_required,
        contract_version=contract_version,
        max_attempts=original.max_attempts,
        patient_ref=original.patient_ref,
        stream_key=original.stream_key,
        correlation_id=original.correlation_id,
        context={
            **req.context,
            "wire_operation": req.operation,
            "kind": compensation.kind,
            **({"identity": req.write_uid} if is_new_resource and req.write_uid else {}),
        },
        compensates=original,
        compensation=compensation,
    )


def ledger_add(
    writes: list[Write],
    *,
    event: BusinessEvent,
    actor: Any,
    reason: str,
    drafts: list[audit.AuditDraft],
    request_id: str = "",
) -> list[Write]:
    """Stores new writes of `event` and queues them: one INSERT for all, a `write.created` entry each,
    then a `validated -> awaiting_approval` or `validated -> pending` entry each. Call it inside the
    caller's transaction; the audit entries go into `drafts` for its `audit.record_many`.

    Each write is created `validated` and queued at once, in the same transaction, so its row is
    inserted already in its queue: no one can see it between the two steps, and a guarded UPDATE of
    rows this transaction has just inserted could only ever match all of them. The audit trail says
    both steps, as it always has (the transition table is checked for each)."""
    if not writes:
        return writes
    now = timezone.now()
    system = settings.WRITEBACK_IDENTIFIER_SYSTEM
    created = WriteState.VALIDATED
    for w in writes:
        w.event, w.tenant = event, event.tenant
        identity = identity_uid(w)
        if (
            w.operation == "create"
            and w.resource_type not in UNSTAMPED
            and [str(i.get("value")) for i in identifiers_of(w.payload) if i.get("system") == system]
            != [identity]
        ):
            # What the EHR is searched by after an ambiguous send: the write's identity (a replay's is
            # its original's), whatever the payload carried. (Intake's mapping stamped it already.)
            w.payload = stamp_identifier(w.payload, system, identity)
        w.payload_hash = payload_hash(w.payload)
    queues = [
        (queue, [w for w in writes if w.approval_required == needs_approval])
        for needs_approval, queue in ((True, WriteState.AWAITING_APPROVAL), (False, WriteState.PENDING))
    ]
    for queue, queued in queues:
        if queued:
            check_transition(created, queue)
        for w in queued:
            w.state, w.state_changed_at = queue, now
    insert_rows(Write, writes)  # bulk_create, with the statement's text built once per row count
    tenant_slug, event_uid = event.tenant.slug, str(event.uid)
    for w in writes:
        drafts.append(
            audit.write_draft(
                AuditAction.WRITE_CREATED,
                w,
                actor=actor,
                tenant=tenant_slug,
                event_uid=event_uid,
                request_id=request_id,
                data={
                    "state": created,
                    "resource_type": w.resource_type,
                    "operation": w.operation,
                    "payload_hash": w.payload_hash,
                    "risk": w.risk,
                    **({"replay_of": str(w.replay_of.uid)} if w.replay_of_id else {}),
                    **({"compensates": str(w.compensates.uid)} if w.compensates_id else {}),
                },
            )
        )
    for queue, queued in queues:
        drafts += [
            transition_draft(
                w,
                created,
                queue,
                actor=actor,
                reason=reason,
                request_id=request_id,
                tenant_slug=tenant_slug,
                event_uid=event_uid,
            )
            for w in queued
        ]
    return writes
