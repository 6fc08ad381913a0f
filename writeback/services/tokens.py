"""API tokens for client apps: made once, shown once, stored as a hash."""

from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from writeback.models import ApiToken, AuditAction, Tenant
from writeback.models.tokens import PREFIX_LENGTH, hash_key
from writeback.services import audit
from writeback.services.tenants import tenant_grant, user_may_access


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
    return not scoped or tenant.pk in scoped
