"""Tenants and the capability registry (integration engineers): mode, kill switches at every level,
the capability matrix with its sources and history, discovery, and two-person widening."""

from typing import Any

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from console.decorators import HtmxHttpRequest, console_view
from console.fetch import (
    get_change_for_user,
    get_policy_change_for_user,
    get_switch_for_user,
    get_tenant_for_user,
    may,
    request_id,
    visible_tenant_ids,
    visible_tenants,
)
from console.forms import (
    AuthorPolicyForm,
    CapabilityRequestForm,
    KillSwitchForm,
    ModeForm,
    NoteForm,
    PolicyApproveForm,
    PolicyForm,
    PractitionerMapForm,
)
from writeback.models import Tenant
from writeback.selectors import practitioner_mappings, queued_writes, tenant_changes, tenant_rows
from writeback.services.authors import practitioner_map, practitioner_unmap, tenant_set_author_policy
from writeback.services.capabilities import (
    capabilities_refresh,
    capability_change_approve,
    capability_change_reject,
    capability_change_request,
    capability_matrix,
)
from writeback.services.killswitches import (
    active_switches,
    kill_switch_engage,
    kill_switch_release,
    tenant_mode_change,
)
from writeback.services.policy import (
    override_approve,
    override_reject,
    override_request,
    policy_changes,
    tenant_policy,
)


def _permissions(request: HtmxHttpRequest, tenant: Tenant | None) -> dict:
    return {
        "can_configure": may(request, "configure_tenant", tenant),
        "can_switch": may(request, "kill_switch", tenant),
    }


@console_view()
def tenant_list(request: HtmxHttpRequest) -> HttpResponse:
    rows, global_switches = tenant_rows(list(visible_tenants(request).order_by("slug")))
    context = {
        "rows": rows,
        "global_switches": global_switches,
        "switch_form": KillSwitchForm(initial={"scope": "global"}),
        **_permissions(request, None),
    }
    return render(request, "console/tenants.html", context)


def _tenant_forms(tenant: Tenant) -> dict[str, Any]:
    """The empty or prefilled forms the tenant page offers (each posts to its own action view)."""
    author_fields = ("unmapped_author", "organization_ref", "write_provenance")
    return {
        "mode_form": ModeForm(initial={"mode": tenant.mode}),
        "request_form": CapabilityRequestForm(),
        "policy_form": PolicyForm(),
        "policy_approve_form": PolicyApproveForm(),
        "switch_form": KillSwitchForm(initial={"scope": "tenant", "tenant": tenant.slug}),
        "map_form": PractitionerMapForm(),
        "author_form": AuthorPolicyForm(initial={name: getattr(tenant, name) for name in author_fields}),
    }


