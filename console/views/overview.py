from django.http import HttpResponse
from django.shortcuts import render

from console import charts
from console.decorators import HtmxHttpRequest, console_view
from console.fetch import visible_tenants
from writeback.services.metrics import dashboard
from writeback.states import WriteState

# Columns of the per-tenant state table, in the order a write moves through them.
STATE_COLUMNS = [
    (WriteState.AWAITING_APPROVAL, "Approval"),
    (WriteState.HELD_AUTHORIZATION, "Held"),
    (WriteState.PENDING, "Pending"),
    (WriteState.FAILED_RETRYABLE, "Retrying"),
    (WriteState.OUTCOME_UNKNOWN, "Unknown"),
    (WriteState.COMMITTED, "Committed"),
    (WriteState.FAILED_TERMINAL, "Failed"),
    (WriteState.CONFLICT, "Conflict"),
    (WriteState.REJECTED, "Rejected"),
    (WriteState.COMPENSATED, "Compensated"),
    (WriteState.SUPERSEDED, "Superseded"),
    (WriteState.RESOLVED, "Resolved"),
    (WriteState.SHADOWED, "Shadowed"),
    (WriteState.PREVIEWED, "Dry run"),
]


# Always shown; the other states get a column only when some write is in them.
ALWAYS = {WriteState.AWAITING_APPROVAL, WriteState.PENDING, WriteState.COMMITTED, WriteState.FAILED_TERMINAL}


@console_view()
def overview(request: HtmxHttpRequest) -> HttpResponse:
    board = dashboard(visible_tenants(request))
    context = {
        "board": board,
        "states": [(s, label) for s, label in STATE_COLUMNS if s in ALWAYS or board.state_totals.get(s)],
        "outcomes_chart": charts.hourly_outcomes(board),
        "events_chart": charts.hourly_events(board),
        "latency_chart": charts.latency_bars(board),
    }
    # The dashboard polls itself: htmx asks for the partial only.
    template = "console/overview.html#dashboard" if request.htmx else "console/overview.html"
    return render(request, template, context)
