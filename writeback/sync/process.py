"""One write, from claim to recorded outcome.

1. Holds: a paused tenant or a kill switch gives the write back untouched.
2. If the last try may have landed (outcome unknown, or the previous worker died mid-call), look the
   write up on the target first; it is committed if it is there, and sent only if it is not.
3. Approval; dry-run tenants preview and shadow tenants compare (neither sends); the second check
   (patient binding, consent, capability, the vendor's context), then authorisation again: a write whose
   initiator, submitter, token or approver lost its authority is held for a person. Steps 1 and 3 are
   one decision, `services.decide.next_step`, which the console's plan view asks too. The worker loop
   reads the rows behind the second check and the authorisation for its whole claimed batch at once
   (`services.send_reads`); a write processed alone reads its own.
4. Send (two-phase surrogate: read and record the version first, then commit against it).
5. Hand back the outcome as a settlement (after a commit, with a read-back: any difference between what
   we sent and what the EHR stored); the worker loop records the outcomes of every write finished in
   one turn in one transaction (`services.record.settle`). Where the vendor answers a write with the
   stored resource faithfully (`answer_is_stored`) and the answer names the written resource, that
   answer is the read-back and no GET is made.
The HTTP calls happen outside any database transaction.
"""

import logging
from dataclasses import dataclass

from adapters.base import LookupResult, Outcome, VendorAdapter, WriteResult
from writeback import diffs
from writeback.models import LastOutcome, Tenant, Write, WriteAttempt
from writeback.services.alerts import outbound_refusals_record
from writeback.services.contract import touched_fields
from writeback.services.decide import (
    APPROVAL,
    HELD,
    HELD_AUTHORIZATION,
    PREVIEW,
    REFUSE,
    SEND,
    SHADOW,
    load_inputs,
    next_step,
)
from writeback.services.record import Readback, Recorder, Settlement, attempt_rows, save_attempts
from writeback.services.requests import build_request
from writeback.services.send_reads import SendReads
from writeback.states import WriteState
from writeback.sync.claim import release, renew_leases
from writeback.sync.recent import RecentContracts, RecentHolds

log = logging.getLogger(__name__)

NOT_FIELDS = ("resourceType", "id", "meta")


@dataclass
class Result:
    # committed, retry, ambiguous, terminal, conflict, held, held-authorization, previewed, shadowed,
    # approval, lease-lost
    label: str
    write: Write
    # The outcome still to record (`attempt`); the worker loop settles a turn's outcomes together.
    settlement: Settlement | None = None


