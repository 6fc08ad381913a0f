"""Who may do what: a role (Django group) for the action, and the per-tenant object permission.

Every API endpoint and console action asks `require()`. A refusal raises `ActionRefused` and leaves an
audit entry in its own transaction, so the record survives the error response's rollback.
"""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from writeback.models import Tenant
from writeback.services import audit
from writeback.services.tenants import user_may_access

CLINICIAN, ADMIN, ENGINEER, AUDITOR = "clinician", "admin", "integration_engineer", "auditor"

ACTION_ROLES: dict[str, frozenset[str]] = {
    "view": frozenset({CLINICIAN, ADMIN, ENGINEER, AUDITOR}),
    "submit_event": frozenset(),  # API clients: tenant access is enough (no role needed)
    "approve": frozenset({CLINICIAN}),
    "reject": frozenset({CLINICIAN}),
    "correction": frozenset({CLINICIAN}),
    "rollback": frozenset({ADMIN, ENGINEER}),
    "replay": frozenset({ADMIN, ENGINEER}),
    "resolve": frozenset({ADMIN}),
    "resolve_conflict": frozenset({CLINICIAN, ADMIN}),
    "confirm_manual_task": frozenset({CLINICIAN, ADMIN, ENGINEER}),
    "acknowledge_alert": frozenset({CLINICIAN, ADMIN, ENGINEER}),
    "configure_tenant": frozenset({ENGINEER}),
    "kill_switch": frozenset({ENGINEER, ADMIN}),
    "manage_consent": frozenset({CLINICIAN, ADMIN}),
    "view_audit": frozenset({AUDITOR, ADMIN}),
}


class ActionRefused(Exception):
    def __init__(self, message: str, rule: str = "forbidden") -> None:
        self.rule = rule
        super().__init__(message)


def roles_of(user: AbstractBaseUser) -> set[str]:
    if not user.is_authenticated:
        return set()
    cached = getattr(user, "_writeback_roles", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        user._writeback_roles = cached
    return cached


def has_role_for(user: AbstractBaseUser, action: str) -> bool:
    needed = ACTION_ROLES[action]
    if user.is_superuser or not needed:
        return True
    return bool(roles_of(user) & needed)


def allowed(user: AbstractBaseUser, action: str, tenant: Tenant | None = None) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    if not has_role_for(user, action):
        return False
    return tenant is None or user_may_access(user, tenant)


def require(
    user: AbstractBaseUser,
    action: str,
    tenant: Tenant | None = None,
    *,
    object_type: str = "",
    object_id: str = "",
    request_id: str = "",
    channel: str = "api",
) -> None:
    if allowed(user, action, tenant):
        return
    if not has_role_for(user, action):
        roles = ", ".join(sorted(ACTION_ROLES[action]))
        message = f"'{action}' needs the role {roles}"
        rule = "role-required"
    else:
        message = f"no access to tenant {tenant.slug}" if tenant else "no access"
        rule = "tenant-forbidden"
    refuse(
        user,
        action,
        message,
        rule=rule,
        tenant=tenant,
        object_type=object_type,
        object_id=object_id,
        request_id=request_id,
        channel=channel,
    )


def refuse(
    user: Any,
    action: str,
    message: str,
    *,
    rule: str = "forbidden",
    tenant: Tenant | None = None,
    object_type: str = "",
    object_id: str = "",
    request_id: str = "",
    channel: str = "api",
) -> None:
    """Audits a refused action and raises ActionRefused. Call it outside any transaction the caller
    will roll back, or the audit entry goes with it."""
    audit.record(
        "access.refused",
        actor=user if getattr(user, "is_authenticated", False) else "anonymous",
        tenant=tenant.slug if tenant else "",
        object_type=object_type,
        object_id=str(object_id),
        request_id=request_id,
        data={"action": action, "reason": message, "rule": rule, "channel": channel},
    )
    raise ActionRefused(message, rule)
