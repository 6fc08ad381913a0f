"""The tenant capability registry, changed by integration engineers.

Only manual rows are edited here (discovered rows come from the tenant's CapabilityStatement, see
`writeback.services.discovery`). A change that narrows what may be written applies at once: stopping
is always safe. A change that widens it waits for a second integration engineer, never the requester,
and only then takes effect. Every step is audited; `Capability.history` keeps who changed what when.
"""

from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from adapters.registry import adapter_class
from writeback.errors import DomainError
from writeback.models import AuditAction, Capability, CapabilityChange, ContractRule, Tenant
from writeback.services import audit, second_engineer
from writeback.services.permissions import require

# Columns of the capability matrix, in the order people read them.
OPERATIONS = ("create", "update", "patch", "read")


@dataclass
class Cell:
    operation: str
    manual: Capability | None = None
    discovered: Capability | None = None
    pending: CapabilityChange | None = None
    in_contract: bool = True
    vendor_offers: bool = True
    vendor_note: str = ""
    # Discovery narrows only what the vendor writes through FHIR (the others use a proprietary API).
    discovery_applies: bool = True

    @property
    def effective(self) -> bool:
        """Allowed now: granted by hand, offered by the vendor, and not denied by discovery."""
        if self.manual is None or not self.manual.allowed or not self.in_contract or not self.vendor_offers:
            return False
        return not self.discovery_applies or self.discovered is None or self.discovered.allowed


@dataclass
class MatrixRow:
    resource_type: str
    risk: str
    pattern: str
    cells: list[Cell] = field(default_factory=list)


def capability_matrix(tenant: Tenant) -> list[MatrixRow]:
    """Resource types x operations with the manual and discovered rows and any pending change (3 queries)."""
    caps = adapter_class(tenant.vendor).capabilities()
    manual: dict[tuple[str, str], Capability] = {}
    discovered: dict[tuple[str, str], Capability] = {}
    for cap in Capability.objects.filter(tenant=tenant).select_related("set_by"):
        target = manual if cap.source == Capability.Source.MANUAL else discovered
        target[(cap.resource_type, cap.operation)] = cap
    pending = {
        (c.resource_type, c.operation): c
        for c in CapabilityChange.objects.filter(tenant=tenant, status=CapabilityChange.Status.PENDING)
        .select_related("requested_by")
        .order_by("requested_at")
    }
    rows = []
    for rule in ContractRule.objects.filter(enabled=True).order_by("resource_type"):
        row = MatrixRow(rule.resource_type, rule.risk, rule.get_pattern_display())
        for op in OPERATIONS:
            key = (rule.resource_type, op)
            offers = caps.read_back if op == "read" else key in caps.writes
            row.cells.append(
                Cell(
                    operation=op,
                    manual=manual.get(key),
                    discovered=discovered.get(key),
                    pending=pending.get(key),
                    in_contract=op == "read" or op in rule.operations,
                    vendor_offers=offers,
                    discovery_applies=op != "read" and rule.resource_type in caps.fhir_written_types,
                    vendor_note=""
                    if offers
                    else caps.refusals.get(key, f"{tenant.vendor} offers no API for it"),
                )
            )
        rows.append(row)
    return rows


def capability_change_request(
    *,
    tenant: Tenant,
    user: Any,
    resource_type: str,
    operation: str,
    allowed: bool,
    note: str,
    request_id: str = "",
    channel: str = "api",
) -> CapabilityChange:
    require(
        user,
        "configure_tenant",
        tenant,
        object_type="capability",
        object_id=f"{resource_type}.{operation}",
        request_id=request_id,
        channel=channel,
    )
    note = (note or "").strip()
    if not note:
        raise DomainError(400, "note-required", "say why this capability changes", "note")
    rule = ContractRule.objects.filter(resource_type=resource_type, enabled=True).first()
    if rule is None:
        raise DomainError(
            400, "invalid-value", f"the contract has no row for {resource_type!r}", "resource_type"
        )
    if operation not in OPERATIONS:
        raise DomainError(
            400, "invalid-value", f"operation must be one of {', '.join(OPERATIONS)}", "operation"
        )
    current = Capability.objects.filter(
        tenant=tenant, resource_type=resource_type, operation=operation, source=Capability.Source.MANUAL
    ).first()
    now_allowed = bool(current and current.allowed)
    if now_allowed == allowed:
        state = "allowed" if allowed else "refused"
        raise DomainError(
            409, "no-change", f"{operation} {resource_type} is already {state} for {tenant.slug}"
        )
    widens = allowed and not now_allowed
    if widens:
        _check_widening(tenant, rule, operation)
    with transaction.atomic():
        if widens:
            if CapabilityChange.objects.filter(
                tenant=tenant,
                resource_type=resource_type,
                operation=operation,
                status=CapabilityChange.Status.PENDING,
            ).exists():
                raise DomainError(
                    409,
                    "already-pending",
                    f"a change to {operation} {resource_type} already waits for approval",
                )
            change = CapabilityChange.objects.create(
                tenant=tenant,
                resource_type=resource_type,
                operation=operation,
                allowed=True,
                widens=True,
                note=note,
                requested_by=user,
            )
            audit.record(
                AuditAction.CAPABILITY_CHANGE_REQUESTED,
                actor=user,
                tenant=tenant.slug,
                object_type="capability_change",
                object_id=str(change.uid),
                request_id=request_id,
                data={
                    "resource_type": resource_type,
                    "operation": operation,
                    "allowed": True,
                    "widens": True,
                    "reason": note,
                },
            )
            return change
        # Narrowing: safe at once. Pending widenings of the same cell lose their point and are closed.
        now = timezone.now()
        change = CapabilityChange.objects.create(
            tenant=tenant,
            resource_type=resource_type,
            operation=operation,
            allowed=False,
            widens=False,
            note=note,
            requested_by=user,
            status=CapabilityChange.Status.APPLIED,
            decided_by=user,
            decided_at=now,
        )
        superseded = CapabilityChange.objects.filter(
            tenant=tenant,
            resource_type=resource_type,
            operation=operation,
            status=CapabilityChange.Status.PENDING,
        ).update(status=CapabilityChange.Status.REJECTED, decided_by=user, decided_at=now)
        drafts = [
            audit.draft(
                AuditAction.CAPABILITY_CHANGE_REQUESTED,
                actor=user,
                tenant=tenant.slug,
                object_type="capability_change",
                object_id=str(change.uid),
                request_id=request_id,
                data={
                    "resource_type": resource_type,
                    "operation": operation,
                    "allowed": False,
                    "widens": False,
                    "reason": note,
                    "pending_widenings_closed": superseded,
                },
            )
        ]
        drafts.append(_apply(change, user, request_id))
        audit.record_many(drafts)
    return change


