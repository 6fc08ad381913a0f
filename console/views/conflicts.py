from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from console.decorators import HtmxHttpRequest, console_view
from console.fetch import get_conflict_for_user, may, request_id, visible_tenants
from console.forms import conflict_choices
from writeback.errors import DomainError
from writeback.models import Conflict
from writeback.services.conflicts import conflict_preview, conflict_resolve


@console_view()
def conflict_list(request: HtmxHttpRequest) -> HttpResponse:
    conflicts = (
        Conflict.objects.filter(write__tenant__in=visible_tenants(request), resolved_at__isnull=True)
        .select_related("write__tenant", "write__event")
        .defer("base", "ours", "theirs", "write__payload", "write__event__raw_payload")
        .order_by("-created_at")
    )
    page = Paginator(conflicts, 50).get_page(request.GET.get("page"))
    return render(request, "console/conflicts.html", {"page": page})


def _rows(conflict: Conflict, data=None, errors: dict[int, str] | None = None) -> list[dict]:
    """The diff rows with what the form holds for each (defaults: ours where only we changed the field,
    theirs where only the EHR did: a clinician's newer edit is kept unless someone decides otherwise)."""
    rows = []
    for i, row in enumerate(conflict.diff):
        default = {"ours": "ours", "none": "ours", "theirs": "theirs"}.get(row.get("changed"), "")
        choice = data.get(f"choice-{i}", default) if data is not None else default
        value_text = data.get(f"value-{i}", "") if data is not None else ""
        rows.append(
            {**row, "index": i, "choice": choice, "value_text": value_text, "error": (errors or {}).get(i)}
        )
    return rows


def _context(
    request: HtmxHttpRequest, conflict: Conflict, data=None, errors=None, preview=None, problem=""
) -> dict:
    return {
        "conflict": conflict,
        "write": conflict.write,
        "rows": _rows(conflict, data, errors),
        "preview": preview,
        "preview_problem": problem,
        "errors_list": [(r["path"], r["error"]) for r in _rows(conflict, data, errors) if r["error"]],
        "can_resolve": may(request, "resolve_conflict", conflict.write.tenant)
        and conflict.resolved_at is None,
    }


@console_view()
def conflict_detail(request: HtmxHttpRequest, uid) -> HttpResponse:
    conflict = get_conflict_for_user(request, uid)
    return render(request, "console/conflict.html", _context(request, conflict))


@console_view()
@require_POST
def conflict_preview_view(request: HtmxHttpRequest, uid) -> HttpResponse:
    """The resource the chosen resolution would send (writes nothing)."""
    conflict = get_conflict_for_user(request, uid)
    choices, errors = conflict_choices(conflict.diff, request.POST)
    preview, problem = None, ""
    if not errors:
        try:
            preview = conflict_preview(conflict, choices)
        except DomainError as exc:
            problem = str(exc)
    context = _context(request, conflict, request.POST, errors, preview, problem)
    status = 422 if errors or problem else 200
    template = "console/conflict.html#preview" if request.htmx else "console/conflict.html"
    return render(request, template, context, status=status)


@console_view()
@require_POST
def conflict_resolve_view(request: HtmxHttpRequest, uid) -> HttpResponse:
    conflict = get_conflict_for_user(request, uid)
    choices, errors = conflict_choices(conflict.diff, request.POST)
    if errors:
        messages.error(request, "Some fields need a decision before the resolution can be queued.")
        context = _context(request, conflict, request.POST, errors)
        return render(request, "console/conflict.html", context, status=422)
    new = conflict_resolve(
        conflict=conflict,
        user=request.user,
        choices=choices,
        request_id=request_id(request),
        channel="console",
    )
    messages.success(
        request,
        f"Resolution queued as a new write with If-Match on version {conflict.theirs_version or '?'}.",
    )
    if request.htmx:
        return HttpResponseClientRedirect(reverse("console-write", args=[new.uid]))
    return redirect("console-write", new.uid)
