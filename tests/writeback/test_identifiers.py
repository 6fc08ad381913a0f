"""Our identifier is defined once (adapters/identifiers.py). Whatever produced a resource (the mapping
of every event type, every replay mode, every compensation), the resource stored at the target carries
exactly one identifier of ours, and the worker's own check-by-read finds it by that identifier."""

import pytest
from django.conf import settings

from adapters.identifiers import SINGLE_IDENTIFIER, identifiers_of, stamp_identifier
from tests.writeback.helpers import EVENT_TYPES
from tests.writeback.sync.conftest import drain, post
from writeback.models import Write
from writeback.services.approvals import write_approve
from writeback.services.compensation import write_compensate
from writeback.services.replay import write_replay
from writeback.services.requests import build_request, identity_uid
from writeback.services.targets import adapter_for
from writeback.states import WriteState


def _ours(resource: dict) -> list[dict]:
    return [i for i in identifiers_of(resource) if i.get("system") == settings.WRITEBACK_IDENTIFIER_SYSTEM]


def _stored(sim, resource_type: str, resource_id: str) -> dict:
    return next(r for r in sim.resources(resource_type) if r["id"] == resource_id)


def _assert_landed_once_and_found(tenant, sim, write: Write) -> None:
    write.refresh_from_db()
    assert write.state == WriteState.COMMITTED, (write.resource_type, write.state, write.last_error)
    stored = _stored(sim, write.resource_type, write.target_resource_id)
    mine = _ours(stored)
    assert mine == [{"system": settings.WRITEBACK_IDENTIFIER_SYSTEM, "value": identity_uid(write)}], mine
    shape = dict if write.resource_type in SINGLE_IDENTIFIER else list
    assert isinstance(stored["identifier"], shape)
    found = adapter_for(tenant).find_by_identifier(build_request(write))
    assert found.found is True and found.resource_id == write.target_resource_id, found.message


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_created_resource_carries_one_identifier_of_ours(live, sim, api, clinician2, event_type):
    writes = post(api, event_type)
    for w in writes:
        if w.state == WriteState.AWAITING_APPROVAL:
            write_approve(write=w, user=clinician2, rationale="identifier test")
    drain()
    creates = [w for w in writes if (w.context or {}).get("wire_operation", w.operation) == "create"]
    for w in creates:
        _assert_landed_once_and_found(live, sim, w)


@pytest.mark.parametrize("mode", ["resend", "rederive", "edit"])
def test_every_replay_mode_lands_with_the_originals_identifier(live, sim, api, engineer, mode):
    sim.set_faults("error_5xx=1,seed=1")
    original = post(api, "problem.confirmed")[0]
    Write.objects.filter(pk=original.pk).update(max_attempts=1)
    drain()
    sim.clear_faults()
    original.refresh_from_db()
    Write.objects.filter(pk=original.pk).update(max_attempts=5)
    payload = {**original.payload, "note": [{"text": "edited"}]} if mode == "edit" else None
    replayed = write_replay(
        write=original, user=engineer, mode=mode, reason="identifier test", payload=payload
    )
    if replayed.state == WriteState.AWAITING_APPROVAL:
        pytest.fail("a problem edit by an engineer should not need approval in this fixture")
    drain()
    _assert_landed_once_and_found(live, sim, replayed)
    assert identity_uid(replayed) == str(original.uid)


def test_every_compensation_leaves_one_identifier_of_ours(live, sim, api, admin_user, clinician2):
    writes = post(api, "problem.confirmed") + post(api, "note.signed")
    drain()
    for w, kind, user in ((writes[0], "rollback", admin_user), (writes[-1], "correction", clinician2)):
        w.refresh_from_db()
        data = {"text": "Amended note."} if kind == "correction" else None
        comp = write_compensate(write=w, user=user, kind=kind, reason="identifier test", data=data)
        drain()
        for c in comp.writes.all():
            c.refresh_from_db()
            assert c.state == WriteState.COMMITTED, (c.state, c.last_error)
            stored = _stored(sim, c.resource_type, c.target_resource_id)
            assert len(_ours(stored)) == 1, stored.get("identifier")


def test_stamping_replaces_a_foreign_value_of_our_system_and_keeps_other_identifiers():
    system = settings.WRITEBACK_IDENTIFIER_SYSTEM
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": "urn:mrn", "value": "1"}, {"system": system, "value": "forged"}],
    }
    stamped = stamp_identifier(resource, system, "w-1")
    assert list(stamped)[:2] == ["resourceType", "identifier"]
    assert stamped["identifier"] == [{"system": system, "value": "w-1"}, {"system": "urn:mrn", "value": "1"}]
    assert resource["identifier"][1]["value"] == "forged"  # the input is never changed
    single = stamp_identifier({"resourceType": "QuestionnaireResponse"}, system, "w-2")
    assert single["identifier"] == {"system": system, "value": "w-2"}
