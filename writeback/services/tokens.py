"""API tokens for client apps: made once, shown once, stored as a hash."""

from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from writeback.models import ApiToken, AuditAction, Tenant
from writeback.models.tokens import PREFIX_LENGTH, hash_key
from writeback.services import audit
from writeback.services.access import prime_access, user_may_access
from writeback.services.tenants import tenant_grant


@transaction.atomic
def api_token_create(
    *, user: AbstractBaseUser, tenants: Iterable[Tenant] = (), name: str = "", actor: Any = None
) -> tuple[ApiToken, str]:
    """Returns the token row and the clear key (never stored). Naming tenants grants the user access
    to them and limits the token to them; without tenants the token follows the user's own grants."""
    tenants = list(tenants)
    for tenant in tenants:
        if not user_may_access(user, tenant):
            tenant_grant(tenant=tenant, user=user, actor=actor)
    key = ApiToken.generate_key()
    token = ApiToken.objects.create(user=user, name=name, prefix=key[:PREFIX_LENGTH], key_hash=hash_key(key))
    token.tenants.set(tenants)
    audit.record(
        AuditAction.API_TOKEN_CREATED,
        actor=actor,
        object_type="api_token",
        object_id=token.prefix,
        data={"user": user.get_username(), "tenants": [t.slug for t in tenants], "name": name},
    )
    return token, key


@transaction.atomic
def api_token_revoke(*, token: ApiToken, actor: Any = None) -> None:
    if token.revoked_at:
        return
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    audit.record(AuditAction.API_TOKEN_REVOKED, actor=actor, object_type="api_token", object_id=token.prefix)


def token_may_access(token: ApiToken | None, user: AbstractBaseUser, tenant: Tenant) -> bool:
    """A request may act on a tenant when the user is granted it and the token (if any) names it."""
    if not user_may_access(user, tenant):
        return False
    if token is None:
        return True
    scoped = list(token.tenants.values_list("pk", flat=True))
    return _scope_allows(len(scoped), tenant.pk in scoped)


def tenant_access_from_row(token: ApiToken | None, user: AbstractBaseUser, tenant: Tenant) -> bool:
    """`token_may_access` from a tenant read with its answers (`writeback.intake_reads`); the user's
    grant is also kept for the rest of the request (`prime_access`)."""
    prime_access(user, tenant, bool(tenant.granted_user or tenant.granted_group))
    if not user_may_access(user, tenant):
        return False
    if token is None:
        return True
    return _scope_allows(int(tenant.token_names_any), bool(tenant.token_names_tenant))


def _scope_allows(tenants_named: int, names_tenant: bool) -> bool:
    # A token that names no tenant follows its user's grants.
    return not tenants_named or names_tenant


# (rule, reason): why a token may no longer act on a tenant.
Lapsed = tuple[str, str]


def token_lapse(token_id: int, tenant: Tenant) -> Lapsed | None:
    """Why a token that submitted an event may no longer act on `tenant` ((rule, reason)), or None.
    Its user is checked apart."""
    return token_lapses([token_id], tenant)[token_id]


def token_lapses(token_ids: Iterable[int], tenant: Tenant) -> dict[int, Lapsed | None]:
    """`token_lapse` for several tokens in one query (the worker asks it for each batch it is about to
    send)."""
    ids = set(token_ids)
    rows = {
        row["pk"]: row
        for row in ApiToken.objects.filter(pk__in=list(ids))
        .annotate(named=Count("tenants"), names_tenant=Count("tenants", filter=Q(tenants=tenant)))
        .values("pk", "prefix", "revoked_at", "named", "names_tenant")
    }
    return {pk: _lapse(rows.get(pk), tenant) for pk in ids}


def _lapse(row: dict[str, Any] | None, tenant: Tenant) -> Lapsed | None:
    if row is None:
        return "token-revoked", "the API token that submitted the event no longer exists"
    name = f"the API token {row['prefix']}… that submitted the event"
    if row["revoked_at"] is not None:
        return "token-revoked", f"{name} was revoked"
    if not _scope_allows(row["named"], bool(row["names_tenant"])):
        return "token-lapsed", f"{name} no longer names tenant {tenant.slug}"
    return None
