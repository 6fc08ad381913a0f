"""A write's story in order: the business event, validation, approval, every HTTP attempt, each state
change, compensations and replays, down to the final state. Built from rows already loaded."""

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from writeback.models import (
    Approval,
    AuditAction,
    AuditEntry,
    BusinessEvent,
    Write,
    WriteAttempt,
    audit_title,
)
from writeback.states import WriteState

TRANSITION_TITLES = {
    WriteState.VALIDATED: "Validated: schema, rules, contract, consent",
    WriteState.AWAITING_APPROVAL: "Held for a clinician's approval",
    WriteState.PENDING: "Queued to send",
    WriteState.COMMITTED: "Committed: the EHR acknowledged the write",
    WriteState.FAILED_RETRYABLE: "Failed; will retry",
    WriteState.FAILED_TERMINAL: "Failed; needs an operator",
    WriteState.OUTCOME_UNKNOWN: "Outcome unknown; will check by read",
    WriteState.CONFLICT: "Version conflict: the EHR changed since our base version",
    WriteState.REJECTED: "Rejected by the approver",
    WriteState.SUPERSEDED: "Superseded",
    WriteState.COMPENSATED: "Compensated (rolled back)",
    WriteState.RESOLVED: "Resolved by hand",
    WriteState.SHADOWED: "Shadowed: compared with the EHR, not written",
    WriteState.PREVIEWED: "Previewed: dry run, not written",
    WriteState.HELD_AUTHORIZATION: "Held before sending: its authorisation lapsed",
}
TONE = {
    WriteState.COMMITTED: "ok",
    WriteState.FAILED_TERMINAL: "bad",
    WriteState.CONFLICT: "bad",
    WriteState.REJECTED: "bad",
    WriteState.FAILED_RETRYABLE: "warn",
    WriteState.OUTCOME_UNKNOWN: "warn",
    WriteState.AWAITING_APPROVAL: "info",
    WriteState.HELD_AUTHORIZATION: "bad",
}
ATTEMPT_TONE = {"committed": "ok", "found": "ok", "terminal": "bad", "conflict": "bad", "retryable": "warn"}
# Audit actions told by other items (approvals have their own rows with the rationale in clear).
SKIPPED_ACTIONS = {AuditAction.WRITE_APPROVED, AuditAction.WRITE_REJECTED}


@dataclass
class Item:
    at: datetime
    kind: str
    title: str
    tone: str = "neutral"
    actor: str = ""
    state: str = ""
    facts: list[tuple[str, Any]] = field(default_factory=list)
    text: str = ""
    order: int = 0


def build(
    write: Write,
    event: BusinessEvent,
    attempts: Iterable[WriteAttempt],
    approvals: Iterable[Approval],
    entries: Iterable[AuditEntry],
) -> list[Item]:
    items = [
        Item(
            at=event.received_at,
            kind="event",
            title=f"Business event received: {event.type}",
            actor=event.initiator_name or event.acting_system,
            facts=[
                ("Source", f"{event.source_system} {event.source_message_id or ''}".strip()),
                ("Idempotency key", event.idempotency_key),
                ("Correlation id", event.correlation_id),
                ("Occurred", event.occurred_at),
            ],
            order=-1,
        )
    ]
    for e in entries:
        if e.action in SKIPPED_ACTIONS:
            continue
        items.append(_from_entry(e))
    for a in approvals:
        items.append(
            Item(
                at=a.decided_at,
                kind="approval",
                title=f"{a.get_decision_display()} by {a.approver.get_username()}",
                tone="ok" if a.decision == Approval.Decision.APPROVED else "bad",
                actor=a.approver.get_username(),
                facts=[("Payload hash", a.payload_hash[:16] + "…")]
                + ([("Valid until", a.expires_at)] if a.decision == Approval.Decision.APPROVED else [])
                + ([("Voided", a.voided_at), ("Why voided", a.void_reason)] if a.voided_at else []),
                text=a.rationale,
            )
        )
    for a in attempts:
        items.append(_from_attempt(a))
    return sorted(items, key=lambda i: (i.at, i.order))


def _from_entry(e: AuditEntry) -> Item:
    data = e.data or {}
    if e.action == AuditAction.WRITE_TRANSITION:
        to = data.get("to", "")
        reason = data.get("reason") or ""
        facts = []
        for key in (
            "resource_id",
            "version",
            "guarantee",
            "code",
            "base_version",
            "theirs_version",
            "replay",
        ):
            if data.get(key):
                facts.append((key.replace("_", " ").capitalize(), str(data[key])))
        return Item(
            at=e.at,
            kind="transition",
            title=TRANSITION_TITLES.get(to, f"→ {to}"),
            tone=TONE.get(to, "neutral"),
            actor=e.actor,
            state=to,
            facts=facts,
            text=reason if isinstance(reason, str) else "",
            order=e.seq,
        )
    facts = [
        (k.replace("_", " ").capitalize(), _short(v))
        for k, v in data.items()
        if k not in ("reason",) and not isinstance(v, dict | list)
    ]
    if e.action == AuditAction.WRITE_CREATED and data.get("state") == WriteState.VALIDATED:
        # Intake validates before it records: the write is born validated.
        return Item(
            at=e.at,
            kind="transition",
            title=TRANSITION_TITLES[WriteState.VALIDATED],
            actor=e.actor,
            state=WriteState.VALIDATED,
            facts=[f for f in facts if f[0] != "State"],
            order=e.seq,
        )
    reason = data.get("reason")
    return Item(
        at=e.at,
        kind="audit",
        title=audit_title(e.action),
        tone="bad" if e.action == AuditAction.ACCESS_REFUSED else "neutral",
        actor=e.actor,
        facts=facts[:6],
        text=reason if isinstance(reason, str) else "",
        order=e.seq,
    )


def _from_attempt(a: WriteAttempt) -> Item:
    if a.outcome == WriteAttempt.Outcome.STEP:
        label = "Request"
    elif a.number == 0:
        label = "Check before sending"
    else:
        label = f"Attempt {a.number}"
    title = f"{label}: {a.method} → {a.response_status or 'no answer'}" if a.method else label
    facts = [("Outcome", a.get_outcome_display())]
    if a.url:
        facts.append(("URL", a.url))
    if a.latency_ms is not None:
        facts.append(("Latency", f"{a.latency_ms:.0f} ms"))
    if a.request_id:
        facts.append(("Request id", a.request_id))
    if a.correlation_id:
        facts.append(("Correlation id", a.correlation_id))
    if a.worker_id:
        facts.append(("Worker", a.worker_id))
    text = operation_outcome_text(a.response_body) or a.error
    return Item(
        at=a.started_at,
        kind="attempt",
        title=title,
        tone=ATTEMPT_TONE.get(a.outcome, "neutral"),
        facts=facts,
        text=text,
    )


def operation_outcome_text(body: str) -> str:
    """The issues of a FHIR OperationOutcome (or a vendor error) in plain words."""
    if not body:
        return ""
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(doc, dict):
        return ""
    if doc.get("resourceType") == "OperationOutcome":
        lines = []
        for issue in doc.get("issue") or []:
            text = (
                issue.get("diagnostics") or (issue.get("details") or {}).get("text") or issue.get("code", "")
            )
            where = ", ".join(issue.get("expression") or [])
            lines.append(f"{issue.get('severity', 'error')}: {text}" + (f" (at {where})" if where else ""))
        return "\n".join(lines)
    for key in ("error", "message", "errormessage", "detail"):
        if isinstance(doc.get(key), str):
            return doc[key]
    return ""


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "…"
