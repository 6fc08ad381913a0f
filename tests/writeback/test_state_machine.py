"""The write state machine: the table in writeback/states.py and the one function that moves a write."""

import itertools

import pytest

from tests.writeback.helpers import consent_for, event
from writeback.models import AuditEntry, Write
from writeback.services.audit import verify_chain
from writeback.services.transitions import transition, transition_draft
from writeback.states import (
    ALLOWED_TRANSITIONS,
    CLAIMABLE,
    FINAL,
    InvalidTransition,
    WriteState,
    check_transition,
)

S = WriteState
ALLOWED = sorted((src, dst) for src, targets in ALLOWED_TRANSITIONS.items() for dst in targets)
ILLEGAL = sorted(
    (src, dst)
    for src, dst in itertools.product(S.values, S.values)
    if dst not in ALLOWED_TRANSITIONS.get(src, frozenset())
)


# -- the table ---------------------------------------------------------------------------------------


def test_the_table_names_every_state_and_only_known_states():
    assert set(ALLOWED_TRANSITIONS) == set(S.values)
    for targets in ALLOWED_TRANSITIONS.values():
        assert targets <= set(S.values)


def test_the_happy_path_of_the_design_is_allowed():
    path = [S.DRAFT, S.VALIDATED, S.AWAITING_APPROVAL, S.PENDING, S.COMMITTED, S.COMPENSATED]
    for src, dst in itertools.pairwise(path):
        check_transition(src, dst)


def test_final_states_other_than_committed_have_no_way_out():
    for state in FINAL:
        if state != S.COMMITTED:
            assert ALLOWED_TRANSITIONS[state] == frozenset(), state


def test_claimable_states_can_be_committed():
    for state in CLAIMABLE:
        assert S.COMMITTED in ALLOWED_TRANSITIONS[state]


@pytest.mark.parametrize(("src", "dst"), ILLEGAL, ids=[f"{s}->{d}" for s, d in ILLEGAL])
def test_check_transition_refuses_what_the_table_does_not_list(src, dst):
    with pytest.raises(InvalidTransition, match=f"a write cannot go from {src} to {dst}"):
        check_transition(src, dst)


def test_unknown_states_are_refused():
    with pytest.raises(InvalidTransition, match="cannot go from pending to sent"):
        check_transition(S.PENDING, "sent")
    with pytest.raises(InvalidTransition, match="cannot go from limbo to pending"):
        check_transition("limbo", S.PENDING)


# -- transition() on real rows -----------------------------------------------------------------------


@pytest.fixture
def seed_write(api, tenant, clinician) -> Write:
    """One write stored by intake; tests copy it into whatever state they start from."""
    consent_for(tenant)
    r = api.post("/api/v1/events", event("problem.confirmed"), format="json")
    assert r.status_code == 201, r.json()
    return Write.objects.select_related("tenant", "event").get(uid=r.json()["writes"][0]["id"])


def _write_in(seed: Write, state: str) -> Write:
    """A fresh ledger row of the seed's event, born in `state` (a test fixture, not a transition)."""
    return Write.objects.create(
        event=seed.event,
        tenant=seed.tenant,
        position=seed.position + 1,
        resource_type=seed.resource_type,
        operation=seed.operation,
        payload=seed.payload,
        payload_hash=seed.payload_hash,
        state=state,
        risk=seed.risk,
        patient_ref=seed.patient_ref,
        stream_key=seed.stream_key,
        correlation_id=seed.correlation_id,
    )


