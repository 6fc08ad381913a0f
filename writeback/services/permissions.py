"""Who may do what: a role (Django group) for the action, and the per-tenant object permission.

Every API endpoint and console action asks `require()`. A refusal raises `ActionRefused` and leaves an
audit entry in its own transaction, so the record survives the error response's rollback.
"""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, Permission
from django.db import transaction

from writeback.errors import DomainError
from writeback.models import AuditAction, AuditEntry, Tenant
from writeback.services import audit
from writeback.services.tenants import user_may_access
from writeback.validation.outcome import Issue, ValidationFailed, error

CLINICIAN, ADMIN, ENGINEER, AUDITOR = "clinician", "admin", "integration_engineer", "auditor"

ACTION_ROLES: dict[str, frozenset[str]] = {
    "view": frozenset({CLINICIAN, ADMIN, ENGINEER, AUDITOR}),
    "submit_event": frozenset(),  # API clients: tenant access is enough (no role needed)
    # The client app that sent a two-phase change aborts it when its own side failed.
    "abort_two_phase": frozenset(),
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
    # Reading the EHR live from the console (chart comparison, plan prediction): those who act on what
    # they see (approving, resolving, replaying); auditors read our records, not the chart.
    "read_ehr": frozenset({CLINICIAN, ADMIN, ENGINEER}),
}

# Actions a client app's service account may hold without a human role: a Django model permission
# granted to that account (`create_api_token USER --manage-consent`), so a device gateway's token
# cannot record or revoke consent just because it may post events.
ACTION_MODEL_PERMS: dict[str, str] = {"manage_consent": "writeback.change_consent"}


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
    if user.is_superuser or not needed or roles_of(user) & needed:
        return True
    perm = ACTION_MODEL_PERMS.get(action)
    return perm is not None and user.has_perm(perm)


@transaction.atomic
def grant_action_permission(user: AbstractBaseUser, action: str, *, actor: Any = None) -> None:
    """Grants a service account the model permission that stands for `action` (see ACTION_MODEL_PERMS),
    and audits the grant."""
    app_label, codename = ACTION_MODEL_PERMS[action].split(".")
    perm = Permission.objects.get(content_type__app_label=app_label, codename=codename)
    user.user_permissions.add(perm)
    for cache in ("_perm_cache", "_user_perm_cache"):
        user.__dict__.pop(cache, None)
    audit.record(
        AuditAction.PERMISSION_GRANTED,
        actor=actor,
        object_type="user",
        object_id=user.get_username(),
        data={"user": user.get_username(), "action": action, "permission": ACTION_MODEL_PERMS[action]},
    )


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
        if action in ACTION_MODEL_PERMS:
            message += f" or the permission {ACTION_MODEL_PERMS[action]}"
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
        AuditAction.ACCESS_REFUSED,
        actor=user if getattr(user, "is_authenticated", False) else "anonymous",
        tenant=tenant.slug if tenant else "",
        object_type=object_type,
        object_id=str(object_id),
        request_id=request_id,
        data={"action": action, "reason": message, "rule": rule, "channel": channel},
    )
    raise ActionRefused(message, rule)


# Intake refusals audited besides the 403s: writes the contract or the tenant's registry refuses.
# Schema and domain 422s are the client's input errors and are not audited.
AUDITED_CONTRACT_RULES = frozenset(
    {"operation-not-supported", "field-not-writable", "capability-not-granted"}
)


def event_refusal_issues(exc: Exception) -> list[Issue]:
    """The issues that make an intake error an audited refusal: a 409 (a key or source message reused
    for other content) or a contract refusal. Empty for any other error."""
    if isinstance(exc, DomainError) and exc.status == 409:
        return [error(exc.rule, exc.path, str(exc), code="conflict")]
    if isinstance(exc, ValidationFailed):
        return [i for i in exc.issues if i.is_error and i.rule in AUDITED_CONTRACT_RULES]
    return []


def record_event_refusal(
    exc: Exception,
    *,
    user: Any,
    body: Any,
    idempotency_key: str = "",
    request_id: str = "",
    correlation_id: str = "",
) -> AuditEntry | None:
    """Audits an intake refusal that `event_refusal_issues` selects (`event.refused`); None otherwise.
    The event itself is kept only as a hash: a refused payload may hold clinical data."""
    issues = event_refusal_issues(exc)
    if not issues:
        return None
    body = body if isinstance(body, dict) else {}
    patient = body.get("patient")
    patient_id = patient.get("id") if isinstance(patient, dict) else None
    return audit.record(
        AuditAction.EVENT_REFUSED,
        actor=user if getattr(user, "is_authenticated", False) else "anonymous",
        tenant=str(body.get("tenant", ""))[:64],
        object_type="event",
        request_id=request_id,
        correlation_id=correlation_id,
        data={
            "status": getattr(exc, "status", 422),
            "rule": issues[0].rule,
            "issues": [{"rule": i.rule, "path": i.path, "reason": i.message} for i in issues],
            "type": str(body.get("type", ""))[:64],
            "idempotency_key": idempotency_key,
            "patient": patient_id[:128] if isinstance(patient_id, str) else None,
            "body_sha256": audit.sha256_text(body),
        },
    )
