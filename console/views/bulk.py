"""Bulk replay: select failed writes, see how many and a sample, start at a capped rate, watch, abort."""

import uuid

from django.contrib import messages
from django.http import HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from console.decorators import HtmxHttpRequest, console_view
from console.fetch import get_bulk_for_user, request_id, visible_tenants
from console.forms import BulkStartForm, ConsoleWriteFilter
from writeback.models import BulkItem
from writeback.selectors import writes_visible_to
from writeback.services.bulk import (
    bulk_abort,
    bulk_replay_preview,
    bulk_replay_start,
    worker_stalled,
)


def _selected(request: HtmxHttpRequest):
    """Writes picked by checkbox (uid), or all those matching the list's filters (filter=querystring)."""
    writes = writes_visible_to(request.user)
    uids = [u for u in request.POST.getlist("uid") if u]
    if uids:
        valid = []
        for u in uids[:1000]:
            try:
                valid.append(uuid.UUID(u))
            except ValueError:
                continue
        return writes.filter(uid__in=valid), ""
    query = request.POST.get("filter", "")
    filters = ConsoleWriteFilter(QueryDict(query), queryset=writes, tenants=list(visible_tenants(request)))
    return (filters.qs if filters.is_valid() else writes.none()), query


@console_view()
@require_POST
def bulk_preview(request: HtmxHttpRequest) -> HttpResponse:
    writes, query = _selected(request)
    preview = bulk_replay_preview(
        user=request.user, writes=writes, request_id=request_id(request), channel="console"
    )
    form = BulkStartForm(initial={"rate": 2.0})
    return render(request, "console/bulk_preview.html", {"preview": preview, "form": form, "query": query})


@console_view()
@require_POST
def bulk_start(request: HtmxHttpRequest) -> HttpResponse:
    writes, query = _selected(request)
    form = BulkStartForm(request.POST)
    if not form.is_valid():
        preview = bulk_replay_preview(user=request.user, writes=writes, channel="console")
        return render(
            request,
            "console/bulk_preview.html",
            {"preview": preview, "form": form, "query": query},
            status=422,
        )
    op = bulk_replay_start(
        user=request.user,
        writes=writes,
        reason=form.cleaned_data["reason"],
        rate_per_second=form.cleaned_data["rate"],
        request_id=request_id(request),
        channel="console",
    )
    messages.success(
        request, f"Bulk replay of {op.total} writes started at {op.rate_per_second:g} per second."
    )
    return redirect("console-bulk", op.uid)


@console_view()
def bulk_detail(request: HtmxHttpRequest, uid) -> HttpResponse:
    op = get_bulk_for_user(request, uid)
    items = list(
        BulkItem.objects.filter(operation=op)
        .select_related("write__tenant", "result_write")
        .defer("write__payload", "result_write__payload")
        .order_by("position")[:500]
    )
    context = {"op": op, "items": items, "worker_stalled": worker_stalled(op)}
    if request.htmx:
        response = render(request, "console/bulk.html#progress", context)
        # The page stops asking once the operation is over.
        return response if op.is_running else HttpResponseStopPolling(response.content)
    return render(request, "console/bulk.html", context)


@console_view()
@require_POST
def bulk_abort_view(request: HtmxHttpRequest, uid) -> HttpResponse:
    op = get_bulk_for_user(request, uid)
    op = bulk_abort(op=op, user=request.user, request_id=request_id(request), channel="console")
    messages.success(request, f"Aborted: {op.skipped} writes were not replayed.")
    return redirect("console-bulk", op.uid)
