from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from console.decorators import HtmxHttpRequest, console_view
from console.fetch import get_alert_for_user, may, request_id, visible_tenants
from console.forms import NoteForm
from writeback.models import Severity
from writeback.selectors import alerts_for, held_queue_sizes
from writeback.services.alerts import alert_acknowledge

STATUSES = [("open", "Open"), ("acknowledged", "Acknowledged"), ("all", "All")]


@console_view()
def alert_list(request: HtmxHttpRequest) -> HttpResponse:
    status = request.GET.get("status", "open")
    severity = request.GET.get("severity", "")
    alerts = alerts_for(visible_tenants(request), status=status, severity=severity)
    page = Paginator(alerts, 50).get_page(request.GET.get("page"))
    waiting = held_queue_sizes(page.object_list)
    cards = [
        {
            "alert": a,
            "waiting": waiting.get((a.tenant_id, a.resource_type), 0),
            "can_ack": a.is_open and may(request, "acknowledge_alert", a.tenant),
        }
        for a in page.object_list
    ]
    context = {
        "page": page,
        "cards": cards,
        "status": status,
        "severity": severity,
        "statuses": STATUSES,
        "severities": Severity.choices,
        "form": NoteForm(),
    }
    return render(request, "console/alerts.html", context)


@console_view()
@require_POST
def alert_ack(request: HtmxHttpRequest, uid) -> HttpResponse:
    alert = get_alert_for_user(request, uid)
    form = NoteForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say what was done about the alert before acknowledging it.")
        return redirect("console-alerts")
    alert = alert_acknowledge(
        alert=alert,
        user=request.user,
        note=form.cleaned_data["note"],
        request_id=request_id(request),
        channel="console",
    )
    if alert.holds_queue:
        messages.success(
            request,
            f"Acknowledged. The {alert.tenant.slug} × {alert.resource_type} queue is released: "
            "held writes will be sent.",
        )
    else:
        messages.success(request, "Acknowledged.")
    return redirect("console-alerts")
