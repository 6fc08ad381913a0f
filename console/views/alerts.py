from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Case, Count, IntegerField, Value, When
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from console.decorators import HtmxHttpRequest, console_view
from console.fetch import get_alert_for_user, may, request_id, visible_tenants
from console.forms import NoteForm
from writeback.models import Alert, Severity, Write
from writeback.services.alerts import alert_acknowledge
from writeback.states import CLAIMABLE

SEVERITY_RANK = Case(
    When(severity=Severity.PAGE, then=Value(0)),
    When(severity=Severity.CRITICAL, then=Value(1)),
    When(severity=Severity.WARNING, then=Value(2)),
    default=Value(3),
    output_field=IntegerField(),
)
STATUSES = [("open", "Open"), ("acknowledged", "Acknowledged"), ("all", "All")]


@console_view()
def alert_list(request: HtmxHttpRequest) -> HttpResponse:
    status = request.GET.get("status", "open")
    severity = request.GET.get("severity", "")
    alerts = Alert.objects.filter(tenant__in=visible_tenants(request)).select_related(
        "tenant", "write", "acknowledged_by"
    )
    if status == "open":
        alerts = alerts.filter(acknowledged_at__isnull=True)
    elif status == "acknowledged":
        alerts = alerts.filter(acknowledged_at__isnull=False)
    if severity in Severity.values:
        alerts = alerts.filter(severity=severity)
    alerts = alerts.defer("write__payload").annotate(rank=SEVERITY_RANK).order_by("rank", "-created_at")
    page = Paginator(alerts, 50).get_page(request.GET.get("page"))
    held = [(a.tenant_id, a.resource_type) for a in page.object_list if a.holds_queue and a.is_open]
    waiting = {}
    if held:
        for r in (
            Write.objects.filter(tenant_id__in={t for t, _ in held}, resource_type__in={r for _, r in held})
            .filter(state__in=CLAIMABLE)
            .values("tenant_id", "resource_type")
            .annotate(n=Count("id"))
        ):
            waiting[(r["tenant_id"], r["resource_type"])] = r["n"]
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