def capability_change_approve(
    *, change: CapabilityChange, user: Any, note: str = "", request_id: str = "", channel: str = "api"
) -> CapabilityChange:
    return second_engineer.approve(FLOW, change, user, note=note, request_id=request_id, channel=channel)


def capability_change_reject(
    *, change: CapabilityChange, user: Any, note: str, request_id: str = "", channel: str = "api"
) -> CapabilityChange:
    """A second engineer turns a widening down (the requester may also withdraw it)."""
    return second_engineer.reject(FLOW, change, user, note=note, request_id=request_id, channel=channel)


def capabilities_refresh(*, tenant: Tenant, user: Any, request_id: str = "", channel: str = "api") -> Any:
    """An engineer runs discovery: the tenant's CapabilityStatement, recorded as discovered rows
    (`writeback.services.discovery`, which audits the outcome and never raises for a failing target)."""
    require(
        user,
        "configure_tenant",
        tenant,
        object_type="tenant",
        object_id=tenant.slug,
        request_id=request_id,
        channel=channel,
    )
    # Imported when used: discovery reaches the network through the adapters.
    from writeback.services.discovery import capabilities_discover

    return capabilities_discover(tenant=tenant, actor=user)


def _check_widening(tenant: Tenant, rule: ContractRule, operation: str) -> None:
    """A widening may not go past the contract or what the vendor's API can do at all."""
    caps = adapter_class(tenant.vendor).capabilities()
    if operation == "read":
        if not caps.read_back:
            raise DomainError(422, "operation-not-supported", f"{tenant.vendor} offers no read-back")
        return
    if operation not in rule.operations:
        raise DomainError(
            422,
            "operation-not-supported",
            f"the contract allows {', '.join(rule.operations)} on {rule.resource_type}, not {operation}",
        )
    if (rule.resource_type, operation) not in caps.writes:
        reason = caps.refusals.get(
            (rule.resource_type, operation),
            f"{tenant.vendor} offers no API to {operation} {rule.resource_type}",
        )
        raise DomainError(422, "operation-not-supported", reason)


def _apply(change: CapabilityChange, user: Any, request_id: str) -> audit.AuditDraft:
    cap = Capability.objects.filter(
        tenant=change.tenant,
        resource_type=change.resource_type,
        operation=change.operation,
        source=Capability.Source.MANUAL,
    ).first()
    old = None if cap is None else cap.allowed
    if cap is None:
        cap = Capability(
            tenant=change.tenant,
            resource_type=change.resource_type,
            operation=change.operation,
            source=Capability.Source.MANUAL,
        )
    cap.allowed, cap.set_by, cap.notes = change.allowed, user, change.note
    # simple_history takes the user from the request; set it so workers and commands record it too.
    cap._history_user = user
    cap.save()
    # Workers cache a tenant's adapter until the tenant row changes: make them rebuild it (no history row).
    Tenant.objects.filter(pk=change.tenant_id).update(updated_at=timezone.now())
    return audit.draft(
        AuditAction.CAPABILITY_CHANGED,
        actor=user,
        tenant=change.tenant.slug,
        object_type="capability",
        object_id=f"{change.resource_type}.{change.operation}",
        request_id=request_id,
        data={
            "resource_type": change.resource_type,
            "operation": change.operation,
            "old": old,
            "new": change.allowed,
            "change": str(change.uid),
            "requested_by": change.requested_by.get_username(),
        },
    )


FLOW = second_engineer.Flow(
    object_type="capability_change",
    approved=AuditAction.CAPABILITY_CHANGE_APPROVED,
    rejected=AuditAction.CAPABILITY_CHANGE_REJECTED,
    describe=lambda change: {
        "resource_type": change.resource_type,
        "operation": change.operation,
        "allowed": change.allowed,
    },
    apply=_apply,
)
