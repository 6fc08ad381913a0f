"""The matrix: 4 profiles x 8 event types x {positive write with the stored resource checked, rejected
write, version conflict, malformed data, repeated delivery}. Where a profile refuses a type, every
scenario asserts the explicit refusal and its reason, and that nothing was sent."""

from __future__ import annotations

import copy

import pytest

from adapters.base import Outcome, WireLoss
from tests.contract.cases import (
    EVENT_TYPES,
    REJECTIONS,
    UPDATES,
    current,
    deliver,
    ours,
    prepare,
    requests_for,
    supported,
    trusts_conditional_create,
)
from tests.contract.fidelity import declared_for, differences, undeclared
from writeback.diffs import readback_diff

pytestmark = pytest.mark.parametrize("event_type", EVENT_TYPES)


def assert_refused(adapter, req):
    reason = adapter.refusal(req.resource_type, req.operation)
    assert reason, f"{adapter.vendor} should refuse {req.resource_type} {req.operation}"
    result = adapter.write(req)
    assert result.outcome is Outcome.TERMINAL and reason in result.message
    assert result.exchanges == []  # refused before anything was sent
    assert adapter.plan(req) == []


def refused_here(sim, adapter, event_type, n) -> bool:
    if supported(sim.profile, event_type):
        return False
    for req in requests_for(event_type, n):
        assert_refused(adapter, req)
    return True


def test_positive_write_lands_exactly_as_meant(sim, adapter, event_type, n):
    """The stored resource against our *intended* one (not the adapter's translation): any difference
    the adapter does not declare fails, dropped, changed or added; and every declared loss occurs."""
    if refused_here(sim, adapter, event_type, n):
        return
    declared: set[WireLoss] = set()
    used: set[WireLoss] = set()
    for req in requests_for(event_type, n):
        prepare(sim, req)
        intended = copy.deepcopy(req.resource)
        result = adapter.write(req)
        assert result.outcome is Outcome.COMMITTED, result.message
        assert result.resource_id, "the server's id is captured"
        stored = current(sim, req.resource_type, result.resource_id)
        assert stored is not None
        # The worker's read-back: what the adapter says it sent is what the EHR holds.
        assert readback_diff(result.sent, stored) == []
        # An update owns only the elements it writes; the rest of the chart is the EHR's.
        owned = [k for k in intended if k not in ("resourceType", "id")]
        fields = None if req.operation == "create" else owned
        found = differences(intended, stored, fields)
        assert undeclared(adapter, found, req.resource_type, used) == [], sim.profile
        declared |= set(declared_for(adapter, req.resource_type))
        version = str(stored["meta"]["versionId"])
        if result.version:
            assert result.version == version
        if sim.profile == "generic":
            assert result.version == version, "a conformant server always tells the version"
        if req.operation == "create":
            assert len(ours(sim, sim.profile, event_type, req)) == 1
    # A declared loss that never occurs would hide the day the vendor path starts losing something else.
    assert declared == used, sorted(loss.path for loss in declared - used)


def test_rejected_write_shows_the_reason(sim, adapter, event_type, n):
    if refused_here(sim, adapter, event_type, n):
        return
    change, words = REJECTIONS[(sim.profile, event_type)]
    req = requests_for(event_type, n)[-1]
    prepare(sim, req)
    if change == "duplicates":
        twin = {**req.resource, "id": f"twin-{req.write_uid[:8]}"}
        sim.seed([twin, {**twin, "id": f"twin2-{req.write_uid[:8]}"}])
    elif change == "other-patients-encounter":
        req.encounter_ref = f"enc-{n + 1}"
        req.resource["context"] = {"encounter": [{"reference": f"Encounter/enc-{n + 1}"}]}
    elif change == "other-patients-task":
        req.target_id = req.resource["id"] = f"task-{n + 1}"
    else:
        change(req)
    before = len(ours(sim, sim.profile, event_type, req)) if req.operation == "create" else 0
    result = adapter.write(req)
    assert result.outcome is Outcome.TERMINAL, (result.outcome, result.message)
    assert result.exchanges and result.exchanges[-1].status, "refused by the target, not before sending"
    for word in words:
        assert word in result.message
    if req.operation == "create":
        assert len(ours(sim, sim.profile, event_type, req)) == before


