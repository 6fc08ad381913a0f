"""Reading the EHR from the console: the chart comparison and the plan's prediction.

A live read of a patient's chart is a deliberate act of a person who needs it, never a side effect of
opening a page: it needs the `read_ehr` role (clinicians approving, admins and integration engineers
resolving; not auditors, who read our records), the person's tenant, and a token from that person's
bucket (`WRITEBACK_CONSOLE_EHR_READS_PER_MINUTE`, as a burst and per minute), so a stuck key or a script
cannot hammer the EHR. Every read is audited (`ehr.read`) with who, which write, what was asked for and
what came back. Refusals (role, tenant, rate) are audited by `permissions.refuse`.
"""

from typing import Any

from django.conf import settings

from writeback.errors import DomainError
from writeback.models import AuditAction, Write
from writeback.services import audit
from writeback.services.permissions import ActionRefused, refuse, require
from writeback.services.plans import ChartView, WritePlan, compare_with_chart, write_plan
from writeback.services.ratelimits import rate_take
from writeback.services.requests import build_request


class ReadRateLimited(DomainError):
    """Too many EHR reads by this person: try again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(429, "rate-limited", message)
        self.retry_after = max(1, int(retry_after + 0.999))


def ehr_read_chart(*, write: Write, user: Any, request_id: str = "", channel: str = "console") -> ChartView:
    """What the chart holds next to what the write proposes (the approval queue's comparison)."""
    _admit(write, user, request_id, channel)
    chart = compare_with_chart(write, actor=user, request_id=request_id)
    _audit(write, user, "chart", chart, request_id)
    return chart


def ehr_read_plan(*, write: Write, user: Any, request_id: str = "", channel: str = "console") -> WritePlan:
    """The plan with its prediction from the EHR's current state. A write that will send nothing (final,
    dry run, shadow) is not read, and no read is audited for it."""
    _admit(write, user, request_id, channel)
    plan = write_plan(write, actor=user, request_id=request_id)
    if plan.chart is not None:
        _audit(write, user, "plan", plan.chart, request_id)
    return plan


def _admit(write: Write, user: Any, request_id: str, channel: str) -> None:
    where = {"object_type": "write", "object_id": str(write.uid), "request_id": request_id}
    require(user, "read_ehr", write.tenant, channel=channel, **where)
    per_minute = settings.WRITEBACK_CONSOLE_EHR_READS_PER_MINUTE
    wait = rate_take(f"ehr-read:user:{user.pk}", capacity=per_minute, per_seconds=60)
    if not wait:
        return
    message = f"at most {per_minute} EHR reads a minute: try again in {max(1, round(wait))} s"
    try:
        refuse(user, "read_ehr", message, rule="rate-limited", tenant=write.tenant, channel=channel, **where)
    except ActionRefused as exc:
        raise ReadRateLimited(str(exc), wait) from exc


def _asked_for(write: Write) -> str:
    """What the read asks the EHR for: the target resource, or the patient's resources of that type."""
    req = build_request(write)
    if req.operation != "create" and req.target_id:
        return f"{write.resource_type}/{req.target_id}"
    patient = (write.patient_ref or "").rsplit("/", 1)[-1]
    return f"{write.resource_type}?patient={patient}"


def _audit(write: Write, user: Any, view: str, chart: ChartView, request_id: str) -> None:
    found = chart.resource or {}
    audit.record(
        AuditAction.EHR_READ,
        actor=user,
        tenant=write.tenant.slug,
        object_type="write",
        object_id=str(write.uid),
        write_uid=str(write.uid),
        correlation_id=write.correlation_id,
        request_id=request_id,
        target_ack=not chart.error,
        data={
            "view": view,
            "asked_for": _asked_for(write),
            "read": f"{found.get('resourceType')}/{found.get('id')}" if found else "",
            "version": chart.version,
            "error": chart.error[:300],
        },
    )
