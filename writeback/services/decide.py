"""The worker's decision for one write, as one pure function.

`next_step` looks at nothing but its arguments: the caller loads them (`load_inputs`) and then acts on
the step. The worker (`writeback.sync.process`) and the console's plan view (`services.plans`) both
call it, so the page that predicts what the worker will do cannot drift from what the worker does.

The order is the worker's, and it matters:
1. a write that will never be sent again (final, waiting for a person) says so;
2. holds: a paused tenant or a kill switch; then stream order (an earlier open write parks this one);
3. the truth first: a write that may already have landed is looked up on the target before anything
   else is decided (`Step.check_first`); a lapsed approval cannot unsend it;
4. approval for this exact payload;
5. dry-run tenants preview and shadow tenants compare (neither sends);
6. the second check: patient binding, consent, capability (the tenant's contract), the vendor's context;
7. send authorisation: initiator, submitter, token and approver still hold their authority;
8. send (an update or patch is read first: `Step.prepare`).
"""

from dataclasses import dataclass
from typing import Any

from adapters.base import VendorAdapter, WriteRequest
from adapters.compensation import compensation_method
from writeback.models import BusinessEvent, LastOutcome, Tenant, TenantMode, Write
from writeback.services.consents import ConsentDecision
from writeback.services.contract import TenantContract, touched_fields
from writeback.services.holds import Holds
from writeback.services.send_authorization import Lapse
from writeback.services.send_reads import SendReads
from writeback.states import FINAL, WriteState

# Step kinds, in the order the checks run.
FINAL_KIND = "final"
HELD = "held"
PARKED = "parked"
APPROVAL = "approval"
HELD_AUTHORIZATION = "held-authorization"
PREVIEW = "preview"
SHADOW = "shadow"
REFUSE = "refuse"
SEND = "send"

# Inputs a caller did not load because an earlier check already decides (see `load_inputs`).
NOT_LOADED: Any = object()


@dataclass(frozen=True)
class Step:
    kind: str
    code: str = ""  # the rule behind a refusal or hold (consent-revoked, hold, paused, ...)
    reason: str = ""
    check_first: bool = False  # the last try may have landed: look the write up before acting
    prepare: bool = False  # read the target before an update (the version and the pre-image)
    void_approvals: bool = False  # a held authorisation whose approver lapsed voids the approval
    blocker: Write | None = None  # the earlier open write of the stream (parked)

    @property
    def sends(self) -> bool:
        return self.kind == SEND


def may_have_landed(write: Write) -> bool:
    """The last try may have reached the target: its worker died mid-call, its answer was lost, or the
    database was restored behind the target."""
    return (
        write.last_outcome == LastOutcome.IN_FLIGHT
        or write.state == WriteState.OUTCOME_UNKNOWN
        or write.verify_before_send
    )


def _sending_mode(write: Write, tenant: Tenant) -> bool:
    return tenant.mode not in (TenantMode.DRY_RUN, TenantMode.SHADOW) and not write.context.get("shadow_only")


def next_step(
    write: Write,
    tenant: Tenant,
    holds: Holds,
    contract: TenantContract | None,
    approval: Any,
    consent: ConsentDecision | None,
    capability: str | None,
    *,
    claimed: bool = True,
    blocker: Write | None = None,
    binding: str = NOT_LOADED,
    authorization: Lapse | None = NOT_LOADED,
    operation: str = "",
    software_proposed: bool = False,
) -> Step:
    """What happens to `write` next. Pure: every input is loaded by the caller.

    `approval`: the valid approval for the current payload, or None. `consent`: the consent decision for
    the interaction that goes out. `capability`: the vendor's refusal for missing context (the adapter's
    preflight), or None. `claimed`: the write is in a worker's hands (a "drain" switch lets claimed
    writes go out but stops the claim). `blocker`: the earliest open write ahead in its stream.
    `binding`: why the payload would reach another patient or encounter (empty when it would not).
    `authorization`: the first authority behind the write that lapsed. `operation`: the interaction
    that goes out (a compensation is the create or update it performs). `software_proposed`: the
    event came from automation or AI, so the write needs a clinician's approval whatever its ledger
    row says. An input left `NOT_LOADED` that the decision reaches refuses the write (fail closed)."""
    if write.state in FINAL:
        return Step(FINAL_KIND, reason=f"this write is {write.get_state_display().lower()}")
    if tenant.mode == TenantMode.PAUSED:
        return Step(HELD, "paused", f"{tenant.slug} is paused")
    behaviour = holds.behaviour_for(write)
    if behaviour == "hold" or (behaviour == "drain" and not claimed):
        return Step(HELD, behaviour, "held by a kill switch or an unacknowledged alert")
    if blocker is not None:
        return Step(PARKED, "stream-order", f"waiting behind write {blocker.uid}", blocker=blocker)
    if write.state == WriteState.AWAITING_APPROVAL:
        return Step(APPROVAL, "awaiting-approval", "waiting for a clinician's approval")
    if write.state == WriteState.HELD_AUTHORIZATION:
        return Step(HELD_AUTHORIZATION, "held", write.last_error or "its authorisation lapsed before sending")

    check_first = may_have_landed(write)
    if (write.approval_required or software_proposed) and approval is None:
        return Step(
            APPROVAL,
            "approval-lapsed",
            "no valid approval for this exact payload (lapsed or changed)",
            check_first=check_first,
        )
    if tenant.mode == TenantMode.DRY_RUN:
        return Step(PREVIEW, "dry-run", "dry-run tenant: not sent", check_first=check_first)
    if not _sending_mode(write, tenant):
        return Step(SHADOW, "shadow", "shadow: compared, not written", check_first=check_first)

    refusal = _second_check(write, contract, consent, capability, binding, operation)
    if refusal is not None:
        code, message = refusal
        return Step(REFUSE, code, message, check_first=check_first)
    if authorization is NOT_LOADED:
        return Step(REFUSE, "not-checked", "send authorisation was not checked", check_first=check_first)
    if authorization is not None:
        return Step(
            HELD_AUTHORIZATION,
            authorization.rule,
            authorization.reason,
            check_first=check_first,
            void_approvals=authorization.approver,
        )
    prepare = write.operation in ("update", "patch") and "prepared_version" not in write.context
    return Step(SEND, check_first=check_first, prepare=prepare)


