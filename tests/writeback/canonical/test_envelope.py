"""The envelope: 400 for an unusable envelope, warnings for unknown keys, the stored and hashed forms."""

import pytest

from writeback.canonical import CanonicalEvent, canonicalize

from .examples import NOW, envelope
from .helpers import canonical, errors, warnings


def status_and_errors(body):
    result = canonicalize(body, now=NOW)
    assert result.event is None
    return result.status, errors(result.issues)


@pytest.mark.parametrize("body", [[], "text", 42, None, True, [{"type": "vitals.recorded"}]])
def test_a_non_object_is_an_invalid_envelope(body):
    assert status_and_errors(body) == (400, [("invalid-envelope", "")])


@pytest.mark.parametrize("field", ["tenant", "type", "occurred_at", "patient", "data"])
def test_each_required_envelope_field(field):
    body = envelope("vitals.recorded")
    del body[field]
    assert status_and_errors(body) == (400, [("missing-field", field)])


def test_patient_needs_an_id():
    body = envelope("vitals.recorded")
    del body["patient"]["id"]
    assert status_and_errors(body) == (400, [("missing-field", "patient.id")])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tenant", 7),
        ("tenant", ""),
        ("tenant", "epic main!"),
        ("type", ["vitals.recorded"]),
        ("occurred_at", 1763665380),
        ("patient", "pat-1001"),
        ("data", [1, 2]),
        ("data", "x"),
        ("source", "intake-portal"),
        ("encounter", ["enc-77"]),
        ("idempotency_key", 123),
        ("idempotency_key", "k" * 201),
    ],
)
def test_ill_typed_envelope_fields(field, value):
    body = envelope("vitals.recorded")
    body[field] = value
    assert status_and_errors(body) == (400, [("invalid-envelope", field)])


def test_ill_typed_nested_envelope_field():
    body = envelope("vitals.recorded")
    body["patient"]["id"] = 1001
    assert status_and_errors(body) == (400, [("invalid-envelope", "patient.id")])


def test_unknown_type():
    body = envelope("vitals.recorded")
    body["type"] = "vitals.deleted"
    assert status_and_errors(body) == (400, [("unknown-type", "type")])


def test_every_envelope_problem_is_reported_at_once():
    status, found = status_and_errors({"type": "nope", "tenant": 1, "patient": {}})
    assert status == 400
    assert set(found) == {
        ("unknown-type", "type"),
        ("invalid-envelope", "tenant"),
        ("missing-field", "occurred_at"),
        ("missing-field", "patient.id"),
        ("missing-field", "data"),
    }


def test_unknown_keys_are_warnings_not_errors():
    body = envelope("vitals.recorded")
    body["priority"] = "high"
    body["patient"]["name"] = "Jane"
    result = canonicalize(body, now=NOW)
    assert result.status == 200
    assert result.event is not None
    assert warnings(result.issues) == [("unknown-field", "priority"), ("unknown-field", "patient.name")]
    assert "priority" not in result.event.to_json()


def test_optional_envelope_parts_may_be_left_out():
    body = envelope("vitals.recorded")
    for key in ("idempotency_key", "source", "encounter", "initiator", "device"):
        del body[key]
    del body["patient"]["identifier"]
    event = canonical(body)
    assert event.idempotency_key is None
    assert event.encounter is None and event.device is None and event.initiator is None
    assert event.to_json()["patient"] == {"id": "pat-1001"}


def test_source_message_id_is_optional():
    body = envelope("vitals.recorded")
    body["source"] = {"system": "intake-portal"}
    assert canonical(body).source.message_id is None


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("2026-11-20T14:03:00", "missing-offset"),
        ("11/20/2026 14:03", "ambiguous-date"),
        ("2026-11-20", "invalid-date"),
        ("yesterday", "invalid-date"),
    ],
)
def test_an_unreadable_occurred_at_is_a_data_problem(value, rule):
    body = envelope("vitals.recorded")
    body["occurred_at"] = value
    assert status_and_errors(body) == (422, [(rule, "occurred_at")])


