from django.http import HttpResponse
from django.shortcuts import render

from console.decorators import HtmxHttpRequest, console_view
from console.fetch import visible_tenants
from writeback.services.shadow import shadow_divergence


@console_view()
def shadow_report(request: HtmxHttpRequest) -> HttpResponse:
    try:
        days = min(max(int(request.GET.get("days", 30)), 1), 365)
    except ValueError:
        days = 30
    report = shadow_divergence(visible_tenants(request), days=days)
    return render(request, "console/shadow.html", {"report": report, "days": days})
