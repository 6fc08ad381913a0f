"""412s and stale bases become conflicts with base / ours / theirs; resolution never overwrites blindly."""

import pytest

from tests.writeback.sync.conftest import drain, post
from writeback.errors import DomainError
from writeback.models import AuditEntry, Conflict, Write, WriteAttempt
from writeback.services.conflicts import conflict_preview, conflict_resolve
from writeback.states import WriteState


def _patient(sim, pid="pat-1001"):
    return next(p for p in sim.resources("Patient") if p["id"] == pid)


def test_a_clinicians_newer_edit_turns_the_update_into_a_conflict(live, sim, api):
    before = _patient(sim)
    writes = post(api, "demographics.updated", base_version=before["meta"]["versionId"])
    # A clinician edits the phone in the EHR before our worker sends.
    sim.edit("Patient", "pat-1001", {"telecom": [{"system": "phone", "value": "+15559999", "use": "home"}]})
    drain()
    w = Write.objects.get(pk=writes[0].pk)
    assert w.state == WriteState.CONFLICT
    conflict = Conflict.objects.get(write=w)
    assert conflict.theirs["telecom"][0]["value"] == "+15559999"
    assert conflict.base["telecom"] == before["telecom"]  # read from _history
    assert conflict.theirs_version == str(int(before["meta"]["versionId"]) + 1)
    rows = {r["path"]: r for r in conflict.diff}
    assert rows["telecom"]["changed"] == "both" and rows["address"]["changed"] == "ours"
    assert _patient(sim)["telecom"][0]["value"] == "+15559999"  # never overwritten
    assert not WriteAttempt.objects.filter(write=w, method="PATCH").exists()


def test_a_412_from_the_target_is_a_conflict(live, sim, api):
    before = _patient(sim)
    writes = post(api, "demographics.updated", base_version=before["meta"]["versionId"])
    sim.set_faults("stale_version=1,seed=2")
    drain()
    w = Write.objects.get(pk=writes[0].pk)
    assert w.state == WriteState.CONFLICT
    assert WriteAttempt.objects.get(write=w, outcome="conflict").response_status == 412
    assert Conflict.objects.filter(write=w).count() == 1


def test_resolution_field_by_field_queues_a_write_with_if_match_on_theirs(live, sim, api, admin_user):
    before = _patient(sim)
    writes = post(api, "demographics.updated", base_version=before["meta"]["versionId"])
    sim.edit("Patient", "pat-1001", {"telecom": [{"system": "phone", "value": "+15559999", "use": "home"}]})
    drain()
    conflict = Conflict.objects.get(write=writes[0])
    with pytest.raises(DomainError, match="telecom"):
        conflict_preview(conflict, {})  # both changed telecom: a person must choose
    typed = [
        {"system": "phone", "value": "+15550100", "use": "mobile"},
        {"system": "phone", "value": "+15559999", "use": "home"},
    ]
    preview = conflict_preview(conflict, {"telecom": {"value": typed}, "address": "ours"})
    assert preview["telecom"] == typed and preview["address"][0]["city"] == "Springfield"
    new = conflict_resolve(
        conflict=conflict, user=admin_user, choices={"telecom": {"value": typed}, "address": "ours"}
    )
    assert new.state == WriteState.PENDING and new.base_version == conflict.theirs_version
    assert Write.objects.get(pk=writes[0].pk).state == WriteState.SUPERSEDED
    drain()
    new.refresh_from_db()
    assert new.state == WriteState.COMMITTED
    patch = WriteAttempt.objects.get(write=new, outcome="committed")
    headers = {k.lower(): v for k, v in patch.request_headers.items()}
    assert headers["if-match"] == f'W/"{conflict.theirs_version}"'
    stored = _patient(sim)
    assert stored["telecom"] == typed and stored["address"][0]["city"] == "Springfield"
    assert AuditEntry.objects.filter(action="conflict.resolved").count() == 1


def test_resolution_refused_for_an_auditor(live, sim, api, auditor):
    from writeback.services.permissions import ActionRefused

    before = _patient(sim)
    writes = post(api, "demographics.updated", base_version=before["meta"]["versionId"])
    sim.edit("Patient", "pat-1001", {"telecom": []})
    drain()
    conflict = Conflict.objects.get(write=writes[0])
    with pytest.raises(ActionRefused):
        conflict_resolve(conflict=conflict, user=auditor, choices={"telecom": "ours", "address": "ours"})
    assert AuditEntry.objects.filter(action="access.refused", object_id=str(conflict.uid)).exists()
