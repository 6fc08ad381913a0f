from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from console.buttons import four_eyes_note
from console.decorators import HtmxHttpRequest, console_view
from console.fetch import get_write_for_user, may, render_panel, request_id
from console.forms import RationaleForm
from console.summaries import clinical_summary, event_item_for
from console.views.writes import detail_context
from writeback import selectors
from writeback.models import Write
from writeback.services import approvals
from writeback.services.ehr_reads import ehr_read_chart
from writeback.states import WriteState

PAGE_SIZE = 20


def _card(
    request: HtmxHttpRequest, write: Write, form: RationaleForm | None = None, decided: str = ""
) -> dict:
    how = approvals.shaped_by(write, request.user)
    return {
        "write": write,
        "summary": clinical_summary(
            write.payload, event_item_for(write.event.canonical_payload, write.position)
        ),
        "can_decide": may(request, "approve", write.tenant),
        "can_read_ehr": may(request, "read_ehr", write.tenant),
        "decidable": write.state in approvals.DECIDABLE,
        "held": write.state == WriteState.HELD_AUTHORIZATION,
        "four_eyes": four_eyes_note(how) if how else "",
        "form": form,
        "decided": decided,
        "ttl_hours": settings.WRITEBACK_APPROVAL_TTL_HOURS,
    }


@console_view()
def approval_queue(request: HtmxHttpRequest) -> HttpResponse:
    page = Paginator(selectors.approval_queue(request.user), PAGE_SIZE).get_page(request.GET.get("page"))
    cards = [_card(request, w) for w in page.object_list]
    context = {"page": page, "cards": cards, "ttl_hours": settings.WRITEBACK_APPROVAL_TTL_HOURS}
    template = "console/approvals.html#queue" if request.htmx else "console/approvals.html"
    return render(request, template, context)


@console_view()
@require_http_methods(["GET", "POST"])
def write_chart(request: HtmxHttpRequest, uid) -> HttpResponse:
    """The proposed change next to what the chart holds now. GET shows the button; only a POST reads
    the EHR (once: role, rate limit and audit in `ehr_read_chart`)."""
    write = get_write_for_user(request, uid)
    chart = None
    if request.method == "POST":
        chart = ehr_read_chart(write=write, user=request.user, request_id=request_id(request))
    context = {"write": write, "chart": chart, "can_read_ehr": may(request, "read_ehr", write.tenant)}
    template = "console/write_chart.html#chart" if request.htmx else "console/write_chart.html"
    return render(request, template, context)


def _decide(request: HtmxHttpRequest, uid, decision: str) -> HttpResponse:
    write = get_write_for_user(request, uid, related=("event__initiator",))
    held = write.state == WriteState.HELD_AUTHORIZATION
    form = RationaleForm(request.POST)
    from_queue = request.POST.get("from") == "queue"
    if not form.is_valid():
        messages.error(request, "A rationale is required.")
        return _answer(request, write, from_queue, status=422, form=form, decision=decision)
    service = approvals.write_approve if decision == "approve" else approvals.write_reject
    service(
        write=write,
        user=request.user,
        rationale=form.cleaned_data["rationale"],
        request_id=request_id(request),
        channel="console",
    )
    write.refresh_from_db()
    if decision == "approve":
        messages.success(
            request,
            f"{'Re-approved' if held else 'Approved'}. {write.resource_type} is queued to send to "
            f"{write.tenant.slug}.",
        )
    else:
        messages.success(request, f"Rejected. Nothing will be written for this {write.resource_type}.")
    return _answer(request, write, from_queue, decided=decision)


def _answer(
    request: HtmxHttpRequest,
    write: Write,
    from_queue: bool,
    *,
    status: int = 200,
    form: RationaleForm | None = None,
    decision: str = "",
    decided: str = "",
) -> HttpResponse:
    if not request.htmx:
        return redirect(
            "console-approvals" if from_queue else "console-write", *([] if from_queue else [write.uid])
        )
    if from_queue:
        context = _card(request, write, form=form, decided=decided)
        context["decision"] = decision
        return render_panel(request, "console/approvals.html#card", context, status=status)
    forms = {f"{decision}_form": form} if form is not None else {}
    return render_panel(
        request, "console/write_detail.html#write-main", detail_context(request, write, **forms), status
    )


@console_view()
@require_POST
def approve(request: HtmxHttpRequest, uid) -> HttpResponse:
    return _decide(request, uid, "approve")


@console_view()
@require_POST
def reject(request: HtmxHttpRequest, uid) -> HttpResponse:
    return _decide(request, uid, "reject")
