"""Kill switches at each level, and the tenant mode (`paused` is the tenant-wide switch).

A switch stops sending; it never drops work: writes stay queued and flow again on release.
`hold` stops at once (even writes already claimed are given back before sending); `drain` lets claimed
writes finish and claims no new ones. The worker reads active switches once per claim cycle and again
just before each send (`writeback.services.holds`).
"""

from typing import Any

from django.db import transaction
from django.utils import timezone

from writeback.errors import DomainError
from writeback.models import AuditAction, ContractRule, KillSwitch, Tenant, TenantMode, Write
from writeback.services import audit
from writeback.services.permissions import refuse, require
from writeback.services.tenants import tenant_set_mode, tenants_for_user

Scope = KillSwitch.Scope


def kill_switch_engage(
    *,
    user: Any,
    scope: str,
    behaviour: str,
    reason: str,
    tenant: Tenant | None = None,
    resource_type: str = "",
    patient_ref: str = "",
    request_id: str = "",
    channel: str = "api",
) -> KillSwitch:
    if scope not in Scope.values:
        raise DomainError(400, "invalid-value", f"scope must be one of {', '.join(Scope.values)}", "scope")
    if scope != Scope.GLOBAL and tenant is None:
        raise DomainError(400, "missing-field", "choose the tenant this switch applies to", "tenant")
    _require(user, scope, tenant, request_id, channel)
    if behaviour not in KillSwitch.Behaviour.values:
        raise DomainError(400, "invalid-value", "behaviour must be hold or drain", "behaviour")
    reason = (reason or "").strip()
    if not reason:
        raise DomainError(400, "reason-required", "say why sending must stop", "reason")
    resource_type = (resource_type or "").strip() if scope in (Scope.RESOURCE_TYPE, Scope.STREAM) else ""
    patient_ref = (patient_ref or "").strip() if scope == Scope.STREAM else ""
    if scope in (Scope.RESOURCE_TYPE, Scope.STREAM):
        if not resource_type:
            raise DomainError(400, "missing-field", "choose the resource type", "resource_type")
        if not ContractRule.objects.filter(resource_type=resource_type).exists():
            raise DomainError(
                400, "invalid-value", f"unknown resource type {resource_type!r}", "resource_type"
            )
    if scope == Scope.STREAM and not patient_ref:
        raise DomainError(400, "missing-field", "give the patient id of the stream", "patient_ref")
    with transaction.atomic():
        existing = KillSwitch.objects.filter(
            released_at__isnull=True,
            scope=scope,
            tenant=tenant if scope != Scope.GLOBAL else None,
            resource_type=resource_type,
            patient_ref=patient_ref,
        ).first()
        if existing is not None:
            raise DomainError(
                409,
                "already-engaged",
                f"a {existing.behaviour} switch is already engaged here (since "
                f"{existing.created_at:%Y-%m-%d %H:%M} UTC); release it first to change its behaviour",
            )
        switch = KillSwitch.objects.create(
            scope=scope,
            tenant=tenant if scope != Scope.GLOBAL else None,
            resource_type=resource_type,
            patient_ref=patient_ref,
            behaviour=behaviour,
            reason=reason,
            created_by=user,
        )
        audit.record(
            AuditAction.KILL_SWITCH_ENGAGED,
            actor=user,
            tenant=tenant.slug if tenant and scope != Scope.GLOBAL else "",
            object_type="kill_switch",
            object_id=str(switch.uid),
            request_id=request_id,
            data={
                "scope": scope,
                "behaviour": behaviour,
                "reason": reason,
                "resource_type": resource_type,
                "patient_ref": patient_ref,
                "queued_writes": held_count(switch),
            },
        )
    return switch


def kill_switch_release(
    *, switch: KillSwitch, user: Any, note: str = "", request_id: str = "", channel: str = "api"
) -> KillSwitch:
    _require(user, switch.scope, switch.tenant, request_id, channel, object_id=str(switch.uid))
    with transaction.atomic():
        now = timezone.now()
        changed = KillSwitch.objects.filter(pk=switch.pk, released_at__isnull=True).update(
            released_at=now, released_by=user
        )
        if changed != 1:
            raise DomainError(409, "already-released", "this switch was already released")
        switch.refresh_from_db()
        audit.record(
            AuditAction.KILL_SWITCH_RELEASED,
            actor=user,
            tenant=switch.tenant.slug if switch.tenant else "",
            object_type="kill_switch",
            object_id=str(switch.uid),
            request_id=request_id,
            data={
                "scope": switch.scope,
                "behaviour": switch.behaviour,
                "resource_type": switch.resource_type,
                "patient_ref": switch.patient_ref,
                "note": (note or "").strip(),
                "engaged_for_seconds": round((now - switch.created_at).total_seconds()),
            },
        )
    return switch


def tenant_mode_change(
    *, tenant: Tenant, user: Any, mode: str, reason: str, request_id: str = "", channel: str = "api"
) -> Tenant:
    """An operator switches a tenant between live, shadow, dry run and paused (the tenant kill switch)."""
    require(
        user,
        "configure_tenant",
        tenant,
        object_type="tenant",
        object_id=tenant.slug,
        request_id=request_id,
        channel=channel,
    )
    if mode not in TenantMode.values:
        raise DomainError(400, "invalid-value", f"mode must be one of {', '.join(TenantMode.values)}", "mode")
    reason = (reason or "").strip()
    if not reason:
        raise DomainError(400, "reason-required", "say why the mode changes", "reason")
    if tenant.mode == mode:
        raise DomainError(409, "no-change", f"{tenant.slug} is already {tenant.get_mode_display().lower()}")
    return tenant_set_mode(tenant=tenant, mode=mode, actor=user, reason=reason)


def active_switches(tenant_ids: list[int] | None = None) -> list[KillSwitch]:
    """Engaged switches: every global one, and those of the given tenants (all when None)."""
    qs = KillSwitch.objects.filter(released_at__isnull=True).select_related("tenant", "created_by")
    if tenant_ids is not None:
        qs = qs.filter(tenant__isnull=True) | qs.filter(tenant_id__in=tenant_ids)
    return list(qs.order_by("-created_at"))


def held_count(switch: KillSwitch) -> int:
    """How many writes wait to be sent under this switch right now."""
    from writeback.states import CLAIMABLE

    qs = Write.objects.filter(state__in=CLAIMABLE)
    if switch.scope == Scope.TENANT:
        qs = qs.filter(tenant=switch.tenant)
    elif switch.scope == Scope.RESOURCE_TYPE:
        qs = qs.filter(tenant=switch.tenant, resource_type=switch.resource_type)
    elif switch.scope == Scope.STREAM:
        qs = qs.filter(
            stream_key=Write.make_stream_key(switch.tenant_id, switch.patient_ref, switch.resource_type)
        )
    return qs.count()


def _require(
    user: Any, scope: str, tenant: Tenant | None, request_id: str, channel: str, object_id: str = ""
) -> None:
    require(
        user,
        "kill_switch",
        tenant if scope != Scope.GLOBAL else None,
        object_type="kill_switch",
        object_id=object_id,
        request_id=request_id,
        channel=channel,
    )
    # Stopping every tenant is only for someone who answers for every tenant.
    if (
        scope == Scope.GLOBAL
        and not user.is_superuser
        and tenants_for_user(user).count() < Tenant.objects.count()
    ):
        refuse(
            user,
            "kill_switch",
            "a switch over all tenants needs access to every tenant",
            rule="tenant-forbidden",
            object_type="kill_switch",
            object_id=object_id,
            request_id=request_id,
            channel=channel,
        )