@console_view()
def tenant_detail(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    tenant = get_tenant_for_user(request, slug)
    history, changes = tenant_changes(tenant)
    context = {
        "tenant": tenant,
        "matrix": capability_matrix(tenant),
        "history": history,
        "changes": changes,
        "switches": [s for s in active_switches([tenant.pk]) if s.tenant_id == tenant.pk],
        "policy": tenant_policy(tenant),
        "policy_changes": policy_changes(tenant),
        "queued": queued_writes(tenant),
        "mappings": practitioner_mappings(tenant),
        "user_pk": request.user.pk,
        **_tenant_forms(tenant),
        **_permissions(request, tenant),
    }
    return render(request, "console/tenant.html", context)


@console_view()
@require_POST
def tenant_mode(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    tenant = get_tenant_for_user(request, slug)
    form = ModeForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a mode and give a reason.")
        return redirect("console-tenant", tenant.slug)
    tenant_mode_change(
        tenant=tenant,
        user=request.user,
        mode=form.cleaned_data["mode"],
        reason=form.cleaned_data["reason"],
        request_id=request_id(request),
        channel="console",
    )
    messages.success(request, f"{tenant.slug} is now {tenant.get_mode_display().lower()}.")
    return redirect("console-tenant", tenant.slug)


@console_view()
@require_POST
def tenant_practitioner(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """Engineers map a person to the EHR's Practitioner (or remove the mapping); audited in the service."""
    tenant = get_tenant_for_user(request, slug)
    form = PractitionerMapForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give a username (and a Practitioner/ID to map them to).")
        return redirect("console-tenant", tenant.slug)
    data = form.cleaned_data
    if data["practitioner"]:
        practitioner_map(
            tenant=tenant,
            username=data["username"],
            practitioner_ref=data["practitioner"],
            actor=request.user,
            reason=data["reason"],
        )
        messages.success(request, f"{data['username']} is {data['practitioner']} at {tenant.slug}.")
    else:
        practitioner_unmap(
            tenant=tenant, username=data["username"], actor=request.user, reason=data["reason"]
        )
        messages.success(request, f"{data['username']} has no Practitioner at {tenant.slug} now.")
    return redirect("console-tenant", tenant.slug)


@console_view()
@require_POST
def tenant_author_policy(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    tenant = get_tenant_for_user(request, slug)
    form = AuthorPolicyForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose what happens to initiators without a Practitioner.")
        return redirect("console-tenant", tenant.slug)
    tenant_set_author_policy(tenant=tenant, actor=request.user, **form.cleaned_data)
    messages.success(request, f"Author policy of {tenant.slug} saved.")
    return redirect("console-tenant", tenant.slug)


@console_view()
@require_POST
def tenant_discover(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    tenant = get_tenant_for_user(request, slug)
    result = capabilities_refresh(
        tenant=tenant, user=request.user, request_id=request_id(request), channel="console"
    )
    if result.ok:
        messages.success(request, f"Discovery finished. {result}.")
    else:
        messages.error(request, f"Discovery failed: {result.error}. The manual registry is unchanged.")
    return redirect("console-tenant", tenant.slug)


@console_view()
@require_POST
def capability_request(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    tenant = get_tenant_for_user(request, slug)
    form = CapabilityRequestForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose the resource type, operation and change, and give a reason.")
        return redirect("console-tenant", tenant.slug)
    data = form.cleaned_data
    change = capability_change_request(
        tenant=tenant,
        user=request.user,
        resource_type=data["resource_type"],
        operation=data["operation"],
        allowed=data["allowed"],
        note=data["note"],
        request_id=request_id(request),
        channel="console",
    )
    if change.widens:
        messages.success(
            request, "Requested. A second integration engineer must approve it before it applies."
        )
    else:
        messages.success(request, f"Applied: {change.operation} {change.resource_type} is now refused.")
    return redirect("console-tenant", tenant.slug)


@console_view()
@require_POST
def capability_approve(request: HtmxHttpRequest, uid) -> HttpResponse:
    change = get_change_for_user(request, uid)
    capability_change_approve(
        change=change, user=request.user, request_id=request_id(request), channel="console"
    )
    messages.success(request, f"Approved: {change.operation} {change.resource_type} is now allowed.")
    return redirect("console-tenant", change.tenant.slug)


@console_view()
@require_POST
def capability_reject(request: HtmxHttpRequest, uid) -> HttpResponse:
    change = get_change_for_user(request, uid)
    return _turn_down(request, change, capability_change_reject, "Turned down. Nothing changed.")


@console_view()
@require_POST
def killswitch_engage(request: HtmxHttpRequest) -> HttpResponse:
    form = KillSwitchForm(request.POST)
    tenant = get_tenant_for_user(request, request.POST["tenant"]) if request.POST.get("tenant") else None
    back = ("console-tenant", tenant.slug) if tenant else ("console-tenants",)
    if not form.is_valid():
        messages.error(request, "Choose the level and behaviour, and give a reason.")
        return redirect(*back)
    data = form.cleaned_data
    switch = kill_switch_engage(
        user=request.user,
        scope=data["scope"],
        behaviour=data["behaviour"],
        reason=data["reason"],
        tenant=tenant,
        resource_type=data["resource_type"],
        patient_ref=data["patient_ref"],
        request_id=request_id(request),
        channel="console",
    )
    messages.success(request, f"Kill switch engaged ({switch.get_scope_display()}, {switch.behaviour}).")
    return redirect(*back)


@console_view()
@require_POST
def killswitch_release(request: HtmxHttpRequest, uid) -> HttpResponse:
    switch = get_switch_for_user(request, uid)
    kill_switch_release(
        switch=switch,
        user=request.user,
        note=request.POST.get("note", ""),
        request_id=request_id(request),
        channel="console",
    )
    messages.success(request, "Kill switch released: queued writes will flow again.")
    if switch.tenant_id and switch.tenant_id in visible_tenant_ids(request):
        return redirect("console-tenant", switch.tenant.slug)
    return redirect("console-tenants")


@console_view()
@require_POST
def policy_request(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    tenant = get_tenant_for_user(request, slug)
    form = PolicyForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose the resource type and give a reason; " + form.errors.as_text())
        return redirect("console-tenant", tenant.slug)
    change = override_request(
        tenant=tenant,
        user=request.user,
        resource_type=form.cleaned_data["resource_type"],
        note=form.cleaned_data["note"],
        request_id=request_id(request),
        channel="console",
        **form.changes(),
    )
    if change.widens:
        messages.success(request, "Requested. It widens: a second integration engineer must approve it.")
    else:
        messages.success(request, f"Applied: the policy for {change.resource_type} is narrower now.")
    return redirect("console-tenant", tenant.slug)


@console_view()
@require_POST
def policy_approve(request: HtmxHttpRequest, uid) -> HttpResponse:
    change = get_policy_change_for_user(request, uid)
    form = PolicyApproveForm(request.POST)
    checklist = form.cleaned_data["checklist"] if form.is_valid() else []
    override_approve(
        change=change,
        user=request.user,
        checklist=checklist,
        note=form.cleaned_data.get("note", "") if form.is_valid() else "",
        request_id=request_id(request),
        channel="console",
    )
    messages.success(request, f"Approved: the policy for {change.resource_type} changed.")
    return redirect("console-tenant", change.tenant.slug)


@console_view()
@require_POST
def policy_reject(request: HtmxHttpRequest, uid) -> HttpResponse:
    change = get_policy_change_for_user(request, uid)
    return _turn_down(request, change, override_reject, "Turned down. The policy is unchanged.")


def _turn_down(request: HtmxHttpRequest, change, reject, done: str) -> HttpResponse:
    """A pending widening turned down by a second engineer (or withdrawn): the reason is required."""
    form = NoteForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say why the change is turned down.")
    else:
        reject(
            change=change,
            user=request.user,
            note=form.cleaned_data["note"],
            request_id=request_id(request),
            channel="console",
        )
        messages.success(request, done)
    return redirect("console-tenant", change.tenant.slug)
