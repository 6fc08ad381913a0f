"""Two separate undo flows, labelled and permitted differently:

- technical rollback (admins, engineers): the write should never have happened; mark it entered-in-error
  or restore the previous value;
- clinical correction (clinicians): the entry was wrong; write the corrected value and retire the old one.

Both show the original event, the current state, and the compensating action that will be written, and
ask for confirmation before anything is queued.
"""

import json

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from console.decorators import HtmxHttpRequest, console_view
from console.fetch import get_task_for_user, get_write_for_user, may, request_id, visible_tenants
from console.forms import CorrectionConfirmForm, CorrectionForm, NoteForm, ReasonConfirmForm
from console.summaries import clinical_summary, event_item_for
from writeback.models import ContractRule, ManualTask, Write
from writeback.services.compensation import compensation_plan, manual_task_confirm, write_compensate
from writeback.services.permissions import require


def _plan(write: Write, kind: str, data: dict | None):
    """The adapter's compensation plan, or the reason there is none (shown, never raised)."""
    try:
        return compensation_plan(write, kind, data), ""
    except (
        Exception
    ) as exc:  # adapters raise ValueError (and vendor paths may raise more) for unplannable cases
        return None, str(exc)


def _base(write: Write) -> dict:
    return {
        "write": write,
        "event": write.event,
        "summary": clinical_summary(
            write.payload, event_item_for(write.event.canonical_payload, write.position)
        ),
    }


@console_view()
def rollback(request: HtmxHttpRequest, uid) -> HttpResponse:
    write = get_write_for_user(request, uid)
    require(
        request.user,
        "rollback",
        write.tenant,
        object_type="write",
        object_id=str(write.uid),
        channel="console",
    )
    plan, problem = _plan(write, "rollback", None)
    context = {**_base(write), "plan": plan, "plan_problem": problem, "form": ReasonConfirmForm()}
    return render(request, "console/rollback.html", context)


@console_view()
@require_POST
def rollback_confirm(request: HtmxHttpRequest, uid) -> HttpResponse:
    write = get_write_for_user(request, uid)
    form = ReasonConfirmForm(request.POST)
    if not form.is_valid():
        plan, problem = _plan(write, "rollback", None)
        context = {**_base(write), "plan": plan, "plan_problem": problem, "form": form}
        return render(request, "console/rollback.html", context, status=422)
    comp = write_compensate(
        write=write,
        user=request.user,
        kind="rollback",
        reason=form.cleaned_data["reason"],
        request_id=request_id(request),
        channel="console",
    )
    messages.success(request, _done_message(comp))
    return redirect("console-write", write.uid)


def _correction_initial(write: Write) -> str:
    """The elements a clinician may correct, prefilled with what was written."""
    rule = ContractRule.objects.filter(resource_type=write.resource_type).first()
    fields = [f for f in (rule.writable_fields if rule else list(write.payload)) if f not in ("identifier",)]
    return json.dumps(
        {f: write.payload[f] for f in fields if f in write.payload}, indent=2, ensure_ascii=False
    )


@console_view()
def correction(request: HtmxHttpRequest, uid) -> HttpResponse:
    """Step 1 (GET): the corrected values; step 2 (POST): the compensating requests they lead to."""
    write = get_write_for_user(request, uid)
    require(
        request.user,
        "correction",
        write.tenant,
        object_type="write",
        object_id=str(write.uid),
        channel="console",
    )
    context = _base(write)
    if request.method != "POST":
        context["form"] = CorrectionForm(initial={"data": _correction_initial(write)})
        return render(request, "console/correction.html", context)
    form = CorrectionForm(request.POST)
    if not form.is_valid():
        context["form"] = form
        return render(request, "console/correction.html", context, status=422)
    plan, problem = _plan(write, "correction", form.cleaned_data["data"])
    context.update(form=form, plan=plan, plan_problem=problem, confirm_form=_confirm_form(form.cleaned_data))
    return render(request, "console/correction.html", context, status=200 if plan else 422)


def _confirm_form(data: dict) -> CorrectionConfirmForm:
    """The second step carries the first step's values, for the person to confirm."""
    return CorrectionConfirmForm(
        initial={"data": json.dumps(data["data"], indent=2), "reason": data["reason"]}
    )


@console_view()
@require_POST
def correction_confirm(request: HtmxHttpRequest, uid) -> HttpResponse:
    write = get_write_for_user(request, uid)
    form = CorrectionConfirmForm(request.POST)
    if not form.is_valid():
        context = _base(write)
        data = form.cleaned_data.get("data") if hasattr(form, "cleaned_data") else None
        plan, problem = _plan(write, "correction", data) if isinstance(data, dict) else (None, "")
        context.update(form=CorrectionForm(request.POST), plan=plan, plan_problem=problem, confirm_form=form)
        return render(request, "console/correction.html", context, status=422)
    comp = write_compensate(
        write=write,
        user=request.user,
        kind="correction",
        reason=form.cleaned_data["reason"],
        data=form.cleaned_data["data"],
        request_id=request_id(request),
        channel="console",
    )
    messages.success(request, _done_message(comp))
    return redirect("console-write", write.uid)


def _done_message(comp) -> str:
    label = comp.get_kind_display()
    if comp.status == comp.Status.MANUAL:
        return f"{label} recorded. The vendor has no API for it: a manual task was created with instructions."
    return f"{label} queued: the compensating write will be sent by the worker."


@console_view()
def task_list(request: HtmxHttpRequest) -> HttpResponse:
    status = request.GET.get("status", "open")
    tasks = (
        ManualTask.objects.filter(tenant__in=visible_tenants(request))
        .select_related("tenant", "write", "compensation", "confirmed_by")
        .order_by("-created_at")
    )
    if status in ManualTask.Status.values:
        tasks = tasks.filter(status=status)
    page = Paginator(tasks, 50).get_page(request.GET.get("page"))
    cards = [
        {"task": t, "can_confirm": may(request, "confirm_manual_task", t.tenant), "form": NoteForm()}
        for t in page.object_list
    ]
    return render(request, "console/tasks.html", {"page": page, "cards": cards, "status": status})


@console_view()
@require_POST
def task_confirm(request: HtmxHttpRequest, uid) -> HttpResponse:
    task = get_task_for_user(request, uid)
    form = NoteForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say what was done in the EHR before confirming the task.")
        return redirect("console-tasks")
    manual_task_confirm(
        task=task,
        user=request.user,
        note=form.cleaned_data["note"],
        request_id=request_id(request),
        channel="console",
    )
    messages.success(request, f"Task confirmed: {task.title}.")
    return redirect("console-tasks")
