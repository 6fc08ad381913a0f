"""The write state machine: the states, the one table of allowed transitions, and groupings used by queries.

Only `writeback.services.transitions.transition()` changes a write's state. Persisted values are never
renamed or reused; retire a state by leaving it out of ALLOWED_TRANSITIONS.
"""

from django.db import models


class WriteState(models.TextChoices):
    DRAFT = "draft", "Draft"
    VALIDATED = "validated", "Validated"
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    PENDING = "pending", "Pending"
    OUTCOME_UNKNOWN = "outcome_unknown", "Outcome unknown"
    COMMITTED = "committed", "Committed"
    FAILED_RETRYABLE = "failed_retryable", "Failed (will retry)"
    FAILED_TERMINAL = "failed_terminal", "Failed (needs an operator)"
    CONFLICT = "conflict", "Conflict"
    REJECTED = "rejected", "Rejected"
    SUPERSEDED = "superseded", "Superseded"
    COMPENSATED = "compensated", "Compensated"
    RESOLVED = "resolved", "Resolved by hand"
    SHADOWED = "shadowed", "Shadowed (compared, not written)"
    PREVIEWED = "previewed", "Previewed (dry run, not written)"
    HELD_AUTHORIZATION = "held_authorization", "Held: authorisation lapsed"


S = WriteState

ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    S.DRAFT: frozenset({S.VALIDATED}),
    S.VALIDATED: frozenset({S.AWAITING_APPROVAL, S.PENDING, S.RESOLVED}),
    # -> resolved: closed before it was ever sent (a two-phase abort).
    S.AWAITING_APPROVAL: frozenset({S.PENDING, S.REJECTED, S.SUPERSEDED, S.RESOLVED}),
    S.PENDING: frozenset(
        {
            S.COMMITTED,
            S.FAILED_RETRYABLE,
            S.FAILED_TERMINAL,
            S.CONFLICT,
            S.OUTCOME_UNKNOWN,
            S.SHADOWED,
            S.PREVIEWED,
            S.AWAITING_APPROVAL,  # an approval lapsed or its payload changed before sending
            S.HELD_AUTHORIZATION,  # the people or token behind it lost their authority before sending
            S.SUPERSEDED,
            S.RESOLVED,
        }
    ),
    S.OUTCOME_UNKNOWN: frozenset(
        {
            S.COMMITTED,
            S.PENDING,
            S.FAILED_RETRYABLE,
            S.FAILED_TERMINAL,
            S.CONFLICT,
            S.RESOLVED,
            # Checked by read and not there, but its approval lapsed meanwhile: a person decides again.
            S.AWAITING_APPROVAL,
            S.HELD_AUTHORIZATION,
            S.SHADOWED,
            S.PREVIEWED,
            S.SUPERSEDED,
        }
    ),
    S.FAILED_RETRYABLE: frozenset(
        {
            S.PENDING,
            S.COMMITTED,
            S.FAILED_TERMINAL,
            S.CONFLICT,
            S.OUTCOME_UNKNOWN,
            S.SHADOWED,
            S.PREVIEWED,
            S.AWAITING_APPROVAL,
            S.HELD_AUTHORIZATION,
            S.RESOLVED,
            S.SUPERSEDED,
        }
    ),
    # Never sent: a clinician re-approves it (and answers for it), rejects it, or an admin resolves it.
    S.HELD_AUTHORIZATION: frozenset({S.PENDING, S.REJECTED, S.RESOLVED}),
    S.FAILED_TERMINAL: frozenset({S.PENDING, S.RESOLVED, S.SUPERSEDED}),
    S.CONFLICT: frozenset({S.SUPERSEDED, S.RESOLVED}),
    S.COMMITTED: frozenset({S.COMPENSATED, S.SUPERSEDED}),
    S.REJECTED: frozenset(),
    S.SUPERSEDED: frozenset(),
    S.COMPENSATED: frozenset(),
    S.RESOLVED: frozenset(),
    S.SHADOWED: frozenset(),
    S.PREVIEWED: frozenset(),
}

# States a worker may claim (when due and not leased).
CLAIMABLE = (S.PENDING, S.FAILED_RETRYABLE, S.OUTCOME_UNKNOWN)
# What a clinician may approve or reject: writes waiting for approval, and writes held at send time.
DECIDABLE = (S.AWAITING_APPROVAL, S.HELD_AUTHORIZATION)
# States of an earlier write that keep later writes of the same patient stream waiting (event order).
STREAM_BLOCKING = (
    S.VALIDATED,
    S.AWAITING_APPROVAL,
    S.PENDING,
    S.FAILED_RETRYABLE,
    S.OUTCOME_UNKNOWN,
    S.FAILED_TERMINAL,
    S.CONFLICT,
    S.HELD_AUTHORIZATION,
)
# States in which nothing more will happen without a person.
FINAL = (S.COMMITTED, S.REJECTED, S.SUPERSEDED, S.COMPENSATED, S.RESOLVED, S.SHADOWED, S.PREVIEWED)
NEEDS_OPERATOR = (
    S.FAILED_TERMINAL,
    S.CONFLICT,
    S.OUTCOME_UNKNOWN,
    S.AWAITING_APPROVAL,
    S.HELD_AUTHORIZATION,
)


class InvalidTransition(Exception):
    """A transition the table does not allow, or a write that moved under us."""


def check_transition(current: str, target: str) -> None:
    if target not in ALLOWED_TRANSITIONS.get(current, frozenset()):
        raise InvalidTransition(f"a write cannot go from {current} to {target}")
