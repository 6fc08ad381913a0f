"""Intake's two reads per event, each one SQL statement: the tenant with everything the event needs to
know of it, and the person the event names as its initiator.

Hand-written SQL, not the ORM, for one reason: the ORM builds and compiles a query of eight correlated
subqueries in about 5 ms of Python per event (more than the round trips it replaced), while this text
is built once per process and PostgreSQL plans it in about 2 ms. The SQL is plain (EXISTS, scalar
subqueries, a LEFT JOIN) and runs unchanged on PostgreSQL and SQLite; tests/writeback/test_intake_*
cover both. The answers mean exactly what the ORM checks they replace mean (see each field).
"""

# ruff: noqa: S608 - the SQL names tables from the models' metadata; every value is a parameter.

from functools import cache
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from guardian.models import GroupObjectPermission, UserObjectPermission

from writeback.canonical import CanonicalEvent
from writeback.models import (
    ApiToken,
    BusinessEvent,
    ContractStamp,
    PatientIdentity,
    PractitionerMapping,
    Tenant,
)
from writeback.services.permissions import ACTION_MODEL_PERMS


def _t(model: Any) -> str:
    return model._meta.db_table


@cache
def _grant_sql(tenant_id: str, user_id: str) -> tuple[str, str]:
    """EXISTS tests for the per-tenant grant (guardian's `access_tenant` object permission) of the user
    `user_id` on the tenant `tenant_id` (SQL expressions), given directly and through a group, as
    `writeback.services.access.user_may_access` reads it."""
    perm = (
        f"JOIN {_t(Permission)} ap ON ap.id = p.permission_id "
        f"JOIN {_t(ContentType)} ct ON ct.id = ap.content_type_id "
        "WHERE ap.codename = 'access_tenant' AND ct.app_label = 'writeback' "
        f"AND p.object_pk = CAST({tenant_id} AS VARCHAR(255))"
    )
    memberships = get_user_model().groups.through
    direct = f"EXISTS (SELECT 1 FROM {_t(UserObjectPermission)} p {perm} AND p.user_id = {user_id})"
    via_group = (
        f"EXISTS (SELECT 1 FROM {_t(GroupObjectPermission)} p {perm} AND p.group_id IN "
        f"(SELECT ug.group_id FROM {_t(memberships)} ug WHERE ug.user_id = {user_id}))"
    )
    return direct, via_group


@cache
def _model_perm_sql(perm: str) -> str:
    """An EXISTS test: user %s holds the model permission `perm` ("app_label.codename"), directly or
    through a group (as ModelBackend reads it, superusers aside)."""
    app_label, codename = perm.split(".")
    user_model = get_user_model()
    direct = user_model.user_permissions.through
    groups = user_model.groups.through
    return (
        f"EXISTS (SELECT 1 FROM {_t(Permission)} ap JOIN {_t(ContentType)} ct ON ct.id = ap.content_type_id "
        f"WHERE ap.codename = '{codename}' AND ct.app_label = '{app_label}' AND ("
        f"ap.id IN (SELECT up.permission_id FROM {_t(direct)} up WHERE up.user_id = %s) OR "
        f"ap.id IN (SELECT gp.permission_id FROM {_t(Permission.group_set.through)} gp "
        f"JOIN {_t(groups)} ug ON ug.group_id = gp.group_id WHERE ug.user_id = %s)))"
    )


@cache
def _tenant_sql() -> str:
    direct, via_group = _grant_sql("t.id", "%s")
    scope = ApiToken.tenants.through
    return (
        f"SELECT t.*, {direct} AS granted_user, {via_group} AS granted_group, "
        f"{_model_perm_sql(ACTION_MODEL_PERMS['submit_on_behalf'])} AS on_behalf, "
        f"EXISTS (SELECT 1 FROM {_t(scope)} s WHERE s.apitoken_id = %s) AS token_names_any, "
        f"EXISTS (SELECT 1 FROM {_t(scope)} s WHERE s.apitoken_id = %s AND s.tenant_id = t.id) "
        "AS token_names_tenant, "
        f"EXISTS (SELECT 1 FROM {_t(BusinessEvent)} e WHERE e.tenant_id = t.id AND (e.idempotency_key = %s "
        "OR (e.source_system = %s AND e.source_message_id = %s))) AS known_event, "
        f"EXISTS (SELECT 1 FROM {_t(PatientIdentity)} i WHERE i.tenant_id = t.id AND "
        "((i.patient_ref = %s AND NOT (i.identifier_system = %s AND i.identifier_value = %s)) OR "
        "(i.identifier_system = %s AND i.identifier_value = %s AND i.patient_ref <> %s))) AS identity_clash, "
        f"EXISTS (SELECT 1 FROM {_t(PatientIdentity)} i WHERE i.tenant_id = t.id AND i.patient_ref = %s) "
        "AS identity_known, "
        f"(SELECT m.practitioner_ref FROM {_t(PractitionerMapping)} m WHERE m.tenant_id = t.id "
        "AND m.user_id = %s LIMIT 1) AS submitter_practitioner, "
        f"(SELECT MAX(c.value) FROM {_t(ContractStamp)} c) AS contract_stamp "
        f"FROM {_t(Tenant)} t WHERE t.slug = %s"
    )


