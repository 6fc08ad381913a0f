"""Who may do what: a role (Django group) for the action, and the per-tenant object permission.

Every API endpoint and console action asks `require()`. A refusal raises `ActionRefused` and leaves an
audit entry in its own transaction, so the record survives the error response's rollback.
"""

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group, Permission
from django.db import transaction
from django.db.models import OuterRef, StringAgg, Subquery, Value

from writeback.errors import DomainError
from writeback.models import AuditAction, AuditEntry, Tenant
from writeback.services import audit
from writeback.services.access import user_may_access
from writeback.validation.outcome import Issue, ValidationFailed, error

CLINICIAN, ADMIN, ENGINEER, AUDITOR = "clinician", "admin", "integration_engineer", "auditor"
# A client app's service account (a Django group too): it posts events and reads what became of them.
CLIENT_APP = "client_app"
PEOPLE_ROLES = frozenset({CLINICIAN, ADMIN, ENGINEER, AUDITOR})

# The one table of who may do what: the API, the console and the services all ask it (through
# `require()` and `allowed()`), and the console shows only the buttons it allows.
ACTION_ROLES: dict[str, frozenset[str]] = {
    # The console is for people; client apps use the API, where they read what became of their events.
    "use_console": PEOPLE_ROLES,
    "view": frozenset({CLINICIAN, ADMIN, ENGINEER, AUDITOR, CLIENT_APP}),
    # Chart content comes from clinicians and client apps; auditors only read, and admins and engineers
    # operate the pipeline without authoring chart entries.
    "submit_event": frozenset({CLINICIAN, CLIENT_APP}),
    # Naming someone else as an event's initiator: only a client app holding the model permission.
    "submit_on_behalf": frozenset(),
    # A two-phase change is aborted by the client app that sent it (its own side failed; see
    # OWN_SUBMISSIONS_ONLY), or by admins and engineers.
    "abort_two_phase": frozenset({ADMIN, ENGINEER, CLIENT_APP}),
    "approve": frozenset({CLINICIAN}),
    "reject": frozenset({CLINICIAN}),
    "correction": frozenset({CLINICIAN}),
    "rollback": frozenset({ADMIN, ENGINEER}),
    "replay": frozenset({ADMIN, ENGINEER}),
    "resolve": frozenset({ADMIN}),
    "resolve_conflict": frozenset({CLINICIAN, ADMIN}),
    "confirm_manual_task": frozenset({CLINICIAN, ADMIN, ENGINEER}),
    "acknowledge_alert": frozenset({CLINICIAN, ADMIN, ENGINEER}),
    # Closing an alert for good (a threshold alert closes itself once back below its limit).
    "resolve_alert": frozenset({CLINICIAN, ADMIN, ENGINEER}),
    # Where alerts go (webhooks, mailboxes, escalation): admins own who gets woken up.
    "manage_alert_routes": frozenset({ADMIN}),
    "configure_tenant": frozenset({ENGINEER}),
    "kill_switch": frozenset({ENGINEER, ADMIN}),
    "manage_consent": frozenset({CLINICIAN, ADMIN}),
    "view_audit": frozenset({AUDITOR, ADMIN}),
    # Reading the EHR live from the console (chart comparison, plan prediction): those who act on what
    # they see (approving, resolving, replaying); auditors read our records, not the chart.
    "read_ehr": frozenset({CLINICIAN, ADMIN, ENGINEER}),
}

# Actions a client app's service account holds only when granted a Django model permission besides
# its role (`create_api_token USER --manage-consent` / `--on-behalf`): a device gateway's token cannot
# record consent, or post in a clinician's name, just because it may post events.
ACTION_MODEL_PERMS: dict[str, str] = {
    "manage_consent": "writeback.change_consent",
    "submit_on_behalf": "writeback.submit_on_behalf",
}

# Roles that hold an action only for what their own account submitted.
OWN_SUBMISSIONS_ONLY: dict[str, frozenset[str]] = {"abort_two_phase": frozenset({CLIENT_APP})}


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


def actor_annotations(user_ref: str) -> dict[str, Any]:
    """An annotation that reads a user's roles in the query that reads the user (`user_ref`: the path
    to the user's id, e.g. "user_id" on a token), so the role checks of one request cost no query of
    their own; `prime_actor` puts them on the user. One aggregated subquery, not one per role: each
    subquery adds planning and compiling time to every request."""
    memberships = get_user_model().groups.through.objects.filter(user_id=OuterRef(user_ref))
    names = memberships.values("user_id").annotate(names=StringAgg("group__name", Value("\n")))
    return {"role_names": Subquery(names.values("names"))}


def prime_actor(user: AbstractBaseUser, row: Any) -> None:
    """Puts the roles read by `actor_annotations` (on `row`) on `user` for this request."""
    user._writeback_roles = set(filter(None, (row.role_names or "").split("\n")))


def prime_model_perm(user: AbstractBaseUser, action: str, held: bool) -> None:
    """Records whether `user` holds the model permission standing for `action` (ACTION_MODEL_PERMS), read
    by the caller in a query it made anyway: `has_role_for` then asks no query for it."""
    if not hasattr(user, "_writeback_model_perms"):
        user._writeback_model_perms = {}
    user._writeback_model_perms[ACTION_MODEL_PERMS[action]] = held


