"""Tenants: creating them, granting people access, changing their mode."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from guardian.models import GroupObjectPermission, UserObjectPermission
from guardian.shortcuts import assign_perm, get_objects_for_user, remove_perm
from simple_history.utils import bulk_create_with_history

from writeback.models import Capability, ContractRule, Tenant, TenantMode
from writeback.services import audit

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
        "tenant.created",
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


@transaction.atomic
def tenant_set_mode(*, tenant: Tenant, mode: str, actor: Any, reason: str = "") -> Tenant:
    if mode not in TenantMode.values:
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(TenantMode.values)}")
    if getattr(actor, "is_authenticated", False):
        from writeback.services.permissions import require

        require(actor, "configure_tenant", tenant, object_type="tenant", object_id=tenant.slug)
    old = tenant.mode
    if old == mode:
        return tenant
    tenant.mode = mode
    tenant.save(update_fields=["mode", "updated_at"])
    audit.record(
        "tenant.mode_changed",
        actor=actor,
        tenant=tenant.slug,
        object_type="tenant",
        object_id=tenant.slug,
        data={"old": old, "new": mode, "reason": reason},
    )
    return tenant


@transaction.atomic
def tenant_grant(*, tenant: Tenant, user: AbstractBaseUser, actor: Any = None) -> None:
    assign_perm("access_tenant", user, tenant)
    audit.record(
        "tenant.access_granted",
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
        "tenant.access_revoked",
        actor=actor,
        tenant=tenant.slug,
        object_type="user",
        object_id=user.get_username(),
        data={"user": user.get_username()},
    )


def tenants_for_user(user: AbstractBaseUser):
    """Tenants a person may act on (object permission; superusers see all)."""
    return get_objects_for_user(user, ACCESS_PERM, klass=Tenant, accept_global_perms=False)


def user_may_access(user: AbstractBaseUser, tenant: Tenant) -> bool:
    """The per-tenant object permission, granted to the person or to one of their groups.

    Direct lookups on guardian's tables, not `user.has_perm()`: that loads every model permission of
    the user and their groups first (four queries), and intake asks this twice per event."""
    if not user.is_active:
        return False
    if user.is_superuser:
        return True
    granted = {
        "permission__codename": "access_tenant",
        "permission__content_type__app_label": "writeback",
        "object_pk": str(tenant.pk),
    }
    if UserObjectPermission.objects.filter(user_id=user.pk, **granted).exists():
        return True
    return GroupObjectPermission.objects.filter(group__user=user, **granted).exists()