def _second_check(
    write: Write,
    contract: TenantContract | None,
    consent: ConsentDecision | None,
    capability: str | None,
    binding: str,
    operation: str,
) -> tuple[str, str] | None:
    # Defence in depth: a payload altered in the database must not reach another patient's chart.
    if binding is NOT_LOADED:
        return "not-checked", "patient binding was not checked"
    if binding:
        return "patient-binding", f"patient binding check before sending failed: {binding}"
    if consent is None or consent is NOT_LOADED:
        return "not-checked", "consent was not checked"
    if not consent.ok:
        return consent.rule, f"consent check before sending failed: {consent.reason}"
    if contract is None or contract is NOT_LOADED:
        return "not-checked", "the tenant's contract was not loaded"
    fields = touched_fields(write.resource_type, write.payload)
    decision = contract.decide(write.resource_type, write.operation, fields)
    if not decision:
        return decision.rule, f"capability check before sending failed: {decision.reason}"
    if capability is NOT_LOADED:
        return "not-checked", "the vendor's context was not checked"
    if capability:
        return "missing-context", capability
    return None


@dataclass
class Inputs:
    """Everything `next_step` reads, loaded for one write."""

    approval: Any = None
    consent: ConsentDecision | None = NOT_LOADED
    capability: str | None = NOT_LOADED
    binding: str = NOT_LOADED
    authorization: Lapse | None = NOT_LOADED
    operation: str = ""
    software_proposed: bool = False

    def decide(
        self,
        write: Write,
        tenant: Tenant,
        holds: Holds,
        contract: TenantContract | None,
        *,
        claimed: bool = True,
        blocker: Write | None = None,
    ) -> Step:
        return next_step(
            write,
            tenant,
            holds,
            contract,
            self.approval,
            self.consent,
            self.capability,
            claimed=claimed,
            blocker=blocker,
            binding=self.binding,
            authorization=self.authorization,
            operation=self.operation,
            software_proposed=self.software_proposed,
        )


def software_proposed(write: Write) -> bool:
    """Software proposes, people decide: a write of an automation- or AI-proposed event waits for a
    clinician even if its ledger row lost the flag (its Provenance only attests the approved writes)."""
    return write.event.source_kind != BusinessEvent.SourceKind.HUMAN and write.resource_type != "Provenance"


def load_inputs(
    write: Write, tenant: Tenant, adapter: VendorAdapter, req: WriteRequest, reads: SendReads | None = None
) -> Inputs:
    """Loads what the decision needs. The send checks (consent, authorisation: three queries) are
    loaded only for a write a sending tenant may send; `next_step` never reaches them otherwise, and
    refuses the write if it does. `reads`: their rows, read for the worker's whole batch."""
    from writeback.services.approvals import valid_approval
    from writeback.services.consents import consent_check
    from writeback.services.patient_binding import write_binding_problem
    from writeback.services.send_authorization import send_authorization_lapse

    inputs = Inputs(software_proposed=software_proposed(write))
    needs_approval = write.approval_required or inputs.software_proposed
    inputs.approval = valid_approval(write) if needs_approval else None
    if write.state in FINAL or not _sending_mode(write, tenant):
        return inputs
    if needs_approval and inputs.approval is None:
        return inputs
    inputs.binding = write_binding_problem(write)
    # Checked against the interaction that goes out: a compensating write is the create or update it
    # performs (an entered-in-error status is an update), never the ledger's word "compensate".
    inputs.operation = compensation_method(req)
    inputs.consent = consent_check(
        tenant=tenant,
        patient_ref=write.patient_ref,
        writes=[(write.resource_type, inputs.operation)],
        consents=reads.consents_for(write) if reads is not None else None,
    )
    inputs.capability = adapter.preflight(req)
    inputs.authorization = send_authorization_lapse(write, reads)
    return inputs