def forget_model_perms(user: AbstractBaseUser) -> None:
    """Drops what `prime_model_perm` kept: a user object may outlive the request that read it."""
    user.__dict__.pop("_writeback_model_perms", None)


def _holds_model_perm(user: AbstractBaseUser, perm: str) -> bool:
    primed = getattr(user, "_writeback_model_perms", {})
    if perm not in primed:
        return user.has_perm(perm)
    # As ModelBackend answers: an active superuser holds every permission.
    return user.is_active and (user.is_superuser or primed[perm])


def is_client_app(user: AbstractBaseUser) -> bool:
    return CLIENT_APP in roles_of(user)


def has_role_for(user: AbstractBaseUser, action: str) -> bool:
    if not user.is_authenticated:
        return False
    perm = ACTION_MODEL_PERMS.get(action)
    if perm is not None and is_client_app(user) and _holds_model_perm(user, perm):
        return True
    if action == "submit_on_behalf":
        return False  # not even a superuser: a person never submits in someone else's name
    return user.is_superuser or bool(roles_of(user) & ACTION_ROLES[action])


def holds_only_own(user: AbstractBaseUser, action: str) -> bool:
    """True when `user` holds `action` only for what they submitted themselves (OWN_SUBMISSIONS_ONLY)."""
    own = OWN_SUBMISSIONS_ONLY.get(action)
    if not own or user.is_superuser:
        return False
    roles = roles_of(user) & ACTION_ROLES[action]
    return bool(roles) and roles <= own


def who_holds(action: str) -> str:
    """The table's answer in words, for refusals: 'the role admin, clinician or a client app holding ...'."""
    holders = []
    if ACTION_ROLES[action]:
        holders.append(f"the role {', '.join(sorted(ACTION_ROLES[action]))}")
    if action in ACTION_MODEL_PERMS:
        holders.append(f"a client app holding the permission {ACTION_MODEL_PERMS[action]}")
    return " or ".join(holders)


@transaction.atomic
def grant_action_permission(user: AbstractBaseUser, action: str, *, actor: Any = None) -> None:
    """Grants a client app's service account the model permission that stands for `action` (see
    ACTION_MODEL_PERMS), and audits the grant. Only client apps hold these: enrol the account first."""
    if not is_client_app(user):
        raise DomainError(
            422,
            "service-account-required",
            f"{user.get_username()} is not a client app's service account (client_app_enroll first)",
            "user",
        )
    app_label, codename = ACTION_MODEL_PERMS[action].split(".")
    perm = Permission.objects.get(content_type__app_label=app_label, codename=codename)
    user.user_permissions.add(perm)
    for cache in ("_perm_cache", "_user_perm_cache", "_writeback_model_perms"):
        user.__dict__.pop(cache, None)
    audit.record(
        AuditAction.PERMISSION_GRANTED,
        actor=actor,
        object_type="user",
        object_id=user.get_username(),
        data={"user": user.get_username(), "action": action, "permission": ACTION_MODEL_PERMS[action]},
    )


@transaction.atomic
def client_app_enroll(user: AbstractBaseUser, *, actor: Any = None) -> None:
    """Makes `user` a client app's service account (the `client_app` role), audited. A person's
    account is refused: an account that both posts events and approves or audits them would defeat
    the separation of duties."""
    people = sorted(roles_of(user) & PEOPLE_ROLES)
    if people:
        raise DomainError(
            422,
            "service-account-required",
            f"{user.get_username()} holds the role {', '.join(people)}: a client app needs its own account",
            "user",
        )
    if is_client_app(user):
        return
    user.groups.add(Group.objects.get(name=CLIENT_APP))
    user.__dict__.pop("_writeback_roles", None)
    audit.record(
        AuditAction.PERMISSION_GRANTED,
        actor=actor,
        object_type="user",
        object_id=user.get_username(),
        data={"user": user.get_username(), "role": CLIENT_APP},
    )


def allowed(
    user: AbstractBaseUser, action: str, tenant: Tenant | None = None, *, submitter_id: int | None = None
) -> bool:
    """`submitter_id`: who submitted the object acted on, for actions some roles hold only for their own
    submissions (OWN_SUBMISSIONS_ONLY)."""
    if not user.is_authenticated or not user.is_active:
        return False
    if not has_role_for(user, action):
        return False
    if holds_only_own(user, action) and submitter_id != user.pk:
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
    submitter_id: int | None = None,
) -> None:
    if allowed(user, action, tenant, submitter_id=submitter_id):
        return
    if getattr(user, "is_authenticated", False) and not user.is_active:
        message, rule = "this account is deactivated", "account-inactive"
    elif not has_role_for(user, action):
        message, rule = f"'{action}' needs {who_holds(action)}", "role-required"
    elif holds_only_own(user, action) and submitter_id != user.pk:
        message = f"a client app may '{action}' only what it submitted itself"
        rule = "not-submitter"
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
    {"operation-not-supported", "field-not-writable", "capability-not-granted", "practitioner-unmapped"}
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
