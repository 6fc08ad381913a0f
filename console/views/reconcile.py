"""The reconciliation page: what the last sweeps found, and the decisions people make about it."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from console.decorators import HtmxHttpRequest, console_view
from console.fetch import get_finding_for_user, may, request_id, visible_tenants
from console.forms import NoteForm
from writeback.models import ReconciliationFinding
from writeback.selectors import reconciliation_counts, reconciliation_findings, reconciliation_runs
from writeback.services.reconcile import ACTION_PERMISSION, ACTIONS, finding_decide

DONE = {
    "adopt": "Adopted: the write is committed as found at the EHR.",
    "resend": "Resent: a replay of the write is queued.",
    "accept": "Accepted: the EHR's state stands.",
    "correct": "Correction requested: a clinician's task is open.",
}


STATES = [*ReconciliationFinding.State.choices, ("all", "All")]


def _offered(request: HtmxHttpRequest, finding: ReconciliationFinding) -> list[str]:
    """The actions this finding's kind allows and the person's role holds (the service checks again)."""
    if not finding.is_open:
        return []
    return [a for a in ACTIONS[finding.kind] if may(request, ACTION_PERMISSION[a], finding.tenant)]


@console_view()
def reconciliation(request: HtmxHttpRequest) -> HttpResponse:
    kind, state = request.GET.get("kind", ""), request.GET.get("state", "open")
    tenants = visible_tenants(request)
    findings = reconciliation_findings(
        tenants, kind=kind, state=state, tenant_slug=request.GET.get("tenant", "")
    )
    page = Paginator(findings, 50).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "rows": [{"f": f, "actions": _offered(request, f)} for f in page.object_list],
        "kind": kind,
        "state": state,
        "kinds": ReconciliationFinding.Kind.choices,
        "states": STATES,
        "counts": reconciliation_counts(tenants),
        "runs": reconciliation_runs(tenants),
    }
    return render(request, "console/reconciliation.html", context)


@console_view()
@require_POST
def finding_action(request: HtmxHttpRequest, uid, action: str) -> HttpResponse:
    finding = get_finding_for_user(request, uid)
    form = NoteForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say why before deciding (a note is required).")
        return redirect("console-reconciliation")
    finding_decide(
        finding=finding,
        user=request.user,
        action=action,
        note=form.cleaned_data["note"],
        request_id=request_id(request),
        channel="console",
    )
    messages.success(request, DONE.get(action, "Done."))
    return redirect("console-reconciliation")
