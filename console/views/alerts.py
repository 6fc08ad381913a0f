from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from console.decorators import HtmxHttpRequest, console_view, not_done
from console.fetch import get_alert_for_user, get_tenant_for_user, may, request_id, visible_tenants
from console.forms import AlertRouteForm, NoteForm
from writeback.errors import DomainError
from writeback.models import AlertState, Severity
from writeback.selectors import (
    alert_deliveries,
    alert_routes_visible_to,
    alerts_for_list,
    held_queue_waiting,
)
from writeback.services.alert_delivery import route_add, route_remove
from writeback.services.alerts import alert_acknowledge, alert_resolve

STATUSES = [("open", "Firing"), ("acknowledged", "Acknowledged"), ("resolved", "Resolved"), ("all", "All")]


@console_view()
def alert_list(request: HtmxHttpRequest) -> HttpResponse:
    status = request.GET.get("status", "open")
    severity = request.GET.get("severity", "")
    alerts = alerts_for_list(visible_tenants(request), status=status, severity=severity)
    page = Paginator(alerts, 50).get_page(request.GET.get("page"))
    waiting = held_queue_waiting(page.object_list)
    cards = [
        {
            "alert": a,
            "waiting": waiting.get((a.tenant_id, a.resource_type), 0),
            "can_ack": a.is_open and may(request, "acknowledge_alert", a.tenant),
        }
        for a in page.object_list
    ]
    context = {"page": page, "cards": cards, "status": status, "severity": severity, "statuses": STATUSES}
    context |= {"severities": Severity.choices, "form": NoteForm()}
    context["can_manage_routes"] = may(request, "manage_alert_routes")
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


@console_view()
def alert_detail(request: HtmxHttpRequest, uid) -> HttpResponse:
    alert = get_alert_for_user(request, uid)
    context = {
        "a": alert,
        "deliveries": alert_deliveries(alert),
        "can_ack": alert.is_open and may(request, "acknowledge_alert", alert.tenant),
        "can_resolve": alert.state != AlertState.RESOLVED and may(request, "resolve_alert", alert.tenant),
        "form": NoteForm(),
    }
    return render(request, "console/alert_detail.html", context)


@console_view()
@require_POST
def alert_resolve_view(request: HtmxHttpRequest, uid) -> HttpResponse:
    alert = get_alert_for_user(request, uid)
    form = NoteForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say why the alert is resolved.")
        return redirect("console-alert", uid=alert.uid)
    alert_resolve(
        alert=alert,
        actor=request.user,
        note=form.cleaned_data["note"],
        request_id=request_id(request),
        channel="console",
    )
    messages.success(request, "Resolved. The alert's routes are told it is over.")
    return redirect("console-alert", uid=alert.uid)


def _routes_page(request: HtmxHttpRequest, form: AlertRouteForm, status: int = 200, secret: str = ""):
    context = {"routes": alert_routes_visible_to(request.user), "form": form, "secret": secret}
    return render(request, "console/alert_routes.html", context, status=status)


def _route_form(request: HtmxHttpRequest, data=None) -> AlertRouteForm:
    slugs = [t.slug for t in visible_tenants(request).order_by("slug")]
    return AlertRouteForm(data, tenants=slugs)


@console_view("manage_alert_routes")
def alert_routes(request: HtmxHttpRequest) -> HttpResponse:
    return _routes_page(request, _route_form(request))


@console_view("manage_alert_routes")
@require_POST
def alert_route_add_view(request: HtmxHttpRequest) -> HttpResponse:
    form = _route_form(request, request.POST)
    if not form.is_valid():
        return _routes_page(request, form, status=400)
    data = form.cleaned_data
    target = {"webhook" if data["kind"] == "webhook" else "email": data["target"]}
    try:
        route, secret = route_add(
            name=data["name"],
            actor=request.user,
            tenant=get_tenant_for_user(request, data["tenant"]),
            min_severity=data["min_severity"],
            escalation=data["escalation"],
            **target,
        )
    except DomainError as exc:
        form.add_error("target" if exc.path in ("url", "email", "") else "name", str(exc))
        return _routes_page(request, form, status=400 if exc.status < 500 else 409)
    messages.success(request, f"Route {route.name} added.")
    # The secret is rendered into this one response, never stored in the session or a message.
    return _routes_page(request, _route_form(request), status=201, secret=secret)


@console_view("manage_alert_routes")
@require_POST
def alert_route_remove_view(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    route = alert_routes_visible_to(request.user).filter(name=slug, tenant__isnull=False).first()
    if route is None:
        return not_done(request, "No such route among your tenants' routes.", status=404)
    route_remove(name=route.name, actor=request.user)
    messages.success(request, f"Route {route.name} removed.")
    return redirect("console-alert-routes")
