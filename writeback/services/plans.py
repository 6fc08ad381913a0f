"""The plan view: exactly what the worker will send for a write, and what will most likely happen.

The requests come from the tenant's adapter (`adapter.plan(build_request(write))`, no network). The
prediction reads the target once (`adapter.current_for`): an update based on the version the EHR still
holds applies; one based on an older version will meet a 412 and come back as a conflict; a create whose
identifier is already on the target is recorded as landed without sending again. Holds, the tenant
mode, stream order, approval and the second check (consent, capability, the vendor's context) come
first: they decide whether anything is sent at all, and they are the worker's own decision
(`services.decide.next_step`), so the page and the worker cannot disagree.
"""

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from adapters.identifiers import carries_identifier
from writeback import diffs
from writeback.models import Write
from writeback.services.alerts import outbound_refusals_record
from writeback.services.contract import TenantContract
from writeback.services.decide import (
    APPROVAL,
    FINAL_KIND,
    HELD,
    HELD_AUTHORIZATION,
    PARKED,
    PREVIEW,
    REFUSE,
    SHADOW,
    Step,
    load_inputs,
)
from writeback.services.holds import current_holds
from writeback.services.requests import build_request, identity_uid
from writeback.services.targets import adapter_for
from writeback.states import FINAL, STREAM_BLOCKING, WriteState

log = logging.getLogger(__name__)
NOT_FIELDS = ("resourceType", "id", "meta", "identifier")


@dataclass
class PlannedCall:
    method: str
    url: str
    headers: dict[str, str]
    body: str
    note: str


@dataclass
class Prediction:
    # applies | creates | landed | conflict | not-sent | refused | held | parked | waiting | final |
    # unknown
    kind: str
    title: str
    detail: str = ""


@dataclass
class ChartView:
    """What the EHR holds that this write would change or add to, field by field."""

    resource: dict[str, Any] | None = None
    version: str = ""
    error: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def differing(self) -> int:
        return sum(1 for r in self.rows if r["differs"])


@dataclass
class WritePlan:
    requests: list[PlannedCall]
    prediction: Prediction
    chart: ChartView | None
    error: str = ""
    guarantees: list[str] = field(default_factory=list)
    step: Step | None = None  # the worker's decision the prediction comes from


def stream_blocker(write: Write) -> Write | None:
    """The earliest open write ahead of this one in its stream: streams go out in event order, so a
    write parks behind it until it is settled (sent, resolved or superseded)."""
    if write.state in FINAL:
        return None
    return (
        Write.objects.filter(stream_key=write.stream_key, id__lt=write.id, state__in=STREAM_BLOCKING)
        .only("uid", "state", "last_error", "resource_type", "stream_key")
        .order_by("id")
        .first()
    )


def write_plan(
    write: Write, *, read_target: bool = True, actor: Any = "system", request_id: str = ""
) -> WritePlan:
    """The plan; with `read_target`, the EHR is read once (callers audit that read: see
    `writeback.services.ehr_reads`). `actor` is named on any refused request's alert."""
    try:
        adapter = adapter_for(write.tenant)
    except Exception as exc:  # an unknown or broken vendor path: say so instead of failing the page
        return WritePlan([], Prediction("unknown", "No adapter for this tenant", str(exc)), None, str(exc))
    try:
        req = build_request(write)
        try:
            planned = adapter.plan(req)
        except Exception as exc:  # a vendor path that cannot plan this write must not break the page
            log.warning("planning write %s failed: %s", write.uid, exc)
            return WritePlan(
                [], Prediction("unknown", "The adapter cannot plan this write", str(exc)), None, str(exc)
            )
        calls = [
            PlannedCall(
                method=p.method,
                url=p.url,
                headers=dict(p.headers or {}),
                body=_pretty(p.body),
                note=p.note,
            )
            for p in planned
        ]
        guarantees = _guarantees(calls)
        step = decide_for_plan(write, adapter, req)
        gate = _gate(write, step)
        chart = None
        if read_target and write.state not in FINAL and gate.kind not in ("not-sent",):
            chart = _chart(write, adapter, req)
        prediction = gate if gate.kind != "ok" else _predict(write, chart)
        if step.check_first and gate.kind in ("refused", "waiting") and chart is not None:
            # The worker looks the write up before anything else: if it landed, it is recorded as such.
            found = _predict(write, chart)
            if found.kind == "landed":
                prediction = found
        if gate.kind in ("held", "parked", "waiting") and chart is not None:
            then = _predict(write, chart)
            prediction.detail = (
                f"{prediction.detail} Once released: {then.title.lower()}. {then.detail}".strip()
            )
        return WritePlan(calls, prediction, chart, guarantees=guarantees, step=step)
    finally:
        _done_with(write, adapter, actor, request_id)


def compare_with_chart(write: Write, *, actor: Any = "system", request_id: str = "") -> ChartView:
    """The current chart next to what this write proposes (the approval queue's diff); reads the EHR."""
    try:
        adapter = adapter_for(write.tenant)
    except Exception as exc:
        return ChartView(error=f"no adapter for this tenant: {exc}", rows=_rows(write, None))
    try:
        return _chart(write, adapter, build_request(write))
    finally:
        _done_with(write, adapter, actor, request_id)


def _done_with(write: Write, adapter, actor: Any, request_id: str) -> None:
    try:
        # A next link or redirect outside the tenant was not followed: alert on it like the worker does.
        outbound_refusals_record(
            write.tenant, adapter.take_refusals(), write=write, actor=actor, request_id=request_id
        )
    finally:
        adapter.close()


