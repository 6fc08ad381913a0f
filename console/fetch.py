"""Fetch helpers: every object a console view touches is looked up within the tenants the signed-in
person may act on. An object of another tenant is refused (403, audited, as the API does); an unknown
id is a 404."""

from django.db.models import QuerySet
from django.http import HttpRequest
from django.shortcuts import get_object_or_404

from writeback import logcontext
from writeback.models import (
    Alert,
    BulkOperation,
    CapabilityChange,
    Conflict,
    ContractOverrideChange,
    KillSwitch,
    ManualTask,
    ReconciliationFinding,
    Tenant,
    Write,
)
from writeback.selectors import scoped_get, tenants_visible_to, writes_visible_to
from writeback.services.permissions import refuse, require

# One id per request, the same in logs, audit entries and the API (writeback/logcontext.py).
request_id = logcontext.request_id


def visible_tenants(request: HttpRequest) -> QuerySet[Tenant]:
    return tenants_visible_to(request.user)


def visible_tenant_ids(request: HttpRequest) -> list[int]:
    cached = getattr(request, "_visible_tenant_ids", None)
    if cached is None:
        cached = request._visible_tenant_ids = list(visible_tenants(request).values_list("pk", flat=True))
    return cached


def _visible_or_refused(
    request: HttpRequest, visible: QuerySet, everything: QuerySet, object_type: str, **lookup
):
    return scoped_get(
        request.user,
        visible,
        everything,
        object_type,
        channel="console",
        request_id=request_id(request),
        **lookup,
    )


def get_write_for_user(request: HttpRequest, uid, *, related: tuple[str, ...] = ()) -> Write:
    qs = writes_visible_to(request.user)
    if related:
        qs = qs.select_related(*related)
    write = _visible_or_refused(request, qs, Write.objects.all(), "write", uid=uid)
    require(
        request.user, "view", write.tenant, object_type="write", object_id=str(write.uid), channel="console"
    )
    return write


def get_tenant_for_user(request: HttpRequest, slug: str) -> Tenant:
    tenant = _visible_or_refused(request, visible_tenants(request), Tenant.objects.all(), "tenant", slug=slug)
    require(request.user, "view", tenant, object_type="tenant", object_id=tenant.slug, channel="console")
    return tenant


def get_conflict_for_user(request: HttpRequest, uid) -> Conflict:
    conflict = _visible_or_refused(
        request,
        Conflict.objects.select_related(
            "write__tenant", "write__event", "resolved_by", "resolution_write"
        ).filter(write__tenant__in=visible_tenants(request)),
        Conflict.objects.all(),
        "conflict",
        uid=uid,
    )
    require(
        request.user,
        "view",
        conflict.write.tenant,
        object_type="conflict",
        object_id=str(conflict.uid),
        channel="console",
    )
    return conflict


def get_alert_for_user(request: HttpRequest, uid) -> Alert:
    return _visible_or_refused(
        request,
        Alert.objects.select_related("tenant", "write").filter(tenant__in=visible_tenants(request)),
        Alert.objects.all(),
        "alert",
        uid=uid,
    )


def get_finding_for_user(request: HttpRequest, uid) -> ReconciliationFinding:
    return _visible_or_refused(
        request,
        ReconciliationFinding.objects.select_related("tenant", "write").filter(
            tenant__in=visible_tenants(request)
        ),
        ReconciliationFinding.objects.all(),
        "reconciliation_finding",
        uid=uid,
    )


def get_task_for_user(request: HttpRequest, uid) -> ManualTask:
    return _visible_or_refused(
        request,
        ManualTask.objects.select_related("tenant", "write", "compensation").filter(
            tenant__in=visible_tenants(request)
        ),
        ManualTask.objects.all(),
        "manual_task",
        uid=uid,
    )


def get_change_for_user(request: HttpRequest, uid) -> CapabilityChange:
    return _visible_or_refused(
        request,
        CapabilityChange.objects.select_related("tenant", "requested_by").filter(
            tenant__in=visible_tenants(request)
        ),
        CapabilityChange.objects.all(),
        "capability_change",
        uid=uid,
    )


def get_policy_change_for_user(request: HttpRequest, uid) -> ContractOverrideChange:
    return _visible_or_refused(
        request,
        ContractOverrideChange.objects.select_related("tenant", "requested_by").filter(
            tenant__in=visible_tenants(request)
        ),
        ContractOverrideChange.objects.all(),
        "contract_override_change",
        uid=uid,
    )


def get_switch_for_user(request: HttpRequest, uid) -> KillSwitch:
    switch = get_object_or_404(KillSwitch.objects.select_related("tenant"), uid=uid)
    # Global switches belong to everyone; tenant switches only to people of that tenant.
    if switch.tenant_id is not None and switch.tenant_id not in visible_tenant_ids(request):
        refuse(
            request.user,
            "kill_switch",
            f"this kill switch belongs to tenant {switch.tenant.slug}, which you may not act on",
            rule="tenant-forbidden",
            tenant=switch.tenant,
            object_type="kill_switch",
            object_id=str(switch.uid),
            channel="console",
        )
    return switch


def get_bulk_for_user(request: HttpRequest, uid) -> BulkOperation:
    op = get_object_or_404(BulkOperation.objects.select_related("requested_by", "aborted_by"), uid=uid)
    # An operation is visible to those who may see every write in it.
    if op.items.exclude(write__tenant_id__in=visible_tenant_ids(request)).exists():
        refuse(
            request.user,
            "view",
            "this bulk operation covers tenants you may not act on",
            rule="tenant-forbidden",
            object_type="bulk",
            object_id=str(op.uid),
            channel="console",
        )
    return op


def render_panel(request: HttpRequest, template: str, context: dict, status: int = 200):
    """An htmx partial plus the page's message region, swapped out of band."""
    from django.shortcuts import render
    from django.template.loader import render_to_string

    response = render(request, template, context, status=status)
    flash = render_to_string("console/_messages.html", {"oob": True}, request=request)
    response.content = response.content + flash.encode()
    return response


def may(request: HttpRequest, action: str, tenant: Tenant | None = None) -> bool:
    """allowed() for one request, with the person's tenants read once (lists ask for every row)."""
    from writeback.services.permissions import has_role_for

    user = request.user
    if not user.is_authenticated or not user.is_active or not has_role_for(user, action):
        return False
    return tenant is None or tenant.pk in visible_tenant_ids(request)
