"""Every new write enters the ledger the same way (writeback.services.ledger): intake, replays, conflict
resolutions and compensations all leave a `write.created` entry with the write's lineage, queue it
through the state machine, and a create carries exactly one identifier of ours, its identity."""

from adapters.identifiers import identifiers_of
from tests.writeback.sync.conftest import drain, post
from tests.writeback.sync.test_replay_and_modes import SYSTEM, _failed
from writeback.models import AuditEntry, Write
from writeback.services.compensation import write_compensate
from writeback.services.replay import write_replay
from writeback.states import WriteState


def _ours(payload: dict) -> list[str]:
    return [str(i.get("value")) for i in identifiers_of(payload) if i.get("system") == SYSTEM]


def _created(write: Write) -> AuditEntry:
    return AuditEntry.objects.get(action="write.created", write_uid=str(write.uid))


def test_an_edited_replay_cannot_forge_or_drop_the_identity(live, sim, api, admin_user):
    original = _failed(api, sim)[0]
    forged = {**original.payload, "identifier": [{"system": SYSTEM, "value": "someone-elses-write"}]}
    new = write_replay(write=original, user=admin_user, mode="edit", payload=forged, reason="fix")
    # Only the original's identity: the check by read finds where the original may have landed.
    assert _ours(Write.objects.get(pk=new.pk).payload) == [str(original.uid)]
    stripped = {k: v for k, v in original.payload.items() if k != "identifier"}
    again = write_replay(write=new, user=admin_user, mode="edit", payload=stripped, reason="again")
    assert _ours(Write.objects.get(pk=again.pk).payload) == [str(original.uid)]


def test_a_replay_is_created_and_queued_like_an_intake_write(live, sim, api, engineer):
    original = _failed(api, sim)[0]
    new = write_replay(write=original, user=engineer, mode="rederive", reason="mapping fixed")
    stored = Write.objects.get(pk=new.pk)
    assert stored.state == WriteState.PENDING and stored.replay_of_id == original.pk
    assert (stored.event_id, stored.position, stored.contract_version) == (
        original.event_id,
        original.position,
        original.contract_version,
    )
    created = _created(stored)
    assert created.data["replay_of"] == str(original.uid)
    assert created.data["payload_hash"] == stored.payload_hash
    moves = AuditEntry.objects.filter(action="write.transition", write_uid=str(stored.uid))
    assert [(m.data["from"], m.data["to"]) for m in moves] == [("validated", "pending")]


def test_compensating_writes_are_created_through_the_ledger(live, sim, api, admin_user):
    original = post(api, "problem.confirmed")[0]
    drain()
    comp = write_compensate(write=original, user=admin_user, kind="rollback", reason="wrong chart")
    for w in comp.writes.all():
        assert w.state == WriteState.PENDING and w.compensates_id == original.pk
        assert _created(w).data["compensates"] == str(original.uid)
        assert _created(w).event_uid == str(comp.event.uid)
