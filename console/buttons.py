"""Which actions to offer one person for one write in its current state, and why others are absent.

The services enforce every rule again; this only decides what the page shows, so nobody is offered a
button that would be refused.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from writeback.models import Compensation, Conflict, Write
from writeback.services.approvals import DECIDABLE, shaped_by
from writeback.services.permissions import ACTION_ROLES, allowed, roles_of
from writeback.states import ALLOWED_TRANSITIONS, WriteState

S = WriteState
REPLAYABLE = (
    S.FAILED_TERMINAL,
    S.FAILED_RETRYABLE,
    S.OUTCOME_UNKNOWN,
    S.REJECTED,
    S.SHADOWED,
    S.PREVIEWED,
    S.COMMITTED,
)
ROLE_LABELS = {
    "clinician": "clinicians",
    "admin": "admins",
    "integration_engineer": "integration engineers",
    "auditor": "auditors",
    "client_app": "client apps",
}


@dataclass
class WriteActions:
    approve: bool = False
    rollback: bool = False
    correction: bool = False
    replay: bool = False
    replay_shadow_only: bool = False
    resolve: bool = False
    reconcile: bool = False
    export: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return any(
            (
                self.approve,
                self.rollback,
                self.correction,
                self.replay,
                self.resolve,
                self.reconcile,
                self.export,
            )
        )


def who_may(action: str) -> str:
    return " and ".join(ROLE_LABELS.get(r, r) for r in sorted(ACTION_ROLES[action]))


def four_eyes_note(how: str) -> str:
    """Why someone who shaped the payload sees no approve button."""
    return f"You {how} this change, so a second clinician must approve or reject it (four-eyes rule)."


def write_actions(
    write: Write,
    user: Any,
    *,
    open_conflict: Conflict | None,
    compensation: Compensation | None,
    may: Callable[[str, Any], bool] | None = None,
) -> WriteActions:
    """`may(action, tenant)` answers permission questions (defaults to `permissions.allowed`)."""
    if may is None:

        def may(action: str, tenant: Any) -> bool:
            return allowed(user, action, tenant)

    tenant = write.tenant
    out = WriteActions(export=may("view_audit", tenant))
    state = write.state
    if state in DECIDABLE:
        how = shaped_by(write, user)
        if not may("approve", tenant):
            out.notes.append(f"Only {who_may('approve')} approve or reject writes.")
        elif how:
            out.notes.append(four_eyes_note(how))
        else:
            out.approve = True
    if state == S.COMMITTED:
        if compensation is not None:
            kind, status = compensation.get_kind_display(), compensation.get_status_display()
            out.notes.append(f"A {kind.lower()} is already under way ({status.lower()}).")
        else:
            out.rollback = may("rollback", tenant)
            out.correction = may("correction", tenant)
            if not out.rollback:
                out.notes.append(f"Technical rollback is for {who_may('rollback')}.")
            if not out.correction:
                out.notes.append(f"Clinical correction is for {who_may('correction')}.")
    if state in REPLAYABLE and may("replay", tenant):
        out.replay = True
        out.replay_shadow_only = state == S.COMMITTED
    if S.RESOLVED in ALLOWED_TRANSITIONS.get(state, ()):
        out.resolve = may("resolve", tenant)
        if not out.resolve and state != S.CONFLICT:
            out.notes.append(f"Resolving by hand is for {who_may('resolve')}.")
    if state == S.CONFLICT and open_conflict is not None:
        out.reconcile = may("resolve_conflict", tenant)
        if not out.reconcile:
            out.notes.append(f"Reconciling a conflict is for {who_may('resolve_conflict')}.")
    if not out.any and not out.notes:
        roles = ", ".join(sorted(roles_of(user))) or "no role"
        out.notes.append(
            f"No action applies to a {write.get_state_display().lower()} write for your role ({roles})."
        )
    return out