@pytest.mark.parametrize(("src", "dst"), ALLOWED, ids=[f"{s}->{d}" for s, d in ALLOWED])
def test_every_allowed_transition_moves_the_row_and_audits_it(seed_write, src, dst):
    write = _write_in(seed_write, src)
    transition(write, dst, actor="worker:test", reason="table test", request_id="req-1")
    stored = Write.objects.get(pk=write.pk)
    assert stored.state == dst and write.state == dst
    entry = AuditEntry.objects.get(action="write.transition", write_uid=str(write.uid))
    assert entry.data["from"] == src and entry.data["to"] == dst
    assert entry.data["reason"] == "table test" and entry.actor == "worker:test"
    assert (entry.tenant, entry.event_uid) == ("generic-main", str(seed_write.event.uid))
    assert entry.request_id == "req-1" and entry.correlation_id == seed_write.correlation_id


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (S.COMMITTED, S.PENDING),
        (S.REJECTED, S.PENDING),
        (S.DRAFT, S.COMMITTED),
        (S.AWAITING_APPROVAL, S.COMMITTED),  # nothing skips the approval gate
        (S.COMPENSATED, S.COMMITTED),
        (S.PENDING, "sent"),
    ],
)
def test_an_illegal_transition_changes_nothing(seed_write, src, dst):
    write = _write_in(seed_write, src)
    audit_before = AuditEntry.objects.count()
    with pytest.raises(InvalidTransition, match=f"a write cannot go from {src} to {dst}"):
        transition(write, dst, actor="worker:test")
    assert Write.objects.get(pk=write.pk).state == src and write.state == src
    assert AuditEntry.objects.count() == audit_before


def test_a_write_moved_meanwhile_is_refused_and_left_alone(seed_write):
    stale = Write.objects.get(pk=seed_write.pk)  # pending, as this copy believes
    transition(seed_write, S.COMMITTED, actor="worker:a")
    audit_before = AuditEntry.objects.count()
    with pytest.raises(InvalidTransition, match="is no longer pending"):
        transition(stale, S.FAILED_RETRYABLE, actor="worker:b")
    assert Write.objects.get(pk=seed_write.pk).state == S.COMMITTED
    assert AuditEntry.objects.count() == audit_before


def test_guard_conditions_must_still_hold(seed_write):
    transition(seed_write, S.FAILED_RETRYABLE, actor="worker:a", fields={"lease_owner": "worker:a"})
    audit_before = AuditEntry.objects.count()
    with pytest.raises(InvalidTransition):
        transition(seed_write, S.PENDING, actor="worker:b", guard={"lease_owner": "worker:b"})
    stored = Write.objects.get(pk=seed_write.pk)
    assert (stored.state, stored.lease_owner) == (S.FAILED_RETRYABLE, "worker:a")
    assert AuditEntry.objects.count() == audit_before


def test_fields_change_in_the_same_update_and_deferred_audit_waits(seed_write):
    drafts = []
    transition(
        seed_write,
        S.COMMITTED,
        actor="worker:a",
        fields={"target_resource_id": "cond-9", "target_version": "1"},
        target_ack=True,
        defer_audit=drafts,
    )
    stored = Write.objects.get(pk=seed_write.pk)
    assert (stored.state, stored.target_resource_id, stored.target_version) == (S.COMMITTED, "cond-9", "1")
    assert not AuditEntry.objects.filter(write_uid=str(seed_write.uid), data__to=S.COMMITTED).exists()
    assert [(d.action, d.data["from"], d.data["to"], d.target_ack) for d in drafts] == [
        ("write.transition", S.PENDING, S.COMMITTED, True)
    ]


def test_every_path_words_a_move_alike(seed_write):
    """`transition` and the writes the ledger inserts already queued share one wording
    (`transition_draft`): the trail cannot tell how a state changed, only that it did."""
    drafts = []
    transition(seed_write, S.COMMITTED, actor="worker:a", reason="sent", defer_audit=drafts)
    (moved,) = drafts
    drafted = transition_draft(seed_write, S.PENDING, S.COMMITTED, actor="worker:a", reason="sent")
    fields = ("action", "actor", "tenant", "object_type", "object_id", "write_uid", "event_uid", "data")
    assert [getattr(drafted, f) for f in fields] == [getattr(moved, f) for f in fields]
    assert drafted.data == {"from": S.PENDING, "to": S.COMMITTED, "reason": "sent"}


def test_the_chain_verifies_after_transitions(seed_write):
    transition(seed_write, S.COMMITTED, actor="worker:a")
    transition(seed_write, S.COMPENSATED, actor="ada.admin", reason="rolled back")
    assert verify_chain().ok
    trail = AuditEntry.objects.filter(write_uid=str(seed_write.uid), action="write.transition")
    assert [(e.data["from"], e.data["to"]) for e in trail.order_by("seq")] == [
        (S.VALIDATED, S.PENDING),
        (S.PENDING, S.COMMITTED),
        (S.COMMITTED, S.COMPENSATED),
    ]
