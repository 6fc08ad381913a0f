"""Who may act on a tenant: the per-tenant grant (guardian's object permission), read directly.

Its own module because both the tenant services and the permission checks need it, and neither may
import the other's module back."""

from collections.abc import Iterable
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Exists, OuterRef, Q
from guardian.models import GroupObjectPermission, UserObjectPermission

from writeback.models import Tenant


def _granted(tenant: Tenant) -> dict[str, Any]:
    """The object-permission rows that grant a tenant (to a person or to one of their groups)."""
    return {
        "permission__codename": "access_tenant",
        "permission__content_type__app_label": "writeback",
        "object_pk": str(tenant.pk),
    }


def user_may_access(user: AbstractBaseUser, tenant: Tenant) -> bool:
    """The per-tenant object permission, granted to the person or to one of their groups.

    Direct lookups on guardian's tables, not `user.has_perm()`: that loads every model permission of
    the user and their groups first (four queries), and intake asks this twice per event."""
    if not user.is_active:
        return False
    if user.is_superuser:
        return True
    if UserObjectPermission.objects.filter(user_id=user.pk, **_granted(tenant)).exists():
        return True
    return GroupObjectPermission.objects.filter(group__user=user, **_granted(tenant)).exists()


def users_with_access(user_ids: Iterable[int], tenant: Tenant) -> set[int]:
    """Which of these users may act on `tenant` now (active, and granted it or superusers), in one
    query: the worker asks it for every write it is about to send."""
    grants = _granted(tenant)
    rows = (
        get_user_model()
        .objects.filter(pk__in=list(user_ids), is_active=True)
        .filter(
            Q(is_superuser=True)
            | Exists(UserObjectPermission.objects.filter(user_id=OuterRef("pk"), **grants))
            | Exists(GroupObjectPermission.objects.filter(group__user=OuterRef("pk"), **grants))
        )
        .values_list("pk", flat=True)
    )
    return set(rows)
