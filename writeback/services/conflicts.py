"""Reconciling a version conflict field by field: keep ours, take theirs, or type a value.

The result is a new write with If-Match on the version the operator resolved against; never a blind
overwrite. If the target moved again meanwhile, that write conflicts again and comes back here.
"""

import copy
from typing import Any

from django.db import transaction
from django.utils import timezone

from writeback.errors import DomainError
from writeback.models import AuditAction, Conflict, Write, WriteEditor
from writeback.services import audit
from writeback.services.approvals import write_editors_record
from writeback.services.ledger import derived_write, ledger_add
from writeback.services.patient_binding import require_same_binding
from writeback.services.permissions import require
from writeback.services.transitions import transition
from writeback.states import WriteState

CHOICES = ("ours", "theirs", "value")


def conflict_preview(conflict: Conflict, choices: dict[str, Any]) -> dict:
    """The resource the resolution would send (pure: validates the choices, writes nothing)."""
    ours, theirs = conflict.ours or {}, conflict.theirs or {}
    resolved = {"resourceType": ours.get("resourceType"), "id": ours.get("id") or (theirs or {}).get("id")}
    for row in conflict.diff:
        path = row["path"]
        choice = choices.get(path, "ours" if row["changed"] in ("ours", "none") else None)
        if choice is None:
            raise DomainError(400, "choice-required", f"choose ours, theirs or a value for {path}", path)
        if isinstance(choice, dict) and "value" in choice:
            value = choice["value"]
        elif choice == "ours":
            value = ours.get(path)
        elif choice == "theirs":
            value = theirs.get(path)
        else:
            raise DomainError(400, "invalid-value", f"{path}: choose ours, theirs or {{'value': ...}}", path)
        if value is not None:
            resolved[path] = copy.deepcopy(value)
    if conflict.write.resource_type == "Task":
        resolved.setdefault("intent", theirs.get("intent") or ours.get("intent") or "order")
    return {k: v for k, v in resolved.items() if v is not None}


def conflict_resolve(
    *, conflict: Conflict, user: Any, choices: dict[str, Any], request_id: str = "", channel: str = "api"
) -> Write:
    write = conflict.write
    require(
        user,
        "resolve_conflict",
        write.tenant,
        object_type="conflict",
        object_id=str(conflict.uid),
        request_id=request_id,
        channel=channel,
    )
    resolved = conflict_preview(conflict, choices)
    require_same_binding(
        write, resolved, user=user, action="resolve_conflict", request_id=request_id, channel=channel
    )
    with transaction.atomic():
        conflict = (
            Conflict.objects.select_for_update()
            .select_related("write__tenant", "write__event")
            .get(pk=conflict.pk)
        )
        write = conflict.write
        if conflict.resolved_at is not None or write.state != WriteState.CONFLICT:
            raise DomainError(409, "already-resolved", "this conflict was already resolved")
        new = derived_write(
            write,
            payload=resolved,
            context={
                "resolved_conflict": str(conflict.uid),
                **(
                    {"from_status": (conflict.theirs or {}).get("status")}
                    if write.resource_type == "Task"
                    else {}
                ),
            },
            approval_required=write.approval_required,
            base_version=conflict.theirs_version,
            replay_of=write,
        )
        drafts: list[audit.AuditDraft] = []
        transition(
            write,
            WriteState.SUPERSEDED,
            actor=user,
            reason=f"conflict resolved as write {new.uid}",
            request_id=request_id,
            data={"resolution_write": str(new.uid)},
            defer_audit=drafts,
        )
        ledger_add(
            [new],
            event=write.event,
            actor=user,
            reason=f"resolution of conflict {conflict.uid} (If-Match version {conflict.theirs_version})",
            drafts=drafts,
            request_id=request_id,
        )
        write_editors_record(new, inherit_from=write, user=user, how=WriteEditor.How.CONFLICT_RESOLUTION)
        conflict.resolution = {k: v for k, v in choices.items()}
        conflict.resolved_by, conflict.resolved_at, conflict.resolution_write = user, timezone.now(), new
        conflict.save(update_fields=["resolution", "resolved_by", "resolved_at", "resolution_write"])
        drafts.append(
            audit.draft(
                AuditAction.CONFLICT_RESOLVED,
                actor=user,
                tenant=write.tenant.slug,
                object_type="conflict",
                object_id=str(conflict.uid),
                write_uid=str(write.uid),
                correlation_id=write.correlation_id,
                request_id=request_id,
                data={
                    "choices": {k: (v if isinstance(v, str) else "value") for k, v in choices.items()},
                    "resolution_write": str(new.uid),
                    "base_version": conflict.theirs_version,
                },
            )
        )
        audit.record_many(drafts)
    return new