def _chart(write: Write, adapter, req) -> ChartView:
    try:
        current = adapter.current_for(req)
    except Exception as exc:  # network trouble is shown to the operator, not raised
        return ChartView(error=f"reading the EHR failed: {exc}")
    if current.resource is None:
        message = current.message if current.outcome else ""
        return ChartView(
            error=f"reading the EHR failed: {message}" if message else "", rows=_rows(write, None)
        )
    return ChartView(
        resource=current.resource, version=current.version or "", rows=_rows(write, current.resource)
    )


def _rows(write: Write, theirs: dict | None) -> list[dict[str, Any]]:
    fields = [k for k in write.payload if k not in NOT_FIELDS]
    return diffs.divergence(write.payload, theirs, fields)


def decide_for_plan(write: Write, adapter, req) -> Step:
    """The worker's decision (`services.decide.next_step`) on fresh inputs. The write is not claimed:
    a "drain" switch stops the claim, and stream order is checked as the claim checks it."""
    tenant = write.tenant
    inputs = load_inputs(write, tenant, adapter, req)
    return inputs.decide(
        write,
        tenant,
        current_holds([tenant.pk]),
        TenantContract.load(tenant),
        claimed=False,
        blocker=stream_blocker(write),
    )


def _gate(write: Write, step: Step) -> Prediction:
    """What stops or delays sending, before the target's state matters: the worker's own step."""
    tenant = write.tenant
    if step.kind == FINAL_KIND:
        return Prediction(
            "final",
            f"Nothing more will be sent: this write is {write.get_state_display().lower()}",
            "The requests below are what this write sent (or would have sent).",
        )
    if step.kind == HELD and step.code == "paused":
        return Prediction("held", f"Not sent while {tenant.slug} is paused", "The write stays queued.")
    if step.kind == HELD:
        return Prediction(
            "held",
            f"Held by a kill switch or an unacknowledged alert ({step.code})",
            "Nothing is sent until the switch is released or the alert acknowledged.",
        )
    if step.kind == PARKED and step.blocker is not None:
        blocker = step.blocker
        reason = blocker.last_error or blocker.get_state_display()
        return Prediction(
            "parked",
            f"Waiting behind write {blocker.uid}",
            f"It is {blocker.get_state_display().lower()}: {reason}",
        )
    if step.kind == APPROVAL:
        detail = "Nothing is sent before it."
        if write.state != WriteState.AWAITING_APPROVAL:
            detail = f"The worker will ask for it again: {step.reason}. {detail}"
        return Prediction("waiting", "Waiting for a clinician's approval", detail)
    if step.kind == HELD_AUTHORIZATION:
        return Prediction(
            "held",
            "Held: its authorisation lapsed before sending",
            f"{step.reason or 'see the write'}. Nothing is sent unless a clinician re-approves it.",
        )
    if step.kind == PREVIEW:
        return Prediction("not-sent", "Dry run: the worker records this plan and sends nothing")
    if step.kind == SHADOW:
        return Prediction("not-sent", "Shadow: the worker compares with the EHR and writes nothing")
    if step.kind == REFUSE:
        return Prediction(
            "refused",
            f"Refused before sending ({step.code}): nothing will be sent",
            f"{step.reason}. The worker records it as failed and raises an alert.",
        )
    return Prediction("ok", "")


def _predict(write: Write, chart: ChartView | None) -> Prediction:
    if chart is None or chart.error:
        detail = chart.error if chart else "The target was not read."
        return Prediction("unknown", "Cannot predict the outcome", detail)
    current = chart.resource
    if write.operation == "create" or write.context.get("wire_operation") == "create":
        ours = settings.WRITEBACK_IDENTIFIER_SYSTEM
        if current is not None and carries_identifier(current, ours, identity_uid(write)):
            return Prediction(
                "landed",
                "Already on the target: it will be recorded as committed without sending again",
                f"{current.get('resourceType')}/{current.get('id')} carries this write's identifier.",
            )
        if current is not None:
            return Prediction(
                "creates",
                f"Creates a new {write.resource_type}",
                f"The chart's latest matching {write.resource_type} is {current.get('id')}"
                f" (version {chart.version or '?'}); {chart.differing} field(s) differ from what we send.",
            )
        return Prediction(
            "creates", f"Creates a new {write.resource_type}", "Nothing matching is on the chart yet."
        )
    if current is None:
        return Prediction(
            "unknown", "The target resource was not found", "Expect a 404 and a terminal failure."
        )
    if write.base_version and chart.version and chart.version != write.base_version:
        return Prediction(
            "conflict",
            "Will conflict: someone changed the resource since our base version",
            f"The EHR holds version {chart.version}; this write is based on version {write.base_version}. "
            "Expect 412 Precondition Failed, then field-by-field reconciliation.",
        )
    if write.base_version:
        return Prediction(
            "applies",
            f"Applies: If-Match version {write.base_version} is still current",
            f"{chart.differing} field(s) change.",
        )
    return Prediction(
        "applies",
        "Applies after a read-compare-write check",
        "This vendor takes no If-Match: the worker reads, compares and then writes.",
    )


def _guarantees(calls: list[PlannedCall]) -> list[str]:
    out = []
    for c in calls:
        names = {k.lower() for k in c.headers}
        if "if-match" in names:
            out.append(
                f"{c.method} carries If-Match {c.headers.get('If-Match') or c.headers.get('if-match')}"
            )
        if "if-none-exist" in names:
            out.append(f"{c.method} is a conditional create (If-None-Exist)")
    return out


def _pretty(body: Any) -> str:
    if body is None or body == "":
        return ""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return body
    return json.dumps(body, indent=2, sort_keys=False, ensure_ascii=False)
