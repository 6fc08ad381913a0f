from django.http import HttpResponse
from django.shortcuts import render

from console.decorators import HtmxHttpRequest, console_view
from console.fetch import visible_tenants
from writeback.replay_comparison import sandbox_replay_summary
from writeback.services.shadow import shadow_divergence


@console_view()
def shadow_report(request: HtmxHttpRequest) -> HttpResponse:
    try:
        days = min(max(int(request.GET.get("days", 30)), 1), 365)
    except ValueError:
        days = 30
    tenants = visible_tenants(request)
    report = shadow_divergence(tenants, days=days)
    # Test replays of the same window: copies in test tenants against their originals.
    replays = sandbox_replay_summary(request.user, tenants, since=report.since)
    return render(request, "console/shadow.html", {"report": report, "days": days, "replays": replays})
