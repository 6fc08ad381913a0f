"""Recording what happened to writes: attempts, the guarded transition, alerts and audit, in one transaction.

Every outcome is a `Settlement`, and `settle` records a batch of them with bulk statements."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from adapters.base import HttpExchange
from writeback import metrics
from writeback.models import (
    RISK_SEVERITY,
    Alert,
    AuditAction,
    Compensation,
    Conflict,
    LastOutcome,
    Risk,
    Write,
    WriteAttempt,
)
from writeback.services import audit
from writeback.services.alerts import alert_raise
from writeback.services.approvals import void_approvals as approvals_void
from writeback.services.backoff import next_attempt_at
from writeback.services.statements import insert_rows, update_write_row
from writeback.services.transitions import transition
from writeback.states import ALLOWED_TRANSITIONS, InvalidTransition, WriteState, check_transition

MAX_BODY = 8000


@dataclass
class Readback:
    """What the EHR stored, read back after a commit, against what we sent."""

    exchanges: list[HttpExchange]
    diff: list[dict]
    warning: str = ""  # the read itself failed
    # Where the stored resource came from: "read" (a GET after the commit), "answer" (the write's own
    # answer, where the vendor answers faithfully) or "lookup" (the check by read that found it).
    source: str = "read"
    answer_problem: str = ""  # why the write's answer was not taken as the stored resource (then: read)

    def warnings(self) -> list[str]:
        out = []
        if self.diff:
            out.append(f"the EHR stored {len(self.diff)} field(s) differently from what we sent")
        if self.warning:
            out.append(self.warning)
        return out

    def audit_draft(self, write: Write, worker_id: str) -> audit.AuditDraft:
        return audit.draft(
            AuditAction.WRITE_READBACK,
            actor=worker_id,
            tenant=write.tenant.slug,
            object_type="write",
            object_id=str(write.uid),
            write_uid=str(write.uid),
            correlation_id=write.correlation_id,
            target_ack=not self.warning,
            data={
                "differences": len(self.diff),
                "paths": [d["path"] for d in self.diff][:50],
                "warning": self.warning,
                "source": self.source,
                **({"answer_not_taken": self.answer_problem} if self.answer_problem else {}),
            },
        )


def attempt_rows(
    write: Write,
    number: int,
    exchanges: Iterable[HttpExchange],
    outcome: str,
    worker_id: str,
    error: str = "",
) -> list[WriteAttempt]:
    rows = []
    exchanges = list(exchanges)
    # The outcome belongs to the decisive request: the last one that changes something (lookups and
    # reads around it are steps), or the last read when the whole attempt was reads.
    changing = [i for i, ex in enumerate(exchanges) if ex.method not in ("GET", "HEAD")]
    decisive = changing[-1] if changing else len(exchanges) - 1
    for i, ex in enumerate(exchanges):
        last = i == decisive
        rows.append(
            WriteAttempt(
                write=write,
                number=number,
                worker_id=worker_id,
                request_id=ex.request_id,
                correlation_id=write.correlation_id,
                method=ex.method,
                url=ex.url[:1000],
                request_headers=ex.request_headers,
                request_body_hash=ex.request_body_hash,
                response_status=ex.status,
                response_body=(ex.response_body or "")[:MAX_BODY],
                latency_ms=ex.latency_ms,
                outcome=outcome if last else WriteAttempt.Outcome.STEP,
                error=(ex.error or (error if last else ""))[:4000],
            )
        )
    if not rows:
        rows.append(
            WriteAttempt(write=write, number=number, worker_id=worker_id, outcome=outcome, error=error[:4000])
        )
    return rows


def save_attempts(write: Write, rows: list[WriteAttempt]) -> None:
    """Saves attempt rows; the metrics count them once the surrounding transaction commits."""
    insert_rows(WriteAttempt, rows)
    metrics.attempts_recorded(write, rows)


def _release_fields(**more: Any) -> dict[str, Any]:
    # Any recorded outcome follows the check by read a restore asked for (or a send after it).
    return {"lease_owner": "", "lease_expires_at": None, "verify_before_send": False, **more}


def _alert(write: Write, code: str, message: str, drafts: list[audit.AuditDraft]) -> Alert:
    return alert_raise(
        tenant=write.tenant,
        write=write,
        resource_type=write.resource_type,
        severity=RISK_SEVERITY[write.risk],
        code=code,
        message=message,
        holds_queue=write.risk == Risk.VERY_HIGH,
        drafts=drafts,
    )


@dataclass
class Settlement:
    """One write's recorded outcome: its attempt rows, its guarded state change and its audit entries.

    `to` is the state it moves to; when it is already there (or `to` is None) the same guarded UPDATE
    writes `fields` and `action` names the audit entry instead of a transition. `before` and `after` add
    what belongs to this outcome inside the transaction, only once the state change held: entries that
    come before the transition's (voided approvals, the conflict row) and after it (the read-back, the
    writes a compensation closes)."""

    write: Write
    to: str | None
    reason: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    attempts: list[WriteAttempt] = field(default_factory=list)
    guard: dict[str, Any] = field(default_factory=dict)
    target_ack: bool | None = None
    action: AuditAction | None = None
    alert: tuple[str, str] | None = None
    before: Callable[[list[audit.AuditDraft]], None] | None = None
    after: Callable[[list[audit.AuditDraft]], None] | None = None


def settle(batch: list[Settlement], *, actor: str) -> list[Settlement]:
    """Records a batch of outcomes in one transaction: one guarded UPDATE per write (checked: a write
    whose lease was taken over, or that moved meanwhile, gets nothing, no attempt row and no entry such
    as "retry scheduled"), then one INSERT of all attempt rows and one chain lock for all audit entries.
    Returns the settlements that held.

    If anything raises, nothing is recorded and the writes in memory are put back as the database still
    holds them, so the caller may settle the same settlements again (one by one, say)."""
    settled: list[Settlement] = []
    applied: list[tuple[Write, dict[str, Any]]] = []
    try:
        with transaction.atomic():
            drafts: list[audit.AuditDraft] = []
            for s in batch:
                entries = _apply(s, actor, applied)
                if entries is None:
                    continue
                settled.append(s)
                drafts += entries
            rows = [row for s in settled for row in s.attempts]
            if rows:
                insert_rows(WriteAttempt, rows)
            for s in settled:
                if s.attempts:
                    metrics.attempts_recorded(s.write, s.attempts)
            audit.record_many(drafts)
    except BaseException:
        for write, old in applied:
            for name, value in old.items():
                setattr(write, name, value)
        for s in settled:
            for row in s.attempts:
                row.pk = None  # the INSERT set them; the rows were rolled back
        raise
    return settled


def _apply(
    s: Settlement, actor: str, applied: list[tuple[Write, dict[str, Any]]]
) -> list[audit.AuditDraft] | None:
    """The guarded state change for one write and its audit entries; None when the guard failed.
    `applied` collects the in-memory values the change replaced (put back if the transaction fails)."""
    write, current = s.write, s.write.state
    now = timezone.now()
    moves = s.to is not None and s.to != current
    if moves:
        check_transition(current, s.to)
        updates = {"state": s.to, "state_changed_at": now, "updated_at": now, **s.fields}
    else:
        updates = {"updated_at": now, **s.fields}
    if update_write_row(write.pk, {"state": current, **s.guard}, updates) != 1:
        return None
    applied.append((write, {name: getattr(write, name) for name in updates}))
    for name, value in updates.items():
        setattr(write, name, value)
    drafts: list[audit.AuditDraft] = []
    if s.before is not None:
        s.before(drafts)
    common = {
        "actor": actor,
        "tenant": write.tenant.slug,
        "object_type": "write",
        "object_id": str(write.uid),
        "write_uid": str(write.uid),
        "correlation_id": write.correlation_id,
        "target_ack": s.target_ack,
    }
    if moves:
        drafts.append(
            audit.draft(
                AuditAction.WRITE_TRANSITION,
                event_uid=str(write.event.uid),
                data={"from": current, "to": s.to, "reason": s.reason, **s.data},
                **common,
            )
        )
    elif s.action is not None:
        drafts.append(audit.draft(s.action, data=s.data, **common))
    if s.after is not None:
        s.after(drafts)
    if s.alert is not None:
        _alert(write, *s.alert, drafts)
    return drafts


def _tried(number: int, outcome: str, error: str, **more: Any) -> dict[str, Any]:
    """The fields every tried outcome writes: the attempt count, the last outcome and its error."""
    return {"attempts": number, "last_outcome": outcome, "last_error": error[:4000], **more}


class Recorder:
    """Builds every outcome as a `Settlement`.

    By default each one is settled at once, alone, and a guard that no longer holds raises
    InvalidTransition. With `defer`, the outcome is handed back unsettled: the worker loop settles all
    writes finished in one turn with one `settle` call (one transaction, one attempts INSERT, one chain
    lock); `settle_alone` is there for what must be on record before the thread goes on."""

    def __init__(self, worker_id: str, *, defer: bool = False) -> None:
        self.worker_id = worker_id
        self.defer = defer

    def _guard(self, write: Write) -> dict[str, Any]:
        return {"lease_owner": self.worker_id} if write.lease_owner == self.worker_id else {}

    def _rows(
        self, write: Write, number: int, exchanges, outcome: str, error: str = ""
    ) -> list[WriteAttempt]:
        return attempt_rows(write, number, exchanges, outcome, self.worker_id, error)

    def settle_alone(self, s: Settlement) -> Settlement:
        if not settle([s], actor=self.worker_id):
            raise InvalidTransition(
                f"write {s.write.uid} is no longer {s.write.state}; refresh and try again"
            )
        return s

    def _outcome(
        self,
        write: Write,
        to: str | None,
        *,
        fields: dict[str, Any],
        outcome: str = "",
        exchanges: Iterable[HttpExchange] = (),
        number: int | None = None,
        message: str = "",
        more_rows: Iterable[HttpExchange] = (),
        release: bool = True,
        **settlement: Any,
    ) -> Settlement:
        """The one builder of outcomes: attempt rows for `exchanges` (numbered `number`, by default the
        write's attempts so far; none without an `outcome`), `more_rows` as steps after them, the lease
        released (unless `release` is false), `message` as the transition's reason and the decisive
        row's error, and the worker's lease as the guard unless the outcome brings its own."""
        number = write.attempts if number is None else number
        rows: list[WriteAttempt] = []
        if outcome:
            rows = self._rows(write, number, exchanges, outcome, message)
            more_rows = list(more_rows)
            if more_rows:
                rows += self._rows(write, number, more_rows, WriteAttempt.Outcome.STEP)
        settlement.setdefault("reason", message[:500])
        settlement.setdefault("guard", self._guard(write))
        settlement.setdefault("attempts", rows)
        s = Settlement(write, to, fields=_release_fields(**fields) if release else fields, **settlement)
        return s if self.defer else self.settle_alone(s)

    def committed(
        self,
        write: Write,
        *,
        exchanges: list[HttpExchange],
        resource_id: str,
        version: str,
        guarantee: str,
        counted: bool,
        outcome: str = WriteAttempt.Outcome.COMMITTED,
        note: str = "",
        readback: Readback | None = None,
    ) -> Settlement:
        """The target holds the write. A read-back done after the send is recorded in the same
        transaction (one chain lock per write)."""
        attempts = write.attempts + (1 if counted else 0)
        extra = {}
        if readback is not None:
            extra = {
                "readback_diff": readback.diff,
                "warnings": [*(write.warnings or []), *readback.warnings()],
            }

        def after(drafts: list[audit.AuditDraft]) -> None:
            if readback is not None:
                drafts.append(readback.audit_draft(write, self.worker_id))
            self._close_links(write, drafts)

        return self._outcome(
            write,
            WriteState.COMMITTED,
            outcome=outcome,
            exchanges=exchanges,
            more_rows=readback.exchanges if readback is not None else (),
            number=attempts,
            reason=note or "the target acknowledged the write",
            target_ack=True,
            data={"resource_id": resource_id, "version": version, "guarantee": guarantee},
            fields=_tried(
                attempts,
                outcome,
                "",
                target_resource_id=resource_id or write.target_resource_id,
                target_version=version,
                guarantee=guarantee,
                phase=Write.Phase.COMMITTED if write.phase else write.phase,
                **extra,
            ),
            after=after,
        )

    def _close_links(self, write: Write, drafts: list[audit.AuditDraft]) -> None:
        """A committed compensating or superseding write closes the write it stands in for."""
        if write.compensates_id:
            original = Write.objects.select_related("tenant", "event").get(pk=write.compensates_id)
            comp = write.compensation
            target = (
                WriteState.SUPERSEDED
                if comp is not None and comp.kind == Compensation.Kind.CORRECTION
                else WriteState.COMPENSATED
            )
            if target in ALLOWED_TRANSITIONS[original.state]:
                transition(
                    original,
                    target,
                    actor=self.worker_id,
                    reason=f"compensating write {write.uid} committed",
                    data={"compensating_write": str(write.uid)},
                    # A two-phase write shows its third phase: the EHR side was undone.
                    fields={"phase": Write.Phase.COMPENSATED} if original.phase else None,
                    defer_audit=drafts,
                )
            if (
                comp is not None
                and not comp.writes.exclude(state=WriteState.COMMITTED).exclude(pk=write.pk).exists()
            ):
                Compensation.objects.filter(pk=comp.pk).update(status=Compensation.Status.DONE)
        if write.supersedes_id:
            original = Write.objects.select_related("tenant", "event").get(pk=write.supersedes_id)
            if WriteState.SUPERSEDED in ALLOWED_TRANSITIONS[original.state]:
                transition(
                    original,
                    WriteState.SUPERSEDED,
                    actor=self.worker_id,
                    reason=f"superseded by write {write.uid}",
                    data={"superseded_by": str(write.uid)},
                    defer_audit=drafts,
                )

    def retry(
        self,
        write: Write,
        *,
        exchanges: list[HttpExchange],
        message: str,
        retry_after: float | None,
        outcome: str = WriteAttempt.Outcome.RETRYABLE,
    ) -> Settlement:
        attempts = write.attempts + 1
        if attempts >= write.max_attempts:
            return self.terminal(
                write,
                exchanges=exchanges,
                message=f"gave up after {attempts} attempts: {message}",
                code="retries-exhausted",
                counted=True,
                outcome=outcome,
            )
        when = next_attempt_at(attempts, retry_after)
        return self._schedule(
            write,
            WriteState.FAILED_RETRYABLE,
            AuditAction.WRITE_RETRY_SCHEDULED,
            exchanges=exchanges,
            attempts=attempts,
            outcome=outcome,
            message=message,
            when=when,
            data={"attempts": attempts, "next_attempt_at": when, "retry_after": retry_after},
        )

    def ambiguous(
        self,
        write: Write,
        *,
        exchanges: list[HttpExchange],
        message: str,
        counted: bool = True,
        outcome: str = WriteAttempt.Outcome.AMBIGUOUS,
        failed_check: bool = False,
    ) -> Settlement:
        """The write may have landed: park it as outcome unknown; the next claim checks by read first.

        `failed_check`: the check by read itself failed (the target is down). The write stays outcome
        unknown, the truth, with checks further apart each time; once as many checks failed as the
        write may have attempts, an alert asks a person to look (it does not become a failure: a
        resend could make a second chart entry)."""
        attempts = write.attempts + (1 if counted else 0)
        checks = (write.context or {}).get("failed_checks", 0) + (1 if failed_check else 0)
        when = next_attempt_at(max(1, attempts + checks))
        alert = None
        if failed_check and checks == write.max_attempts:
            alert = (
                "outcome-unknown",
                f"the outcome is unknown and {checks} checks by read failed: {message}",
            )
        return self._schedule(
            write,
            WriteState.OUTCOME_UNKNOWN,
            AuditAction.WRITE_CHECK_SCHEDULED,
            exchanges=exchanges,
            attempts=attempts,
            outcome=outcome,
            message=message,
            when=when,
            data={"attempts": attempts, "check_at": when, **({"failed_checks": checks} if checks else {})},
            more_fields={"context": {**write.context, "failed_checks": checks}} if failed_check else {},
            alert=alert,
        )

    def lost(self, write: Write, *, previous_owner: str) -> Settlement:
        """A worker lost its lease mid-call (killed, or frozen past its lease): whether its request
        reached the target is unknown. The write shows as outcome unknown, with a `lost` attempt that
        names the worker, until a check by read settles it. The caller may hold the lease (a takeover) or
        not (the sweep); either way the write stays due now."""
        held = self._guard(write)
        guard = held or {"last_outcome": LastOutcome.IN_FLIGHT, "lease_expires_at__lt": timezone.now()}
        message = f"{previous_owner or 'a worker'} lost its lease mid-call; the outcome is unknown"
        lost = WriteAttempt(
            write=write,
            number=write.attempts,
            worker_id=previous_owner[:128],
            correlation_id=write.correlation_id,
            outcome=WriteAttempt.Outcome.LOST,
            error=message,
        )
        return self._outcome(
            write,
            WriteState.OUTCOME_UNKNOWN,
            message=message,
            data={"lost_by": previous_owner},
            # The sweep (no lease of its own) also clears the dead worker's lease; a takeover keeps it.
            release=not held,
            fields={
                "last_outcome": WriteAttempt.Outcome.LOST,
                "last_error": message,
                "next_attempt_at": timezone.now(),
            },
            guard=guard,
            attempts=[lost],  # named after the worker that lost it, not this one
        )

    def _schedule(
        self,
        write: Write,
        to: str,
        same_state_action: AuditAction,
        *,
        exchanges: list[HttpExchange],
        attempts: int,
        outcome: str,
        message: str,
        when,
        data: dict[str, Any],
        more_fields: dict[str, Any] | None = None,
        alert: tuple[str, str] | None = None,
    ) -> Settlement:
        """Records an attempt and when to try (or check) again: a transition into `to`, or, when the
        write is already there, the same fields with an audit entry of its own."""
        again = write.state == to
        return self._outcome(
            write,
            to,
            outcome=outcome,
            exchanges=exchanges,
            number=attempts,
            message=message,
            target_ack=False,
            data={**data, "reason": message[:500]} if again else data,
            fields=_tried(attempts, outcome, message, next_attempt_at=when, **(more_fields or {})),
            action=same_state_action,
            alert=alert,
        )

    def terminal(
        self,
        write: Write,
        *,
        exchanges: list[HttpExchange],
        message: str,
        code: str,
        counted: bool = True,
        outcome: str = WriteAttempt.Outcome.TERMINAL,
    ) -> Settlement:
        attempts = write.attempts + (1 if counted else 0)
        return self._outcome(
            write,
            WriteState.FAILED_TERMINAL,
            outcome=outcome,
            exchanges=exchanges,
            number=attempts,
            message=message,
            target_ack=False if exchanges else None,
            data={"code": code, "attempts": attempts},
            fields=_tried(attempts, outcome, f"{code}: {message}"),
            alert=(code, message),
        )

    def conflict(
        self,
        write: Write,
        *,
        exchanges: list[HttpExchange],
        message: str,
        base: dict | None,
        theirs: dict | None,
        theirs_version: str,
        diff: list[dict],
        counted: bool = True,
        reads: list[HttpExchange] = (),
    ) -> Settlement:
        """`exchanges` decided the conflict (the 412, or the read that showed the target moved);
        `reads` fetched theirs and the base afterwards. The Conflict row is saved with the outcome
        (its uid is in the settlement's data)."""
        attempts = write.attempts + (1 if counted else 0)
        conflict = Conflict(
            write=write,
            base=base,
            ours=write.payload,
            theirs=theirs,
            base_version=write.base_version,
            theirs_version=theirs_version,
            diff=diff,
        )

        def before(drafts: list[audit.AuditDraft]) -> None:
            conflict.save(force_insert=True)
            metrics.conflict_recorded(write)

        return self._outcome(
            write,
            WriteState.CONFLICT,
            outcome=WriteAttempt.Outcome.CONFLICT,
            exchanges=exchanges,
            more_rows=reads,
            number=attempts,
            message=message,
            target_ack=False,
            data={
                "conflict": str(conflict.uid),
                "base_version": write.base_version,
                "theirs_version": theirs_version,
                "fields": [d["path"] for d in diff if d["changed"] != "none"],
            },
            fields=_tried(attempts, WriteAttempt.Outcome.CONFLICT, message),
            before=before,
        )

    def previewed(self, write: Write, preview: dict) -> Settlement:
        return self._outcome(
            write,
            WriteState.PREVIEWED,
            reason="dry-run tenant: not sent",
            fields={"preview": preview, "last_outcome": ""},
        )

    def shadowed(self, write: Write, divergence: dict, exchanges: list[HttpExchange]) -> Settlement:
        return self._outcome(
            write,
            WriteState.SHADOWED,
            outcome=WriteAttempt.Outcome.STEP,
            exchanges=exchanges,
            reason="shadow: compared, not written",
            data={"differs": divergence.get("differs"), "fields": divergence.get("differing_fields")},
            fields={"divergence": divergence, "last_outcome": ""},
        )

    def needs_approval(self, write: Write, reason: str) -> Settlement:
        def before(drafts: list[audit.AuditDraft]) -> None:
            approvals_void(write=write, reason=reason, actor=self.worker_id, drafts=drafts)

        return self._outcome(
            write, WriteState.AWAITING_APPROVAL, reason=reason, fields={"last_outcome": ""}, before=before
        )

    def held_authorization(self, write: Write, *, rule: str, reason: str, void_approvals: bool) -> Settlement:
        """Holds a write whose authorisation lapsed before sending: never sent, kept for a person to
        re-approve or resolve, with the reason on the write and in the audit trail."""
        message = f"authorisation check before sending failed: {reason}"
        held = {"rule": rule, "reason": reason, "at": timezone.now().isoformat()}

        def before(drafts: list[audit.AuditDraft]) -> None:
            if void_approvals:
                approvals_void(write=write, reason=reason, actor=self.worker_id, drafts=drafts)

        def after(drafts: list[audit.AuditDraft]) -> None:
            drafts.append(
                audit.draft(
                    AuditAction.WRITE_HELD_AUTHORIZATION,
                    actor=self.worker_id,
                    tenant=write.tenant.slug,
                    object_type="write",
                    object_id=str(write.uid),
                    write_uid=str(write.uid),
                    event_uid=str(write.event.uid),
                    correlation_id=write.correlation_id,
                    data={"rule": rule, "reason": reason},
                )
            )

        return self._outcome(
            write,
            WriteState.HELD_AUTHORIZATION,
            outcome=WriteAttempt.Outcome.HELD,
            message=message,
            data={"code": rule},
            fields={
                "last_outcome": WriteAttempt.Outcome.HELD,
                "last_error": f"{rule}: {reason}"[:4000],
                "context": {**write.context, "held_authorization": held},
            },
            before=before,
            after=after,
        )

    def prepared(
        self, write: Write, *, exchanges: list[HttpExchange], version: str, pre_image: dict, two_phase: bool
    ) -> Settlement:
        """Read before an update: the version we commit against and the values we replace. For the
        two-phase surrogate this is phase 1 (`prepared`), visible on the write."""
        context = {**write.context, "pre_image": pre_image, "prepared_version": version}
        if two_phase:
            context["previous_status"] = pre_image.get("status")
        phase = Write.Phase.PREPARED if two_phase else write.phase
        base = version if two_phase or not write.base_version else write.base_version
        return self._outcome(
            write,
            None,
            outcome=WriteAttempt.Outcome.STEP,
            exchanges=exchanges,
            release=False,  # the same worker goes on to send
            target_ack=True,
            data={"version": version, "two_phase": two_phase, "fields": sorted(pre_image)},
            fields={"phase": phase, "base_version": base, "context": context},
            action=AuditAction.WRITE_PREPARED,
        )