class WriteProcessor:
    def __init__(self, worker_id: str, adapters) -> None:
        self.worker_id = worker_id
        self.adapters = adapters  # callable: Tenant -> VendorAdapter (per thread, cached)
        self.record = Recorder(worker_id, defer=True)
        self.holds = RecentHolds()
        self.contracts = RecentContracts()

    def process(self, write: Write) -> Result:
        """Processes one write and records its outcome alone; InvalidTransition if the lease was lost."""
        result = self.attempt(write)
        if result.settlement is not None:
            self.record.settle_alone(result.settlement)
        return result

    def attempt(self, write: Write, reads: SendReads | None = None) -> Result:
        """Processes one write up to its outcome, which the result carries unrecorded (the caller
        settles it, with others). What must be on record before the send is settled here, alone.

        `reads`: the worker loop read the pre-send re-check's rows for the write's whole batch right
        after claiming it; the claim read its tenant row too. Without them (a write processed alone,
        perhaps long after its claim) the tenant and the checks' rows are read fresh here."""
        died_mid_call = write.last_outcome == LastOutcome.IN_FLIGHT
        if reads is None:
            write.tenant = Tenant.objects.get(pk=write.tenant_id)  # its mode may have changed
        tenant = write.tenant
        if died_mid_call and write.state != WriteState.OUTCOME_UNKNOWN:
            # The ledger says so before anything else happens (its last try may have landed), and a
            # worker dying during this attempt must leave it showing.
            self.record.settle_alone(
                self.record.lost(write, previous_owner=getattr(write, "previous_lease_owner", ""))
            )

        # Holds and mode first, before the send checks' queries: a held write goes back untouched.
        holds = self.holds.get()
        if next_step(write, tenant, holds, None, None, None, None).kind == HELD:
            release(write)
            return Result("held", write)

        adapter: VendorAdapter = self.adapters(tenant)
        try:
            return self._process_with(write, tenant, holds, adapter, died_mid_call, reads)
        finally:
            # Requests the adapter refused to make (URLs outside the tenant): alerted with this write.
            outbound_refusals_record(tenant, adapter.take_refusals(), write=write, actor=self.worker_id)

    def _process_with(
        self,
        write: Write,
        tenant: Tenant,
        holds,
        adapter: VendorAdapter,
        died_mid_call: bool,
        reads: SendReads | None,
    ) -> Result:
        req = build_request(write)
        if write.context.get("provenance") and not req.resource.get("target"):
            message = "nothing of this event reached the chart: there is nothing for a Provenance to attest"
            return Result(
                "terminal",
                write,
                self.record.terminal(
                    write, exchanges=[], message=message, code="nothing-to-attest", counted=False
                ),
            )
        inputs = load_inputs(write, tenant, adapter, req, reads)
        step = inputs.decide(write, tenant, holds, self.contracts.get(tenant))
        # The truth first: a write that may already have landed is looked up before anything else is
        # decided about it (a lapsed approval, a revoked consent or a mode change cannot unsend it).
        if step.check_first:
            settled = self._check_by_read(write, adapter, req, died_mid_call)
            if settled is not None:
                return settled

        if step.kind == APPROVAL:
            return Result("approval", write, self.record.needs_approval(write, step.reason))
        if step.kind == PREVIEW:
            plan = [vars(p) for p in adapter.plan(req)]
            preview = {"requests": plan, "tenant_mode": tenant.mode}
            return Result("previewed", write, self.record.previewed(write, preview))
        if step.kind == SHADOW:
            return self._shadow(write, adapter, req)
        if step.kind == REFUSE:
            refused = self.record.terminal(
                write, exchanges=[], message=step.reason, code=step.code, counted=False
            )
            return Result("terminal", write, refused)
        if step.kind == HELD_AUTHORIZATION:
            held = self.record.held_authorization(
                write, rule=step.code, reason=step.reason, void_approvals=step.void_approvals
            )
            return Result("held-authorization", write, held)
        if step.kind != SEND:  # pragma: no cover - a claimed write is never final, parked or waiting
            release(write)
            return Result("held", write)

        if step.prepare:
            prepared = self._prepare(write, adapter, req)
            if prepared is not None:
                return prepared
            req = build_request(write)

        # The fence: extend our lease just before the request leaves. If this worker stalled past its
        # lease (a paused VM, a long GC) and another worker took the write over, the new holder decides;
        # sending now could make a second chart entry behind its check by read.
        if renew_leases(self.worker_id, [write.pk]) != 1:
            log.warning("%s: lease on write %s was taken over; not sending", self.worker_id, write.uid)
            return Result("lease-lost", write)
        result = adapter.write(req)
        return self._record_send(write, adapter, result)

    # -- modes that never write --------------------------------------------------------------------

    def _shadow(self, write, adapter, req) -> Result:
        current = adapter.current_for(req)
        rule = self.contracts.get(write.tenant).rule_for(write.resource_type)
        fields = [
            f for f in (rule.writable_fields if rule else list(write.payload)) if f not in ("identifier",)
        ]
        rows = diffs.divergence(write.payload, current.resource, fields)
        divergence = {
            "compared_with": {"id": (current.resource or {}).get("id"), "version": current.version}
            if current.resource
            else None,
            "read_error": current.message if current.outcome else "",
            "fields": rows,
            "differing_fields": [r["field"] for r in rows if r["differs"]],
            "differs": any(r["differs"] for r in rows),
        }
        return Result("shadowed", write, self.record.shadowed(write, divergence, current.exchanges))

    # -- ambiguity ---------------------------------------------------------------------------------

    def _check_by_read(self, write, adapter, req, died_mid_call: bool) -> Result | None:
        """Settles an unknown outcome by reading the target. Returns None when the write must be sent.

        Creates are looked for by our identifier; updates count as landed when the target holds their
        values (the adapter knows how its vendor stores them)."""
        found: LookupResult = adapter.find_by_identifier(req)
        if found.found:
            readback = None
            if write.operation == "create":
                readback = self._readback(
                    write, adapter, found.resource_id, req.resource, found.resource, source="lookup"
                )
            settlement = self.record.committed(
                write,
                exchanges=found.exchanges,
                resource_id=found.resource_id or req.target_id,
                version=found.version,
                guarantee=write.guarantee or ("ledger" if write.operation == "create" else "if_match"),
                counted=False,
                outcome=WriteAttempt.Outcome.FOUND,
                note=(
                    "found on the target after a database restore: not sent again"
                    if write.verify_before_send and not died_mid_call
                    else "found on the target after an unknown outcome: not sent again"
                ),
                readback=readback,
            )
            return Result("committed", write, settlement)
        if found.found is None:
            settlement = self.record.ambiguous(
                write,
                exchanges=found.exchanges,
                counted=False,
                message=f"check by read failed: {found.message}",
                failed_check=True,
            )
            return Result("ambiguous", write, settlement)
        moved = write.operation != "create" and found.version and write.base_version
        if moved and found.version != write.base_version:
            settlement = self._conflict(
                write,
                adapter,
                req,
                found.resource,
                found.version,
                found.exchanges,
                "the target changed since our base version while the outcome was unknown",
                counted=False,
            )
            return Result("conflict", write, settlement)
        if write.attempts >= write.max_attempts:
            # Not there after its last allowed try: stop here (a person decides) rather than loop
            # between sending and not knowing.
            settlement = self.record.terminal(
                write,
                exchanges=found.exchanges,
                code="retries-exhausted",
                message=f"not on the target after {write.attempts} attempt(s) whose outcome was unknown; "
                "not sent again",
                counted=False,
                outcome=WriteAttempt.Outcome.NOT_FOUND,
            )
            return Result("terminal", write, settlement)
        self._note_lookup(write, found.exchanges, died_mid_call)
        return None

    def _note_lookup(self, write, exchanges, died_mid_call: bool) -> None:
        outcome = WriteAttempt.Outcome.NOT_FOUND
        rows = attempt_rows(
            write,
            write.attempts,
            exchanges,
            outcome,
            self.worker_id,
            "previous worker lost its lease mid-call"
            if died_mid_call
            else "verify before sending (database restored): not on the target"
            if write.verify_before_send
            else "",
        )
        save_attempts(write, rows)

    # -- prepare: read before an update -------------------------------------------------------------

    def _prepare(self, write, adapter, req) -> Result | None:
        """Reads the target before changing it: records the version we commit against and the values we
        replace (the pre-image a rollback restores), and refuses to go on if the target already moved.
        For the two-phase surrogate (referral Task status) this is phase 1, visible on the write."""
        current = adapter.read(write.resource_type, req.target_id, correlation_id=write.correlation_id)
        if current.resource is None:
            what = f"{write.resource_type}/{req.target_id}"
            if current.outcome == Outcome.TERMINAL:
                settlement = self.record.terminal(
                    write,
                    exchanges=current.exchanges,
                    code="prepare-failed",
                    message=f"prepare: cannot read {what}: {current.message}",
                )
                return Result("terminal", write, settlement)
            settlement = self.record.retry(
                write,
                exchanges=current.exchanges,
                retry_after=current.retry_after,
                message=f"prepare: reading {what} failed: {current.message}",
            )
            return Result("retry", write, settlement)
        pre_image = {f: current.resource.get(f) for f in touched_fields(write.resource_type, write.payload)}
        if write.resource_type == "Task":
            expected, status = write.context.get("from_status"), current.resource.get("status")
            if expected and status != expected:
                if status == write.context.get("to_status"):
                    settlement = self.record.committed(
                        write,
                        exchanges=current.exchanges,
                        resource_id=req.target_id,
                        version=current.version,
                        guarantee="if_match",
                        counted=False,
                        outcome=WriteAttempt.Outcome.FOUND,
                        note="the Task already has the new status",
                    )
                    return Result("committed", write, settlement)
                settlement = self._conflict(
                    write,
                    adapter,
                    req,
                    current.resource,
                    current.version,
                    current.exchanges,
                    f"Task {req.target_id} is {status}, not {expected} as the event expected",
                    counted=False,
                )
                return Result("conflict", write, settlement)
        if write.base_version and current.version and current.version != write.base_version:
            settlement = self._conflict(
                write,
                adapter,
                req,
                current.resource,
                current.version,
                current.exchanges,
                f"{write.resource_type}/{req.target_id} is at version {current.version}; the change "
                f"was based on version {write.base_version}",
                counted=False,
            )
            return Result("conflict", write, settlement)
        # On record before the send, alone: the pre-image is what a rollback restores, and phase 1 must
        # show even if this worker dies mid-call.
        prepared = self.record.prepared(
            write,
            exchanges=current.exchanges,
            version=current.version or write.base_version,
            pre_image=pre_image,
            two_phase=write.resource_type == "Task",
        )
        self.record.settle_alone(prepared)
        return None

    # -- after sending ----------------------------------------------------------------------------

    def _record_send(self, write: Write, adapter: VendorAdapter, result: WriteResult) -> Result:
        if result.outcome == Outcome.COMMITTED:
            # One round trip where the vendor answers faithfully: the answer's body, when it names the
            # written resource, is the read-back (same diff, same audit); otherwise a GET as before.
            trusted = adapter.capabilities().answer_is_stored
            readback = self._readback(
                write,
                adapter,
                result.resource_id or write.target_resource_id,
                result.sent or write.payload,
                result.stored if trusted else None,
                source="answer",
                answer_problem=result.stored_problem if trusted else "",
            )
            settlement = self.record.committed(
                write,
                exchanges=result.exchanges,
                resource_id=result.resource_id,
                version=result.version,
                guarantee=str(result.guarantee),
                counted=True,
                readback=readback,
            )
            return Result("committed", write, settlement)
        if result.outcome == Outcome.RETRYABLE:
            settlement = self.record.retry(
                write, exchanges=result.exchanges, message=result.message, retry_after=result.retry_after
            )
            return Result("retry", write, settlement)
        if result.outcome == Outcome.AMBIGUOUS:
            settlement = self.record.ambiguous(
                write, exchanges=result.exchanges, message=result.message or "outcome unknown"
            )
            return Result("ambiguous", write, settlement)
        if result.outcome == Outcome.CONFLICT:
            theirs, version, reads = result.current, result.current_version, []
            if theirs is None and write.target_resource_id:
                current = adapter.read(
                    write.resource_type, write.target_resource_id, correlation_id=write.correlation_id
                )
                theirs, version, reads = current.resource, current.version, current.exchanges
            settlement = self._conflict(
                write,
                adapter,
                build_request(write),
                theirs,
                version,
                result.exchanges,
                result.message or "the target holds a newer version",
                counted=True,
                reads=reads,
            )
            return Result("conflict", write, settlement)
        settlement = self.record.terminal(
            write,
            exchanges=result.exchanges,
            message=result.message or "refused by the target",
            code="rejected-by-target",
        )
        return Result("terminal", write, settlement)

    def _conflict(
        self, write, adapter, req, theirs, theirs_version, exchanges, message, counted: bool, reads=()
    ) -> Settlement:
        base, reads = None, list(reads)
        if write.base_version and req.target_id:
            past = adapter.read(
                write.resource_type,
                f"{req.target_id}/_history/{write.base_version}",
                correlation_id=write.correlation_id,
            )
            base = past.resource
            reads += past.exchanges
        rows = diffs.three_way(
            base, write.payload, theirs, touched_fields(write.resource_type, write.payload)
        )
        return self.record.conflict(
            write,
            exchanges=exchanges,
            message=message,
            base=base,
            theirs=theirs,
            theirs_version=theirs_version or "",
            diff=rows,
            counted=counted,
            reads=reads,
        )

    def _readback(
        self,
        write,
        adapter,
        resource_id: str,
        sent: dict,
        stored: dict | None,
        *,
        source: str,
        answer_problem: str = "",
    ) -> Readback | None:
        """Accepted is not yet in the chart: read it back (where the tenant allows reads) and keep any
        difference. `stored`: the resource already in hand (the write's answer, or the check by read's
        find), compared without another request; `source` says which. Only reads here; the caller
        records it with the commit."""
        if not resource_id or not adapter.capabilities().read_back:
            return None
        if not self.contracts.get(write.tenant).may_read(write.resource_type):
            return None
        if stored is not None:
            return Readback([], diffs.readback_diff(sent, stored), source=source)
        current = adapter.read(write.resource_type, resource_id, correlation_id=write.correlation_id)
        if current.resource is None:
            return Readback(
                current.exchanges,
                [],
                warning=f"read-back failed: {current.message}",
                answer_problem=answer_problem,
            )
        return Readback(
            current.exchanges, diffs.readback_diff(sent, current.resource), answer_problem=answer_problem
        )
