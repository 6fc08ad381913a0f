"""Per-tenant policy: a tenant's overrides of contract rows, changed by integration engineers.

An override may only stay inside its contract row (a subset of its operations and writable fields):
the contract row stays the field-level source of truth for every tenant. Within that, a change that
narrows what is written or raises the bar (approval required, fewer operations or fields, a higher
risk) applies at once, because stopping is always safe. A change that widens (anything the other way,
even mixed with narrowing) waits for a second integration engineer, never the requester, who confirms
the review checklist. It is the capability registry's flow (`writeback.services.capabilities`) applied
to contract rows. Every step is audited with the effective row before and after.
"""

import copy
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.utils import timezone

from writeback.errors import DomainError
from writeback.models import (
    AuditAction,
    ContractOverride,
    ContractOverrideChange,
    ContractRule,
    Tenant,
)
from writeback.models.choices import RISK_ORDER, Risk
from writeback.services import audit, second_engineer
from writeback.services.permissions import require

# The contract columns a tenant may override.
KEYS = ("approval_required", "risk", "operations", "writable_fields")
# What the second engineer confirms before a widening applies.
CHECKLIST = {
    "security": "Security: who may now write what, and through which credential, was reviewed",
    "clinical_workflow": "Clinical workflow: the clinicians affected agreed to it",
    "rollback": "Rollback: how to undo the writes this allows is known and tested",
}


def effective(rule: ContractRule, override: ContractOverride | None) -> dict[str, Any]:
    """The row as this tenant sees it: each overridden column replaces the contract row's."""
    row = {
        "approval_required": rule.approval_required,
        "risk": rule.risk,
        "operations": list(rule.operations),
        "writable_fields": list(rule.writable_fields),
    }
    if override is not None:
        if override.approval_required is not None:
            row["approval_required"] = override.approval_required
        if override.risk:
            row["risk"] = override.risk
        if override.operations is not None:
            row["operations"] = list(override.operations)
        if override.writable_fields is not None:
            row["writable_fields"] = list(override.writable_fields)
    return row


def apply_override(rule: ContractRule, override: ContractOverride | None) -> ContractRule:
    """An unsaved copy of the rule carrying the tenant's values (never saved: the copy is read-only)."""
    if override is None:
        return rule
    tenant_rule = copy.copy(rule)
    for key, value in effective(rule, override).items():
        setattr(tenant_rule, key, value)
    return tenant_rule


def version_label(rule: ContractRule, override: ContractOverride | None) -> str:
    label = f"contract v{rule.version}"
    return f"{label} + tenant override v{override.version}" if override is not None else label


