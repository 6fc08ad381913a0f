from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from console.decorators import HtmxHttpRequest, console_view
from console.fetch import get_write_for_user, request_id, visible_tenants
from console.forms import AuditSearchForm
from writeback.models import AuditAction
from writeback.selectors import audit_search
from writeback.services.audit_export import audit_chain_check, last_chain_check, write_export


@console_view("view_audit")
def audit_log(request: HtmxHttpRequest) -> HttpResponse:
    tenants = list(visible_tenants(request).order_by("slug"))
    slugs = [t.slug for t in tenants]
    form = AuditSearchForm(request.GET or None, tenants=tenants)
    # Entries of the person's tenants, and the system-wide ones (no tenant).
    entries = audit_search(slugs, form.cleaned_data if form.is_bound and form.is_valid() else None)
    page = Paginator(entries, 50).get_page(request.GET.get("page"))
    context = {
        "form": form,
        "page": page,
        "actions": AuditAction.values,
        "last_check": last_chain_check(),
        "query": request.GET.urlencode(),
    }
    template = "console/audit.html#entries" if request.htmx else "console/audit.html"
    return render(request, template, context)


@console_view("view_audit")
@require_POST
def audit_verify(request: HtmxHttpRequest) -> HttpResponse:
    report = audit_chain_check(user=request.user, request_id=request_id(request), channel="console")
    if report.ok:
        messages.success(request, f"Chain verified: {report.checked} entries, no alteration found.")
    else:
        messages.error(request, f"Chain broken at entry #{report.broken_seq}: {report.reason}.")
    return redirect("console-audit")


@console_view()
def write_export_view(request: HtmxHttpRequest, uid) -> HttpResponse:
    write = get_write_for_user(request, uid)
    fmt = request.GET.get("format", "json")
    body = write_export(
        write=write, user=request.user, fmt=fmt, request_id=request_id(request), channel="console"
    )
    response = JsonResponse(body, json_dumps_params={"indent": 2, "ensure_ascii": False})
    name = f"write-{write.uid}-{'audit' if fmt == 'json' else 'fhir-bundle'}.json"
    if fmt == "fhir":
        response["Content-Type"] = "application/fhir+json"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
