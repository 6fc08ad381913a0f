"""One round trip where the vendor answers faithfully: the write's answer (asked for with
`Prefer: return=representation`) is the read-back when it names the written resource; otherwise, and at
vendors not known to answer faithfully, the worker reads the resource back with a GET as before."""

import json

import pytest

from adapters.simulator import start_simulator
from tests.writeback.sync.conftest import drain, ours, post
from writeback.models import AuditEntry, Capability, Write, WriteAttempt
from writeback.states import WriteState


def sent_since(sim, before: int) -> list[tuple[str, str]]:
    """The FHIR requests the simulator served since `before` (discovery's /metadata left out)."""
    return [
        (r["method"], r["path"].split("?")[0])
        for r in sim.requests(5000)[before:]
        if not r["path"].startswith("/fhir/metadata")
    ]


def readback_entry(write: Write) -> dict:
    return AuditEntry.objects.get(action="write.readback", write_uid=str(write.uid)).data


def test_a_create_is_one_request_and_its_answer_is_the_read_back(live, sim, api):
    writes = post(api, "vitals.recorded")
    before = len(sim.requests(5000))
    drain()
    assert sent_since(sim, before) == [("POST", "/fhir/Observation")] * len(writes)
    assert set(ours(sim).values()) == {1}
    for w in writes:
        w.refresh_from_db()
        assert w.state == WriteState.COMMITTED and w.target_version == "1"
        assert w.readback_diff == [] and w.warnings == []
        assert list(WriteAttempt.objects.filter(write=w).values_list("method", flat=True)) == ["POST"]
        entry = readback_entry(w)
        assert entry["source"] == "answer" and entry["differences"] == 0
        assert "answer_not_taken" not in entry


def test_a_field_the_ehr_changed_is_recorded_from_the_answer_exactly_as_a_read_records_it(live, sim, api):
    """The server keeps 12 characters of a note: the answer shows it as the GET would, and the diff,
    the warning and the audit entry are the same either way."""
    sim.set_faults("note_limit=12")
    before = len(sim.requests(5000))
    by_answer = post(api, "problem.confirmed", key="by-answer")[0]
    drain()
    assert [m for m, _ in sent_since(sim, before)] == ["POST"]
    sim.set_faults("note_limit=12,write_answer=minimal")  # the same server, answering with no body
    before = len(sim.requests(5000))
    by_read = post(api, "problem.confirmed", key="by-read")[0]
    drain()
    assert [m for m, _ in sent_since(sim, before)] == ["POST", "GET"]

    by_answer.refresh_from_db()
    by_read.refresh_from_db()
    assert by_answer.state == by_read.state == WriteState.COMMITTED
    note = by_answer.payload["note"][0]["text"]
    assert len(note) > 12
    assert (
        by_answer.readback_diff
        == by_read.readback_diff
        == [{"path": "note[0].text", "sent": note, "stored": note[:12], "kind": "changed"}]
    )
    assert by_answer.warnings == by_read.warnings and "differently" in by_answer.warnings[0]
    stored = sim.resources("Condition", patient="pat-1001")
    assert {c["note"][0]["text"] for c in stored if c["id"] == by_answer.target_resource_id} == {note[:12]}
    answer_entry, read_entry = readback_entry(by_answer), readback_entry(by_read)
    assert (answer_entry["source"], read_entry["source"]) == ("answer", "read")
    for key in ("differences", "paths", "warning"):
        assert answer_entry[key] == read_entry[key]


@pytest.mark.parametrize(
    "mode, why",
    [
        ("minimal", "no resource in its body"),
        ("outcome", "OperationOutcome, not Condition"),
        ("wrong_type", "Basic, not Condition"),
        ("wrong_id", "not the one written"),
        ("wrong_version", "its headers say 1"),
        ("no_location", "no Location"),
    ],
)
def test_an_answer_that_does_not_name_the_written_resource_is_read_back_with_a_get(live, sim, api, mode, why):
    sim.set_faults(f"write_answer={mode}")
    write = post(api, "problem.confirmed")[0]
    before = len(sim.requests(5000))
    drain()
    write.refresh_from_db()
    assert write.state == WriteState.COMMITTED and write.target_resource_id
    assert sent_since(sim, before) == [
        ("POST", "/fhir/Condition"),
        ("GET", f"/fhir/Condition/{write.target_resource_id}"),  # the stored one, not the body's id
    ]
    assert write.readback_diff == [] and write.warnings == []
    steps = WriteAttempt.objects.filter(write=write, method="GET", outcome=WriteAttempt.Outcome.STEP)
    assert steps.count() == 1
    entry = readback_entry(write)
    assert entry["source"] == "read" and why in entry["answer_not_taken"]


def test_an_update_answered_with_the_stored_resource_needs_no_read_back(live, sim, api):
    version = next(p for p in sim.resources("Patient") if p["id"] == "pat-1001")["meta"]["versionId"]
    write = post(api, "demographics.updated", base_version=version)[0]
    before = len(sim.requests(5000))
    drain()
    write.refresh_from_db()
    assert write.state == WriteState.COMMITTED
    # The prepare read (version and pre-image), then the PATCH; its answer is the read-back.
    assert [m for m, _ in sent_since(sim, before)] == ["GET", "PATCH"]
    assert write.readback_diff == [] and readback_entry(write)["source"] == "answer"


def test_a_tenant_without_reads_gets_no_read_back_even_from_the_answer(live, sim, api):
    """The answer is a read-back, so it follows the read-back's rule: no reads enabled, none kept."""
    Capability.objects.filter(tenant=live, resource_type="Condition", operation="read").update(allowed=False)
    write = post(api, "problem.confirmed")[0]
    drain()
    write.refresh_from_db()
    assert write.state == WriteState.COMMITTED
    assert not AuditEntry.objects.filter(action="write.readback", write_uid=str(write.uid)).exists()


@pytest.fixture(scope="module")
def epic_sim():
    sim = start_simulator("epic", seed="demo")
    yield sim
    sim.stop()


def test_a_vendor_not_known_to_answer_faithfully_is_still_read_back(live, epic_sim, api):
    """Epic answers a create with a body when asked, but whether it is what a read returns is not
    established (docs/vendors.md): the worker reads back, and does not even weigh the body."""
    epic_sim.reset(seed="demo")
    live.vendor, live.base_url = "epic", epic_sim.fhir_base
    live.save()
    write = post(api, "problem.confirmed")[0]
    drain()
    write.refresh_from_db()
    assert write.state == WriteState.COMMITTED
    requests = [(r["method"], r["path"].split("?")[0]) for r in epic_sim.requests(100)]
    assert [m for m, path in requests if not path.endswith("/metadata")] == ["POST", "GET"]
    post_row = WriteAttempt.objects.get(write=write, method="POST")
    assert json.loads(post_row.response_body)["id"] == write.target_resource_id  # a body came, unweighed
    entry = readback_entry(write)
    assert entry["source"] == "read" and "answer_not_taken" not in entry
