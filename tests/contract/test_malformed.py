"""Malformed data that gets past our preflight (here: sent with the preflight switched off, as a defect in
it would) reaches each profile and comes back refused in the vendor's own error format: a 400/422
OperationOutcome over FHIR, `success: false` from athena v1, `[{"Error"}]` in an HTTP 200 from Unity.
Each is classified terminal with the target's message kept, and nothing is stored."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from adapters.base import Outcome, WriteRequest
from tests.contract.cases import EVENT_TYPES, current, ours, prepare, requests_for, supported

pytestmark = pytest.mark.parametrize("event_type", EVENT_TYPES)


def _set(path: str, value: Any) -> Callable[[WriteRequest], None]:
    def change(req: WriteRequest) -> None:
        *parents, leaf = path.split(".")
        node: Any = req.resource
        for step in parents:
            node = node[int(step)] if step.isdigit() else node[step]
        node[int(leaf) if leaf.isdigit() else leaf] = value

    return change


def _reference_as_text(req: WriteRequest) -> None:
    key = "patient" if "patient" in req.resource else "subject"
    req.resource[key] = req.resource[key]["reference"]  # a Reference must be an object


# (profile, event type) -> (the malformation, the answer's status, words the kept message holds)
FHIR_422 = (_reference_as_text, 422, ["HTTP 422", "must be a Reference object"])
MALFORMED: dict[tuple[str, str], tuple[Callable[[WriteRequest], None], int, list[str]]] = {
    **{
        ("generic", e): FHIR_422
        for e in EVENT_TYPES
        if e not in ("demographics.updated", "referral.status_changed")
    },
    ("generic", "demographics.updated"): (
        _set("telecom", "+1 555 0100"),
        422,
        ["HTTP 422", "telecom must be a list of objects"],
    ),
    ("generic", "referral.status_changed"): (
        _set("status", {"code": "accepted"}),
        422,
        ["HTTP 422", "status must be a code"],
    ),
    **{
        ("epic", e): FHIR_422
        for e in ("vitals.recorded", "note.signed", "problem.confirmed", "allergy.recorded")
    },
    ("athena", "intake.completed"): FHIR_422,
    ("athena", "vitals.recorded"): (
        _set("valueQuantity.value", "seventy-two"),
        200,
        ["athena refused", "must be a number"],
    ),
    ("athena", "problem.confirmed"): (
        _set("code.coding.0.code", "38341003-X"),
        200,
        ["athena refused", "Invalid snomedcode"],
    ),
    ("athena", "allergy.recorded"): (
        _set("criticality", "extreme"),
        200,
        ["athena refused", "Invalid criticality"],
    ),
    # athena's medication write takes its own medicationid: a malformed RxNorm code is refused at the
    # reference lookup that must come first (athena answers with no match).
    ("athena", "medication.reconciled"): (
        _set("medicationCodeableConcept.coding.0.code", "RX-197361"),
        200,
        ["medication list has no match for RxNorm RX-197361"],
    ),
    ("athena", "note.signed"): (
        _set("content.0.attachment.data", ""),
        400,
        ["HTTP 400", "attachmentcontents"],
    ),
    ("athena", "demographics.updated"): (
        _set("telecom.0.value", "call me"),
        200,
        ["athena refused", "Invalid phone number"],
    ),
    ("veradigm", "vitals.recorded"): (
        _set("valueQuantity.value", "seventy-two"),
        200,
        ["Unity refused", "needs a numeric value"],
    ),
    ("veradigm", "problem.confirmed"): (
        _set("onsetDateTime", "2024-13-45"),
        200,
        ["Unity refused", "Invalid onset"],
    ),
    ("veradigm", "allergy.recorded"): (
        _set("criticality", "extreme"),
        200,
        ["Unity refused", "Invalid criticality"],
    ),
    ("veradigm", "medication.reconciled"): (
        _set("status", "taken-sometimes"),
        200,
        ["Unity refused", "Invalid medication status"],
    ),
    ("veradigm", "note.signed"): (_set("content.0.attachment.data", ""), 200, ["Unity refused", "note text"]),
    ("veradigm", "referral.status_changed"): (
        _set("status", "half-done"),
        200,
        ["Unity refused", "Invalid task status"],
    ),
}
# Vitals: the heart-rate reading (one value, every profile takes it).
WHICH = {"vitals.recorded": 1}


def test_malformed_data_past_preflight_is_refused_by_the_target(sim, adapter, event_type, n, monkeypatch):
    if not supported(sim.profile, event_type):
        return  # refused before sending whatever the data (test_matrix asserts the reason)
    req = requests_for(event_type, n)[WHICH.get(event_type, -1)]
    prepare(sim, req)
    malform, status, words = MALFORMED[(sim.profile, event_type)]
    malform(req)
    before = current(sim, req.resource_type, req.target_id) if req.target_id else None
    monkeypatch.setattr(adapter, "preflight", lambda _req: None)
    result = adapter.write(req)
    assert result.outcome is Outcome.TERMINAL, (result.outcome, result.message)
    for word in words:
        assert word in result.message
    refused = result.exchanges[-1]
    assert refused.status == status and refused.response_body, "the target's answer is kept"
    seen = sim.requests(5)[-1]
    assert seen["status"] == status and seen["path"] in refused.url  # it reached the simulator
    if req.operation == "create":
        assert ours(sim, sim.profile, event_type, req) == []
    else:
        assert current(sim, req.resource_type, req.target_id) == before  # nothing changed