def tenant_for_event(
    slug: str, *, user: Any, token: ApiToken | None, key: str, event: CanonicalEvent | None
) -> Tenant | None:
    """The tenant `slug`, carrying: `granted_user` / `granted_group` (the user's grant, as
    `user_may_access` reads it), `token_names_any` / `token_names_tenant` (the token's scope, as
    `token_may_access`), `known_event` (an event of this tenant has this idempotency key, or this
    source message: `intake._find_duplicate` then says which), `identity_clash` (the chart holds this
    patient under another identifier, or this identifier for another patient), `identity_known` (the
    chart holds an identity for this patient, so storing the event adds none), `submitter_practitioner`
    (the user's Practitioner there, or None), `on_behalf` (the user holds the model permission to name
    another initiator, ACTION_MODEL_PERMS) and `contract_stamp` (ContractStamp's value, or None)."""
    source = event.source if event is not None else None
    message_id = source.message_id if source is not None else None
    ident = event.patient.identifier if event is not None else None
    patient = event.patient.id if event is not None else None
    system, value = (ident.system, ident.value) if ident is not None else (None, None)
    params = [
        user.pk,
        user.pk,
        user.pk,
        user.pk,
        token.pk if token is not None else None,
        token.pk if token is not None else None,
        key,
        (source.system or "") if message_id else None,
        message_id,
        # Without an identifier nothing can clash: NULL parameters make both branches false.
        patient if ident is not None else None,
        system,
        value,
        system,
        value,
        patient if ident is not None else None,
        patient if ident is not None else None,
        user.pk,
        slug,
    ]
    found = list(Tenant.objects.raw(_tenant_sql(), params))
    if not found:
        return None
    tenant = found[0]
    # SQLite answers EXISTS with 0 or 1.
    for name in (
        "granted_user",
        "granted_group",
        "on_behalf",
        "token_names_any",
        "token_names_tenant",
        "known_event",
        "identity_clash",
        "identity_known",
    ):
        setattr(tenant, name, bool(getattr(tenant, name)))
    return tenant


@cache
def _initiator_sql() -> str:
    direct, via_group = _grant_sql("%s", "u.id")
    user_model = get_user_model()
    memberships = user_model.groups.through
    return (
        f"SELECT u.*, g.name AS role_name, {direct} AS granted_user, {via_group} AS granted_group, "
        f"(SELECT m.practitioner_ref FROM {_t(PractitionerMapping)} m WHERE m.tenant_id = %s "
        "AND m.user_id = u.id LIMIT 1) AS practitioner_ref "
        f"FROM {_t(user_model)} u LEFT JOIN {_t(memberships)} ug ON ug.user_id = u.id "
        f"LEFT JOIN {_t(Group)} g ON g.id = ug.group_id WHERE u.username = %s"
    )


def initiator_for_event(username: str, tenant: Tenant) -> Any:
    """The user `username` (or None), carrying `role_names` (all their roles, as `roles_of` reads them,
    one per line),
    `granted` (their grant of `tenant`, as `user_may_access` reads it) and `practitioner_ref` (their
    Practitioner at `tenant`, or None). One row per role they hold (the LEFT JOIN), folded here."""
    params = [tenant.pk, tenant.pk, tenant.pk, username]
    rows = list(get_user_model().objects.raw(_initiator_sql(), params))
    if not rows:
        return None
    user = rows[0]
    # As `permissions.actor_annotations` gives them, for `prime_actor`.
    user.role_names = "\n".join(r.role_name for r in rows if r.role_name)
    user.granted = bool(user.granted_user) or bool(user.granted_group)
    return user
