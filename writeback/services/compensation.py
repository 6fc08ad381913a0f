"""Compensate, never erase: technical rollbacks (admins, engineers) and clinical corrections (clinicians).

Each request becomes a compensating business event (its own type, label and audit action) and either
compensating writes, mapped by the tenant's adapter to what the vendor allows (entered-in-error, a
superseding document, the previous value restored), or, where the vendor has no API path, a manual task
with exact instructions for a named role. The original moves to `compensated` (rollback) or `superseded`
(correction) when the compensating write commits or the task is confirmed done.
"""

import uuid
from typing import Any

from django.db import transaction
from django.utils import timezone

from writeback.errors import DomainError
from writeback.models import (
    AuditAction,
    BusinessEvent,
    Compensation,
    ManualTask,
    Write,
    WriteEditor,
)
from writeback.services import audit
from writeback.services.approvals import write_editors_record
from writeback.services.contract import TenantContract
from writeback.services.ledger import compensating_write, ledger_add
from writeback.services.patient_binding import require_same_binding
from writeback.services.permissions import refuse, require, roles_of
from writeback.services.provenance import compensation_provenance
from writeback.services.requests import build_request
from writeback.services.targets import adapter_for
from writeback.services.transitions import transition
from writeback.states import ALLOWED_TRANSITIONS, WriteState

KIND_ACTION = {Compensation.Kind.ROLLBACK: "rollback", Compensation.Kind.CORRECTION: "correction"}
KIND_EVENT_TYPE = {
    Compensation.Kind.ROLLBACK: "compensation.rollback",
    Compensation.Kind.CORRECTION: "compensation.correction",
}
REQUESTED_ACTION = {
    Compensation.Kind.ROLLBACK: AuditAction.WRITE_ROLLBACK_REQUESTED,
    Compensation.Kind.CORRECTION: AuditAction.WRITE_CORRECTION_REQUESTED,
}


def compensation_plan(write: Write, kind: str, data: dict | None = None):
    """What undoing this write would do at its vendor (no network): shown before the operator confirms."""
    if write.payload_purged_at is not None:
        # Undoing needs the resource we wrote; retention removed it (the EHR's copy is the record now).
        raise DomainError(
            409, "payload-purged", "this write's payload was purged (retention): undo it in the EHR"
        )
    adapter = adapter_for(write.tenant)
    try:
        return adapter.compensation(
            build_request(write),
            kind=kind,
            resource_id=write.target_resource_id,
            version=write.target_version,
            data=data,
        )
    finally:
        adapter.close()


def write_compensate(
    *,
    write: Write,
    user: Any,
    kind: str,
    reason: str,
    data: dict | None = None,
    request_id: str = "",
    channel: str = "api",
) -> Compensation:
    if kind not in KIND_ACTION:
        raise DomainError(400, "invalid-value", "kind must be rollback or correction", "kind")
    require(
        user,
        KIND_ACTION[kind],
        write.tenant,
        object_type="write",
        object_id=str(write.uid),
        request_id=request_id,
        channel=channel,
    )
    return compensate_unchecked(
        write=write, user=user, kind=kind, reason=reason, data=data, request_id=request_id, channel=channel
    )


