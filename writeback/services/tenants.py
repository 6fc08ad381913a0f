"""Tenants: creating them, granting people access, changing their mode and their consent policy."""

from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from guardian.shortcuts import assign_perm, get_objects_for_user, remove_perm
from simple_history.utils import bulk_create_with_history

from writeback.errors import DomainError
from writeback.models import AuditAction, Capability, ContractRule, Tenant, TenantMode
from writeback.services import audit
from writeback.services.permissions import require

ACCESS_PERM = "writeback.access_tenant"


@transaction.atomic
def tenant_create(
    *,
    slug: str,
    vendor: str,
    base_url: str,
    actor: Any = None,
    mode: str = TenantMode.LIVE,
    auth_mode: str = Tenant.AuthMode.NONE,
    name: str = "",
    settings: dict | None = None,
    **fields: Any,
) -> Tenant:
    """Creates a tenant and its manual capability registry: what the vendor's adapter can do,
    narrowed to the contract. Engineers narrow it further by hand; widening needs a second person."""
    tenant = Tenant(
        slug=slug,
        vendor=vendor,
        base_url=base_url.rstrip("/"),
        mode=mode,
        auth_mode=auth_mode,
        name=name or slug,
        settings=settings or {},
        **fields,
    )
    tenant.full_clean()
    tenant.save()
    _seed_capabilities(tenant, actor)
    audit.record(
        AuditAction.TENANT_CREATED,
        actor=actor,
        tenant=tenant.slug,
        object_type="tenant",
        object_id=tenant.slug,
        data={"vendor": vendor, "base_url": tenant.base_url, "mode": mode, "auth_mode": auth_mode},
    )
    return tenant


def _seed_capabilities(tenant: Tenant, actor: Any) -> None:
    from adapters.registry import adapter_class

    caps = adapter_class(tenant.vendor).capabilities()
    user = actor if actor is not None and not isinstance(actor, str) else None
    rows = []
    for rule in ContractRule.objects.filter(enabled=True):
        for op in rule.operations:
            if op == "compensate":
                continue
            allowed = (rule.resource_type, op) in caps.writes
            rows.append(
                Capability(
                    tenant=tenant,
                    resource_type=rule.resource_type,
                    operation=op,
                    source=Capability.Source.MANUAL,
                    allowed=allowed,
                    set_by=user,
                    notes=""
                    if allowed
                    else caps.refusals.get((rule.resource_type, op), "not offered by vendor"),
                )
            )
        rows.append(
            Capability(
                tenant=tenant,
                resource_type=rule.resource_type,
                operation="read",
                source=Capability.Source.MANUAL,
                allowed=caps.read_back,
                set_by=user,
            )
        )
    # With history rows, so the registry's "who changed it when" starts at creation.
    bulk_create_with_history(rows, Capability, default_user=user, default_change_reason="tenant created")


def tenant_set_mode(*, tenant: Tenant, mode: str, actor: Any, reason: str = "") -> Tenant:
    if mode not in TenantMode.values:
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(TenantMode.values)}")
    require_configure(actor, tenant)
    old = tenant.mode
    if old == mode:
        return tenant
    return save_tenant_change(
        tenant,
        AuditAction.TENANT_MODE_CHANGED,
        {"mode": mode},
        actor=actor,
        reason=reason,
        data={"old": old, "new": mode},
    )


def tenant_set_base_url(*, tenant: Tenant, base_url: str, actor: Any, reason: str = "") -> Tenant:
    """Points the tenant at another FHIR base. Credentials follow the base (adapters send them only
    under it), so every change is audited with the URL before and after."""
    require_configure(actor, tenant)
    base_url = base_url.rstrip("/")
    old = tenant.base_url
    if old == base_url:
        return tenant
    return save_tenant_change(
        tenant,
        AuditAction.TENANT_BASE_URL_CHANGED,
        {"base_url": base_url},
        actor=actor,
        reason=reason,
        data={"old": old, "new": base_url},
    )


def tenant_set_consent_policy(
    tenant: Tenant,
    *,
    required: bool,
    waived_resource_types: Iterable[str] = (),
    actor: Any,
    reason: str = "",
) -> Tenant:
    """Sets whether writes of this tenant need a patient's consent, and the resource types for which
    that requirement is waived. Types must be rows of the contract; loosening the policy needs a
    reason; every change is audited with the policy before and after."""
    require_configure(actor, tenant)
    waived = sorted(set(waived_resource_types))
    known = ContractRule.resource_types()
    unknown = [t for t in waived if t not in known]
    if unknown:
        raise DomainError(
            422,
            "unknown-resource-type",
            f"no contract row for {', '.join(unknown)}; waivable types: {', '.join(known)}",
            "consent_waived_resource_types",
        )
    if (waived or not required) and not reason.strip():
        raise DomainError(422, "reason-required", "waiving consent needs a reason", "reason")
    before = {
        "required": tenant.consent_required,
        "waived_resource_types": sorted(tenant.consent_waived_resource_types or []),
    }
    after = {"required": required, "waived_resource_types": waived}
    if before == after:
        return tenant
    return save_tenant_change(
        tenant,
        AuditAction.TENANT_CONSENT_POLICY_CHANGED,
        {"consent_required": required, "consent_waived_resource_types": waived},
        actor=actor,
        reason=reason,
        data={"before": before, "after": after},
    )


def save_tenant_change(
    tenant: Tenant,
    action: AuditAction,
    fields: dict[str, Any],
    *,
    actor: Any,
    data: dict[str, Any],
    reason: str = "",
    request_id: str = "",
) -> Tenant:
    """Saves a configuration change of the tenant and its audit entry in one transaction. The history
    row carries the person and the reason; `updated_at` moves, so workers rebuild the tenant's cached
    adapter and contract."""
    with transaction.atomic():
        for name, value in fields.items():
            setattr(tenant, name, value)
        tenant._change_reason = reason
        if getattr(actor, "is_authenticated", False):
            tenant._history_user = actor
        tenant.save(update_fields=[*fields, "updated_at"])
        audit.record(
            action,
            actor=actor,
            tenant=tenant.slug,
            object_type="tenant",
            object_id=tenant.slug,
            request_id=request_id,
            data={**data, "reason": reason},
        )
    return tenant


def require_configure(actor: Any, tenant: Tenant) -> None:
    """People need the engineer role on the tenant; commands and the demo act as a system name.
    Checked outside any transaction so a refusal's audit entry is kept."""
    if getattr(actor, "is_authenticated", False):
        require(actor, "configure_tenant", tenant, object_type="tenant", object_id=tenant.slug)


@transaction.atomic
def tenant_grant(*, tenant: Tenant, user: AbstractBaseUser, actor: Any = None) -> None:
    assign_perm("access_tenant", user, tenant)
    audit.record(
        AuditAction.TENANT_ACCESS_GRANTED,
        actor=actor,
        tenant=tenant.slug,
        object_type="user",
        object_id=user.get_username(),
        data={"user": user.get_username()},
    )


@transaction.atomic
def tenant_revoke(*, tenant: Tenant, user: AbstractBaseUser, actor: Any = None) -> None:
    remove_perm("access_tenant", user, tenant)
    audit.record(
        AuditAction.TENANT_ACCESS_REVOKED,
        actor=actor,
        tenant=tenant.slug,
        object_type="user",
        object_id=user.get_username(),
        data={"user": user.get_username()},
    )


def tenants_for_user(user: AbstractBaseUser):
    """Tenants a person may act on (object permission; superusers see all)."""
    return get_objects_for_user(user, ACCESS_PERM, klass=Tenant, accept_global_perms=False)
