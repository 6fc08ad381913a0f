import json
from collections import Counter

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from console.decorators import HtmxHttpRequest, console_view
from console.fetch import get_tenant_for_user, get_write_for_user, render_panel, request_id
from console.forms import NoteForm, ReplayForm, TestReplayForm
from console.views.writes import detail_context
from writeback.models import Write
from writeback.replay_comparison import replay_comparison_get
from writeback.services.operations import write_resolve
from writeback.services.permissions import require
from writeback.services.replay import event_replay, write_replay
from writeback.services.sandbox import replay_into_test
from writeback.states import WriteState


def _form_context(write: Write, form: ReplayForm) -> dict:
    return {"write": write, "form": form, "shadow_only": write.state == WriteState.COMMITTED}


@console_view()
def replay_form(request: HtmxHttpRequest, uid) -> HttpResponse:
    write = get_write_for_user(request, uid)
    require(
        request.user, "replay", write.tenant, object_type="write", object_id=str(write.uid), channel="console"
    )
    form = ReplayForm(
        initial={
            "payload": json.dumps(write.payload, indent=2, ensure_ascii=False),
            "shadow": write.state == WriteState.COMMITTED,
        }
    )
    return render(request, "console/replay.html", _form_context(write, form))


@console_view()
@require_POST
def replay(request: HtmxHttpRequest, uid) -> HttpResponse:
    write = get_write_for_user(request, uid)
    form = ReplayForm(request.POST)
    if not form.is_valid():
        return render(request, "console/replay.html", _form_context(write, form), status=422)
    data = form.cleaned_data
    if data["scope"] == "event":
        return _replay_event(request, write, data)
    new = write_replay(
        write=write,
        user=request.user,
        mode=data["mode"],
        payload=data["payload"],
        reason=data["reason"],
        shadow=data["shadow"],
        request_id=request_id(request),
        channel="console",
    )
    messages.success(request, _replayed_message(new, write, data))
    return redirect("console-write", new.uid)


def _replayed_message(new: Write, write: Write, data: dict) -> str:
    if new.pk == write.pk:
        return "Queued to resend as it was; the worker checks by read first if it may have landed."
    where = "compared with the EHR (shadow)" if data["shadow"] else "sent"
    return f"Replay ({data['mode']}) queued as this new write, to be {where}."


def _replay_event(request: HtmxHttpRequest, write: Write, data: dict) -> HttpResponse:
    rows = event_replay(
        event=write.event,
        user=request.user,
        mode=data["mode"],
        reason=data["reason"],
        shadow=data["shadow"],
        request_id=request_id(request),
        channel="console",
    )
    done = Counter(r["action"] for r in rows)
    reasons = sorted({r["reason"] for r in rows if r["action"] == "left"})
    summary = f"Event replay ({data['mode']}): {done['replayed']} replayed, {done['added']} added"
    summary += f", {done['left']} left alone ({'; '.join(reasons)})." if reasons else "."
    messages.success(request, summary)
    return redirect(f"{reverse('console-writes')}?q={write.event.uid}")


@console_view()
@require_POST
def resolve(request: HtmxHttpRequest, uid) -> HttpResponse:
    """Closes a write by hand: an admin fixed it some other way and says how."""
    write = get_write_for_user(request, uid, related=("event__initiator",))
    form = NoteForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Resolving by hand needs a note saying what was done.")
        if request.htmx:
            return render_panel(
                request,
                "console/write_detail.html#write-main",
                detail_context(request, write, resolve_form=form),
                422,
            )
        return redirect("console-write", write.uid)
    write_resolve(
        write=write,
        user=request.user,
        note=form.cleaned_data["note"],
        request_id=request_id(request),
        channel="console",
    )
    messages.success(request, "Resolved by hand. The note is in the audit trail.")
    if request.htmx:
        write.refresh_from_db()
        return render_panel(request, "console/write_detail.html#write-main", detail_context(request, write))
    return redirect("console-write", write.uid)


@console_view()
@require_POST
def test_replay(request: HtmxHttpRequest, uid) -> HttpResponse:
    """Replays this write (or its whole event) into a test tenant of the same vendor."""
    write = get_write_for_user(request, uid, related=("event",))
    form = TestReplayForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose the test tenant and say why.")
        return redirect("console-write", write.uid)
    copies = replay_into_test(
        event=write.event,
        write=write if form.cleaned_data["scope"] == "write" else None,
        target=get_tenant_for_user(request, form.cleaned_data["target"]),
        user=request.user,
        reason=form.cleaned_data["reason"],
        request_id=request_id(request),
        channel="console",
    )
    messages.success(request, f"Replayed into {form.cleaned_data['target']}: {len(copies)} write(s).")
    return redirect("console-write", copies[0].uid)


@console_view()
def test_replay_comparison(request: HtmxHttpRequest, uid) -> HttpResponse:
    """A test replay beside its original, for people who may see both tenants (anyone else: 404)."""
    comparison = replay_comparison_get(request.user, uid)
    if comparison is None:
        raise Http404("no test replay of this write that you may compare")
    return render(request, "console/test_replays.html", {"comparison": comparison})
