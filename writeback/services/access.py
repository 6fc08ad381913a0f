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
    """The object-permission rows that grant a tenant (to a person or to one of their groups).
    `writeback.intake_reads` reads the same rows in SQL."""
    return {
        "permission__codename": "access_tenant",
        "permission__content_type__app_label": "writeback",
        "object_pk": str(tenant.pk),
    }


def prime_access(user: AbstractBaseUser, tenant: Tenant, granted: bool) -> None:
    """Records, for this request's `user` object, whether it may act on `tenant` (read by the caller
    in a query it made anyway): `user_may_access` answers from it instead of asking again."""
    if not hasattr(user, "_writeback_access"):
        user._writeback_access = {}
    user._writeback_access[tenant.pk] = granted


def user_may_access(user: AbstractBaseUser, tenant: Tenant) -> bool:
    """The per-tenant object permission, granted to the person or to one of their groups.

    Direct lookups on guardian's tables, not `user.has_perm()`: that loads every model permission of
    the user and their groups first (four queries), and intake asks this twice per event."""
    if not user.is_active:
        return False
    if user.is_superuser:
        return True
    primed = getattr(user, "_writeback_access", {}).get(tenant.pk)
    if primed is not None:
        return primed
    if UserObjectPermission.objects.filter(user_id=user.pk, **_granted(tenant)).exists():
        return True
    return GroupObjectPermission.objects.filter(group__user=user, **_granted(tenant)).exists()


def forget_access(user: AbstractBaseUser) -> None:
    """Drops what `prime_access` kept: a user object may outlive the request that read it."""
    user.__dict__.pop("_writeback_access", None)


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