def test_version_conflict_never_overwrites_a_newer_edit(sim, adapter, event_type, n):
    if refused_here(sim, adapter, event_type, n):
        return
    req = requests_for(event_type, n)[-1]
    prepare(sim, req)
    if event_type in UPDATES:
        # A clinician changes the resource after the write was based on it.
        edit = (
            {"status": "in-progress"}
            if event_type == "referral.status_changed"
            else {"telecom": [{"system": "phone", "value": "555-0999", "use": "mobile"}]}
        )
        sim.edit(req.resource_type, req.target_id, edit)
        result = adapter.write(req)
        assert result.outcome is Outcome.CONFLICT, result.message
        assert result.current is not None
        held = current(sim, req.resource_type, req.target_id)
        for key, value in edit.items():
            assert held[key] == value  # the clinician's edit stands
        return
    committed = adapter.write(req)
    assert committed.outcome is Outcome.COMMITTED, committed.message
    plan = adapter.compensation(
        req, kind="rollback", resource_id=committed.resource_id, version=committed.version, data=None
    )
    if not plan.requests:
        # No update API at this vendor: the undo is a person's task, said exactly.
        assert plan.manual is not None and req.write_uid in plan.manual.instructions
        undo = requests_for(event_type, n)[-1]
        undo.operation = "compensate"
        assert adapter.preflight(undo)
        return
    sim.edit(req.resource_type, committed.resource_id, {"note": [{"text": "amended by a clinician"}]})
    undo = plan.requests[0]
    result = adapter.write(undo)
    assert result.outcome is Outcome.CONFLICT, result.message
    held = current(sim, req.resource_type, committed.resource_id)
    assert held["note"] == [{"text": "amended by a clinician"}]
    assert held.get("status") != "entered-in-error"


def test_malformed_data_is_refused_before_sending(sim, adapter, event_type, n):
    if refused_here(sim, adapter, event_type, n):
        return
    req = requests_for(event_type, n)[-1]
    prepare(sim, req)
    if event_type == "referral.status_changed":
        req.resource["status"] = {"code": "accepted"}  # a code must be a string
    elif event_type == "demographics.updated":
        req.resource["telecom"] = "+1 555 0100"  # telecom is a list of ContactPoints
    else:
        key = "patient" if "patient" in req.resource else "subject"
        req.resource[key] = f"Patient/pat-{n}"  # a Reference must be an object
    sent_before = len(sim.requests(2000))
    result = adapter.write(req)
    assert result.outcome is Outcome.TERMINAL and "malformed FHIR" in result.message
    assert result.exchanges == [] and len(sim.requests(2000)) == sent_before


def test_repeated_delivery_makes_one_resource(sim, adapter, event_type, n):
    if refused_here(sim, adapter, event_type, n):
        return
    req = requests_for(event_type, n)[-1]
    prepare(sim, req)
    outcomes = [deliver(adapter, req)[0] for _ in range(3)]
    if trusts_conditional_create(adapter, req):
        assert outcomes == ["sent"] * 3  # the server's conditional create absorbs the repeats
    else:
        assert outcomes == ["sent", "found", "found"]  # check-by-read absorbs them
    if req.operation == "create":
        assert len(ours(sim, sim.profile, event_type, req)) == 1
    else:
        held = current(sim, req.resource_type, req.target_id)
        if sim.profile != "veradigm":  # Veradigm keeps no versions
            assert str(held["meta"]["versionId"]) == str(int(req.base_version) + 1)


def test_shadow_mode_reads_what_the_ehr_holds(sim, adapter, event_type, n):
    """current_for works for every cell (shadow mode compares even what it would never write)."""
    req = requests_for(event_type, n)[-1]
    prepare(sim, req)
    before = adapter.current_for(req)
    assert before.outcome is None, before.message
    if req.operation != "create":
        assert before.resource["id"] == req.target_id
        return
    assert before.resource is None  # a fresh patient has nothing of this kind yet
    if not supported(sim.profile, event_type):
        return
    written = adapter.write(req)
    assert written.outcome is Outcome.COMMITTED, written.message
    after = adapter.current_for(req)
    assert after.outcome is None and after.resource["id"] == written.resource_id