def widenings(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What in `after` allows more than `before` (empty: the change only narrows)."""
    found = []
    if before["approval_required"] and not after["approval_required"]:
        found.append("approval no longer required")
    if RISK_ORDER[after["risk"]] < RISK_ORDER[before["risk"]]:
        found.append(f"risk lowered from {before['risk']} to {after['risk']}")
    for key in ("operations", "writable_fields"):
        added = sorted(set(after[key]) - set(before[key]))
        if added:
            found.append(f"{key.replace('_', ' ')} added: {', '.join(added)}")
    return found


def _subset(value: Iterable[str] | None, allowed: list[str], name: str, resource_type: str) -> list | None:
    if value is None:
        return None
    items = [str(v).strip() for v in value if str(v).strip()]
    if not items:
        raise DomainError(400, "invalid-value", f"{name} may not be empty", name)
    outside = sorted(set(items) - set(allowed))
    if outside:
        raise DomainError(
            400,
            "outside-contract",
            f"{', '.join(outside)} not in the contract row for {resource_type} "
            f"({', '.join(allowed)}); an override only narrows within it",
            name,
        )
    # The contract row's order, so equal sets compare equal.
    return [v for v in allowed if v in set(items)]


def override_request(
    *,
    tenant: Tenant,
    user: Any,
    resource_type: str,
    note: str,
    approval_required: bool | None = None,
    risk: str | None = None,
    operations: Iterable[str] | None = None,
    writable_fields: Iterable[str] | None = None,
    request_id: str = "",
    channel: str = "api",
) -> ContractOverrideChange:
    """Requests a change of this tenant's row for `resource_type` (None: unchanged). Narrowing applies
    now and returns an applied change; widening returns a pending one."""
    require(
        user,
        "configure_tenant",
        tenant,
        object_type="contract_override",
        object_id=str(resource_type)[:64],
        request_id=request_id,
        channel=channel,
    )
    note = (note or "").strip()
    if not note:
        raise DomainError(400, "note-required", "say why the policy changes", "note")
    rule = ContractRule.objects.filter(resource_type=resource_type, enabled=True).first()
    if rule is None:
        raise DomainError(
            400, "invalid-value", f"the contract has no row for {resource_type!r}", "resource_type"
        )
    if risk is not None and risk not in Risk.values:
        raise DomainError(400, "invalid-value", f"risk must be one of {', '.join(Risk.values)}", "risk")
    ops = _subset(operations, list(rule.operations), "operations", resource_type)
    fields = _subset(writable_fields, list(rule.writable_fields), "writable_fields", resource_type)
    if approval_required is None and risk is None and ops is None and fields is None:
        raise DomainError(400, "invalid-value", "say what changes (approval, risk, operations, fields)")
    current = ContractOverride.objects.filter(tenant=tenant, resource_type=resource_type).first()
    before = effective(rule, current)
    after = dict(before)
    for key, value in (
        ("approval_required", approval_required),
        ("risk", risk),
        ("operations", ops),
        ("writable_fields", fields),
    ):
        if value is not None:
            after[key] = value
    if after == before:
        raise DomainError(409, "no-change", f"the policy for {resource_type} at {tenant.slug} is already so")
    widened = widenings(before, after)
    pending = ContractOverrideChange.objects.filter(
        tenant=tenant, resource_type=resource_type, status=ContractOverrideChange.Status.PENDING
    )
    if widened and pending.exists():
        # One review at a time per row: a second widening would be stale the moment the first applied.
        raise DomainError(
            409, "already-pending", f"a change to {resource_type} at {tenant.slug} already waits for approval"
        )
    with transaction.atomic():
        change = ContractOverrideChange.objects.create(
            tenant=tenant,
            resource_type=resource_type,
            before=before,
            after=after,
            base_version=current.version if current else 0,
            widens=bool(widened),
            note=note,
            requested_by=user,
        )
        request_entry = audit.draft(
            AuditAction.CONTRACT_OVERRIDE_REQUESTED,
            actor=user,
            tenant=tenant.slug,
            object_type="contract_override_change",
            object_id=str(change.uid),
            request_id=request_id,
            data={
                "resource_type": resource_type,
                "before": before,
                "after": after,
                "widens": widened,
                "reason": note,
                "channel": channel,
            },
        )
        if widened:
            audit.record_many([request_entry])
            return change
        now = timezone.now()
        change.status, change.decided_by, change.decided_at = ContractOverrideChange.Status.APPLIED, user, now
        change.save(update_fields=["status", "decided_by", "decided_at"])
        # Pending widenings were asked against the row this replaces: they lose their basis.
        ContractOverrideChange.objects.filter(
            tenant=tenant, resource_type=resource_type, status=ContractOverrideChange.Status.PENDING
        ).update(status=ContractOverrideChange.Status.REJECTED, decided_by=user, decided_at=now)
        audit.record_many([request_entry, _apply(change, user, request_id)])
    return change


def override_approve(
    *,
    change: ContractOverrideChange,
    user: Any,
    checklist: Iterable[str],
    note: str = "",
    request_id: str = "",
    channel: str = "api",
) -> ContractOverrideChange:
    """A second integration engineer applies a widening after confirming every checklist item."""

    def confirmed_all() -> None:
        missing = [key for key in CHECKLIST if key not in set(checklist)]
        if missing:
            raise DomainError(
                400,
                "checklist-incomplete",
                f"confirm the review checklist first: {', '.join(missing)} not confirmed",
                "checklist",
            )

    return second_engineer.approve(
        FLOW,
        change,
        user,
        note=note,
        request_id=request_id,
        channel=channel,
        precondition=confirmed_all,
        recorded={"checklist": {key: True for key in CHECKLIST}},
    )


def override_reject(
    *, change: ContractOverrideChange, user: Any, note: str, request_id: str = "", channel: str = "api"
) -> ContractOverrideChange:
    """A second engineer turns a widening down (the requester may also withdraw it)."""
    return second_engineer.reject(FLOW, change, user, note=note, request_id=request_id, channel=channel)


def _apply(change: ContractOverrideChange, user: Any, request_id: str) -> audit.AuditDraft:
    """Writes the change's `after` into the override row (only the columns that differ from the
    contract row), bumping its version. Call inside a transaction."""
    rule = ContractRule.objects.get(resource_type=change.resource_type)
    override = (
        ContractOverride.objects.select_for_update()
        .filter(tenant=change.tenant, resource_type=change.resource_type)
        .first()
    )
    if (override.version if override else 0) != change.base_version:
        raise DomainError(
            409,
            "stale-request",
            "the tenant's policy for this resource type changed since this was requested; request again",
        )
    before = effective(rule, override)
    if override is None:
        override = ContractOverride(tenant=change.tenant, resource_type=change.resource_type, version=0)
    after = change.after
    override.approval_required = (
        None if after["approval_required"] == rule.approval_required else after["approval_required"]
    )
    override.risk = "" if after["risk"] == rule.risk else after["risk"]
    override.operations = None if after["operations"] == list(rule.operations) else after["operations"]
    override.writable_fields = (
        None if after["writable_fields"] == list(rule.writable_fields) else after["writable_fields"]
    )
    override.version += 1
    override.updated_by = user
    # simple_history takes the user from the request; set it so commands record it too.
    override._history_user = user
    override.save()
    # Workers cache a tenant's adapter and contract until the tenant row changes.
    Tenant.objects.filter(pk=change.tenant_id).update(updated_at=timezone.now())
    return audit.draft(
        AuditAction.CONTRACT_OVERRIDE_CHANGED,
        actor=user,
        tenant=change.tenant.slug,
        object_type="contract_override",
        object_id=change.resource_type,
        request_id=request_id,
        data={
            "resource_type": change.resource_type,
            "before": before,
            "after": effective(rule, override),
            "version": override.version,
            "contract_version": version_label(rule, override),
            "change": str(change.uid),
            "requested_by": change.requested_by.get_username(),
        },
    )


FLOW = second_engineer.Flow(
    object_type="contract_override_change",
    approved=AuditAction.CONTRACT_OVERRIDE_APPROVED,
    rejected=AuditAction.CONTRACT_OVERRIDE_REJECTED,
    describe=lambda change: {
        "resource_type": change.resource_type,
        "before": change.before,
        "after": change.after,
        "checklist": change.checklist,
    },
    apply=_apply,
)


def tenant_policy(tenant: Tenant) -> list[dict[str, Any]]:
    """Each enabled contract row with this tenant's effective values and override version (2 queries)."""
    overrides = {o.resource_type: o for o in ContractOverride.objects.filter(tenant=tenant)}
    rows = []
    for rule in ContractRule.objects.filter(enabled=True).order_by("resource_type"):
        override = overrides.get(rule.resource_type)
        rows.append(
            {
                "resource_type": rule.resource_type,
                "row": effective(rule, override),
                "override": override,
                "version": version_label(rule, override),
            }
        )
    return rows


def policy_changes(tenant: Tenant, limit: int = 25) -> list[ContractOverrideChange]:
    return list(
        ContractOverrideChange.objects.filter(tenant=tenant)
        .select_related("requested_by", "decided_by")
        .order_by("-requested_at")[:limit]
    )