def test_a_bad_encounter_status_is_a_value_problem():
    body = envelope("vitals.recorded")
    body["encounter"]["status"] = "closed"
    assert status_and_errors(body) == (422, [("invalid-value", "encounter.status")])


def test_a_patient_id_must_be_a_fhir_id():
    body = envelope("vitals.recorded")
    body["patient"]["id"] = "pat 1001/x"
    assert status_and_errors(body) == (422, [("invalid-value", "patient.id")])


def test_data_errors_are_422_with_their_paths():
    body = envelope("vitals.recorded")
    body["data"]["measurements"][1]["value"] = "72"
    del body["data"]["measurements"][2]["unit"]
    assert status_and_errors(body) == (
        422,
        [("invalid-value", "data.measurements[1].value"), ("missing-field", "data.measurements[2].unit")],
    )


def test_unknown_keys_inside_data_are_errors():
    body = envelope("problem.confirmed")
    body["data"]["severity"] = "mild"
    assert status_and_errors(body) == (422, [("unknown-field", "data.severity")])


def test_a_missing_envelope_field_wins_over_data_problems():
    body = envelope("vitals.recorded")
    del body["tenant"]
    body["data"]["measurements"] = []
    status, found = status_and_errors(body)
    assert status == 400
    assert ("missing-field", "tenant") in found


def test_fhir_issue_shape():
    body = envelope("vitals.recorded")
    body["data"]["measurements"][0]["unit"] = "furlongs"
    issue = canonicalize(body).issues[0].as_fhir()
    assert issue["severity"] == "error"
    assert issue["details"]["coding"][0]["code"] == "unknown-unit"
    assert issue["expression"] == ["data.measurements[0].unit"]


class TestHashMaterial:
    def test_holds_type_patient_encounter_and_data(self):
        event = canonical(envelope("problem.confirmed"))
        material = event.hash_material()
        assert set(material) == {"type", "patient", "encounter", "data"}
        assert material["type"] == "problem.confirmed"
        assert material["patient"] == "pat-1001"
        assert material["encounter"] == "enc-77"
        assert material["data"]["code"]["system"] == "http://snomed.info/sct"

    def test_ignores_key_message_id_initiator_and_received_time(self):
        first = envelope("vitals.recorded")
        second = envelope("vitals.recorded")
        second["idempotency_key"] = "another-key"
        second["source"]["message_id"] = "msg-999"
        second["initiator"]["user"] = "bob.clinician"
        assert canonical(first).hash_material() == canonical(second).hash_material()

    def test_same_facts_in_other_spellings_hash_the_same(self):
        first = envelope("vitals.recorded")
        second = envelope("vitals.recorded")
        second["data"]["measurements"][0]["unit"] = "mm[Hg]"
        second["data"]["measurements"][2] = {"kind": "body_weight", "value": 180, "unit": "[lb_av]"}
        second["data"]["effective_at"] = "2026-11-20T19:00:00Z"  # the same instant in UTC
        assert canonical(first).hash_material() == canonical(second).hash_material()

    def test_changed_content_hashes_differently(self):
        first = canonical(envelope("vitals.recorded"))
        second = envelope("vitals.recorded")
        second["data"]["measurements"][1]["value"] = 73
        assert first.hash_material() != canonical(second).hash_material()
        third = envelope("vitals.recorded")
        third["patient"]["id"] = "pat-1002"
        assert first.hash_material() != canonical(third).hash_material()

    def test_is_json_safe(self):
        import json

        for event_type in ("vitals.recorded", "intake.completed", "demographics.updated"):
            event = canonical(envelope(event_type))
            json.dumps(event.hash_material())
            json.dumps(event.to_json())


def test_from_json_rebuilds_the_typed_data():
    event = CanonicalEvent.from_json(canonical(envelope("medication.reconciled")).to_json())
    assert event.data.medications[0].statement_status == "active"
