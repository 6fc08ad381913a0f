from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from console import timeline
from console.buttons import write_actions
from console.decorators import HtmxHttpRequest, console_view
from console.fetch import get_write_for_user, may, request_id, visible_tenant_ids, visible_tenants
from console.forms import ConsoleWriteFilter, NoteForm, RationaleForm
from console.summaries import clinical_summary, event_item_for
from writeback.models import Write
from writeback.replay_comparison import comparison_links
from writeback.selectors import write_history, write_page, write_total, writes_visible_to
from writeback.services.ehr_reads import ehr_read_plan
from writeback.services.permissions import ADMIN, roles_of
from writeback.services.plans import stream_blocker, write_plan
from writeback.services.sandbox import sandbox_targets
from writeback.states import WriteState

PAGE_SIZE = 50
# Large JSON columns the list never shows: not fetched, so a page stays one light query. (`warnings`,
# a few short sentences, is fetched: the list marks rows that have some.)
LIST_DEFERRED = (
    "payload",
    "preview",
    "divergence",
    "context",
    "readback_diff",
    "event__raw_payload",
    "event__canonical_payload",
    "event__consent_snapshot",
)
# writeback.selectors.WriteDetail fields the template reads under their own names.
DETAIL_READS = (
    "attempts",
    "entries",
    "conflicts",
    "open_conflict",
    "compensations",
    "related",
    "live_approval",
)
BULK_STATES = (WriteState.FAILED_TERMINAL, WriteState.FAILED_RETRYABLE)


@console_view()
def write_list(request: HtmxHttpRequest) -> HttpResponse:
    tenants = list(visible_tenants(request).order_by("slug"))
    writes = writes_visible_to(request.user).defer(*LIST_DEFERRED)
    filters = ConsoleWriteFilter(request.GET or None, queryset=writes, tenants=tenants)
    valid = filters.is_bound and filters.is_valid()
    rows = filters.qs if valid else writes
    total = write_total(rows, tenants, filters.form.cleaned_data if valid else {})
    get = request.GET.get
    context = {
        "filters": filters,
        "page": write_page(rows, after=get("after"), before=get("before"), size=PAGE_SIZE, total=total),
        # Bulk replay is an admin's call (the service checks it again).
        "can_bulk": may(request, "replay") and (request.user.is_superuser or ADMIN in roles_of(request.user)),
        "bulk_states": BULK_STATES,
        "query": request.GET.urlencode(),
    }
    template = "console/write_list.html#write-table" if request.htmx else "console/write_list.html"
    return render(request, template, context)


def detail_context(request: HtmxHttpRequest, write: Write, **forms) -> dict:
    """Everything the write page shows (a constant number of queries, whatever the write's history)."""
    event, reads = write.event, write_history(write)
    return {
        "write": write,
        "event": event,
        "summary": clinical_summary(write.payload, event_item_for(event.canonical_payload, write.position)),
        "timeline": timeline.build(write, event, reads.attempts, reads.approvals, reads.entries),
        **{name: getattr(reads, name) for name in DETAIL_READS},
        "blocker": stream_blocker(write),
        "actions": write_actions(
            write,
            request.user,
            open_conflict=reads.open_conflict,
            compensation=reads.active_compensation,
            may=lambda action, tenant: may(request, action, tenant),
        ),
        "approve_form": forms.get("approve_form") or RationaleForm(),
        "reject_form": forms.get("reject_form") or RationaleForm(),
        "resolve_form": forms.get("resolve_form") or NoteForm(),
        "ttl_hours": settings.WRITEBACK_APPROVAL_TTL_HOURS,
        "can_read_ehr": may(request, "read_ehr", write.tenant),
        **_test_replays(request, write),
    }


def _test_replays(request: HtmxHttpRequest, write: Write) -> dict:
    """The test tenants this write may be replayed into, and its test-replay lineage to link to."""
    targets = (
        sandbox_targets(write.tenant, visible_tenants(request))
        if may(request, "replay", write.tenant)
        else []
    )
    links = comparison_links(request.user, write, sandboxes=targets, visible_ids=visible_tenant_ids(request))
    return {"test_targets": targets, "test_replays": links}


@console_view()
def write_detail(request: HtmxHttpRequest, uid) -> HttpResponse:
    write = get_write_for_user(
        request, uid, related=("supersedes", "compensates", "replay_of", "compensation", "event__initiator")
    )
    return render(request, "console/write_detail.html", detail_context(request, write))


@console_view()
@require_http_methods(["GET", "POST"])
def write_plan_view(request: HtmxHttpRequest, uid) -> HttpResponse:
    """The exact requests the worker will make. GET plans without reading the EHR (for anyone who may
    see the write); POST also reads the target once to predict the outcome (role, rate limit, audit)."""
    write = get_write_for_user(request, uid)
    read = request.method == "POST"
    if read:
        plan = ehr_read_plan(write=write, user=request.user, request_id=request_id(request))
    else:
        plan = write_plan(write, read_target=False)
    context = {
        "write": write,
        "plan": plan,
        "read": read,
        "can_read_ehr": may(request, "read_ehr", write.tenant),
    }
    template = "console/write_plan.html#plan" if request.htmx else "console/write_plan.html"
    return render(request, template, context)