def compensate_unchecked(
    *,
    write: Write,
    user: Any,
    kind: str,
    reason: str,
    data: dict | None = None,
    request_id: str = "",
    channel: str = "api",
    cause: str = "",
) -> Compensation:
    """The compensation itself, for a caller that has already checked who may ask for it. `cause`
    names what asked when it was not a person's choice (e.g. a two-phase abort)."""
    if not reason or not reason.strip():
        raise DomainError(400, "reason-required", f"a {kind} needs a reason", "reason")
    if kind == Compensation.Kind.CORRECTION and not data:
        raise DomainError(
            400, "missing-field", "a correction needs the corrected clinical value in data", "data"
        )
    write = Write.objects.select_related("tenant", "event").get(pk=write.pk)  # decide on the current state
    if write.state != WriteState.COMMITTED:
        raise DomainError(
            409,
            "invalid-transition",
            f"only committed writes can be compensated; this one is {write.state}",
            "state",
        )
    if write.compensations.exclude(status=Compensation.Status.FAILED).exists():
        raise DomainError(
            409, "already-compensating", "this write already has a compensation under way or done"
        )
    plan = compensation_plan(write, kind, data)
    if not plan.requests and plan.manual is None:
        raise DomainError(
            422, "operation-not-supported", plan.description or "no way to compensate this write"
        )
    if kind == Compensation.Kind.CORRECTION:
        # The corrected values come from a person: none of them may move the entry to another patient.
        for req in plan.requests:
            require_same_binding(
                write,
                req.resource,
                user=user,
                action=KIND_ACTION[kind],
                new_resource=req.operation == "create" and req.resource_type == write.resource_type,
                request_id=request_id,
                channel=channel,
            )
    # The tenant's policy: an override that requires approval holds compensations too.
    contract = TenantContract.load(write.tenant)
    rule = contract.rule_for(write.resource_type)
    with transaction.atomic():
        write = Write.objects.select_for_update().select_related("tenant", "event").get(pk=write.pk)
        comp_uid = uuid.uuid4()
        event = BusinessEvent(
            tenant=write.tenant,
            type=KIND_EVENT_TYPE[kind],
            kind=kind,
            idempotency_key=f"{kind}:{comp_uid}",
            source_system="writeback-console" if channel == "console" else "writeback-api",
            content_hash=audit.sha256_text(
                {"write": str(write.uid), "kind": kind, "reason": reason, "data": data}
            ),
            raw_payload={"original_write": str(write.uid), "kind": kind, "reason": reason, "data": data},
            canonical_payload={
                "original_write": str(write.uid),
                "kind": kind,
                "data": data,
                "plan": plan.description,
            },
            patient_ref=write.patient_ref,
            encounter_ref=write.event.encounter_ref,
            initiator=user,
            initiator_name=user.get_username(),
            submitter=user,
            acting_system=channel,
            correlation_id=write.correlation_id,
            occurred_at=timezone.now(),
            compensates=write.event,
        )
        event.save()
        comp = Compensation.objects.create(
            uid=comp_uid,
            kind=kind,
            reason=reason.strip(),
            original_write=write,
            event=event,
            requested_by=user,
            status=Compensation.Status.MANUAL
            if plan.manual and not plan.requests
            else Compensation.Status.QUEUED,
        )
        drafts = [
            audit.draft(
                REQUESTED_ACTION[kind],
                actor=user,
                tenant=write.tenant.slug,
                object_type="compensation",
                object_id=str(comp.uid),
                write_uid=str(write.uid),
                event_uid=str(event.uid),
                correlation_id=write.correlation_id,
                request_id=request_id,
                data={
                    "kind": kind,
                    "reason": reason.strip(),
                    "plan": plan.description,
                    "requests": len(plan.requests),
                    "manual": plan.manual is not None,
                    **({"cause": cause} if cause else {}),
                },
            )
        ]
        new_writes = [
            compensating_write(
                write,
                req,
                event=event,
                compensation=comp,
                position=i,
                approval_required=bool(rule and rule.approval_required),
                contract_version=contract.version_for(write.resource_type),
            )
            for i, req in enumerate(plan.requests)
        ]
        attestation = (
            compensation_provenance(event=event, original=write, user=user, position=len(new_writes))
            if new_writes
            else None
        )
        ledger_add(
            new_writes + ([attestation] if attestation else []),
            event=event,
            actor=user,
            reason=f"{kind} of write {write.uid}",
            drafts=drafts,
            request_id=request_id,
        )
        if kind == Compensation.Kind.CORRECTION:
            for new in new_writes:
                write_editors_record(new, user=user, how=WriteEditor.How.CORRECTION)
        if plan.manual is not None:
            task = ManualTask.objects.create(
                tenant=write.tenant,
                write=write,
                compensation=comp,
                role=plan.manual.role,
                title=plan.manual.title,
                instructions=plan.manual.instructions,
            )
            drafts.append(
                audit.draft(
                    AuditAction.MANUAL_TASK_CREATED,
                    actor=user,
                    tenant=write.tenant.slug,
                    object_type="manual_task",
                    object_id=str(task.uid),
                    write_uid=str(write.uid),
                    correlation_id=write.correlation_id,
                    request_id=request_id,
                    data={"role": task.role, "title": task.title},
                )
            )
        audit.record_many(drafts)
    return comp


def manual_task_confirm(
    *, task: ManualTask, user: Any, note: str, request_id: str = "", channel: str = "api"
):
    """Someone confirms they made the correction in the EHR; the original write is then closed."""
    require(
        user,
        "confirm_manual_task",
        task.tenant,
        object_type="manual_task",
        object_id=str(task.uid),
        request_id=request_id,
        channel=channel,
    )
    if task.role and not user.is_superuser and task.role not in roles_of(user):
        # The confirmation attests that the change was made in the EHR by someone who may make it there.
        refuse(
            user,
            "confirm_manual_task",
            f"this task is for a {task.role}: only a {task.role} can say it was done in the EHR",
            rule="role-required",
            tenant=task.tenant,
            object_type="manual_task",
            object_id=str(task.uid),
            request_id=request_id,
            channel=channel,
        )
    if not note or not note.strip():
        raise DomainError(400, "note-required", "say what was done in the EHR", "note")
    with transaction.atomic():
        task = (
            ManualTask.objects.select_for_update(of=("self",))
            .select_related("tenant", "compensation", "write")
            .get(pk=task.pk)
        )
        if task.status != ManualTask.Status.OPEN:
            raise DomainError(409, "invalid-transition", f"the task is already {task.status}")
        task.status = ManualTask.Status.DONE
        task.confirmed_by, task.confirmed_at, task.confirmation_note = user, timezone.now(), note.strip()
        task.save(update_fields=["status", "confirmed_by", "confirmed_at", "confirmation_note"])
        drafts = [
            audit.draft(
                AuditAction.MANUAL_TASK_CONFIRMED,
                actor=user,
                tenant=task.tenant.slug,
                object_type="manual_task",
                object_id=str(task.uid),
                write_uid=str(task.write.uid),
                correlation_id=task.write.correlation_id,
                request_id=request_id,
                data={"confirmation": note.strip()},
            )
        ]
        comp = task.compensation
        if comp is not None:
            Compensation.objects.filter(pk=comp.pk).update(status=Compensation.Status.DONE)
            original = Write.objects.select_related("tenant", "event").get(pk=task.write_id)
            target = (
                WriteState.SUPERSEDED if comp.kind == Compensation.Kind.CORRECTION else WriteState.COMPENSATED
            )
            if target in ALLOWED_TRANSITIONS[original.state]:
                transition(
                    original,
                    target,
                    actor=user,
                    reason=f"{comp.kind} done by hand in the EHR",
                    request_id=request_id,
                    data={"manual_task": str(task.uid)},
                    defer_audit=drafts,
                )
        audit.record_many(drafts)
    return task
