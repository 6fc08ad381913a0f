"""Domain rules: each rule code on a failing input, with its exact path."""

from datetime import timedelta

import pytest

from writeback.validation.rules import RANGES, check_domain

from .examples import NOW, envelope
from .helpers import canonical, errors, warnings


def issues_of(body):
    return check_domain(canonical(body), now=NOW)


def vitals(*measurements):
    return envelope("vitals.recorded", measurements=list(measurements))


def bp(systolic, diastolic):
    return {"kind": "blood_pressure", "systolic": systolic, "diastolic": diastolic, "unit": "mmHg"}


class TestVitals:
    @pytest.mark.parametrize(("systolic", "diastolic"), [(80, 120), (90, 90)])
    def test_systolic_must_exceed_diastolic(self, systolic, diastolic):
        assert errors(issues_of(vitals(bp(systolic, diastolic)))) == [
            ("systolic-below-diastolic", "data.measurements[0].systolic")
        ]

    @pytest.mark.parametrize(
        ("measurement", "path"),
        [
            (bp(400, 80), "data.measurements[0].systolic"),
            (bp(120, 5), "data.measurements[0].diastolic"),
            ({"kind": "heart_rate", "value": 0, "unit": "bpm"}, "data.measurements[0].value"),
            ({"kind": "heart_rate", "value": 350, "unit": "bpm"}, "data.measurements[0].value"),
            ({"kind": "respiratory_rate", "value": 120, "unit": "/min"}, "data.measurements[0].value"),
            ({"kind": "body_weight", "value": 1500, "unit": "lb"}, "data.measurements[0].value"),
            ({"kind": "body_weight", "value": -3, "unit": "kg"}, "data.measurements[0].value"),
            ({"kind": "body_temperature", "value": 986, "unit": "F"}, "data.measurements[0].value"),
            ({"kind": "body_temperature", "value": 20, "unit": "Cel"}, "data.measurements[0].value"),
            ({"kind": "oxygen_saturation", "value": 101, "unit": "%"}, "data.measurements[0].value"),
            ({"kind": "oxygen_saturation", "value": 30, "unit": "%"}, "data.measurements[0].value"),
        ],
    )
    def test_values_outside_the_physiologic_range(self, measurement, path):
        assert errors(issues_of(vitals(measurement))) == [("value-out-of-range", path)]

    def test_ranges_are_checked_in_canonical_units(self):
        # 110 F = 43.3 C: hot but within the hard range; 115 F = 46.1 C is not.
        assert errors(issues_of(vitals({"kind": "body_temperature", "value": 110, "unit": "F"}))) == []
        assert errors(issues_of(vitals({"kind": "body_temperature", "value": 115, "unit": "F"}))) == [
            ("value-out-of-range", "data.measurements[0].value")
        ]

    @pytest.mark.parametrize(
        ("measurement", "path"),
        [
            (bp(210, 100), "data.measurements[0].systolic"),
            ({"kind": "heart_rate", "value": 38, "unit": "bpm"}, "data.measurements[0].value"),
            ({"kind": "oxygen_saturation", "value": 86, "unit": "%"}, "data.measurements[0].value"),
            ({"kind": "body_temperature", "value": 40.5, "unit": "C"}, "data.measurements[0].value"),
        ],
    )
    def test_borderline_values_warn_and_do_not_block(self, measurement, path):
        issues = issues_of(vitals(measurement))
        assert errors(issues) == []
        assert warnings(issues) == [("value-unusual", path)]

    def test_bounds_are_inclusive(self):
        low = RANGES["heart_rate"]
        at_bounds = vitals(
            {"kind": "heart_rate", "value": low.hard_low, "unit": "/min"},
        )
        assert errors(issues_of(at_bounds)) == []

    def test_two_measurements_of_one_kind(self):
        body = vitals(
            {"kind": "heart_rate", "value": 72, "unit": "bpm"},
            bp(120, 80),
            {"kind": "heart_rate", "value": 74, "unit": "/min"},
        )
        assert errors(issues_of(body)) == [("duplicate-identifier", "data.measurements[2].kind")]


class TestTimes:
    def test_occurred_at_in_the_future(self):
        body = envelope("problem.confirmed")
        body["occurred_at"] = (NOW + timedelta(minutes=10)).isoformat()
        assert errors(issues_of(body)) == [("future-timestamp", "occurred_at")]

    def test_within_the_clock_skew_tolerance(self):
        body = envelope("problem.confirmed")
        body["occurred_at"] = (NOW + timedelta(seconds=299)).isoformat()
        assert errors(issues_of(body)) == []

    def test_tolerance_comes_from_settings(self, settings):
        settings.WRITEBACK_FUTURE_TOLERANCE_SECONDS = 3600
        body = envelope("problem.confirmed")
        body["occurred_at"] = (NOW + timedelta(minutes=10)).isoformat()
        assert errors(issues_of(body)) == []

    def test_effective_at_in_the_future(self):
        body = envelope("vitals.recorded", effective_at="2026-11-21T14:00:00-05:00")
        assert errors(issues_of(body)) == [("future-timestamp", "data.effective_at")]

    def test_authored_in_the_future(self):
        body = envelope("intake.completed", authored="2027-01-01T00:00:00Z")
        assert errors(issues_of(body)) == [("future-timestamp", "data.authored")]

    def test_onset_in_the_future(self):
        assert errors(issues_of(envelope("problem.confirmed", onset="2027-03"))) == [
            ("future-timestamp", "data.onset")
        ]
        # Today (somewhere on Earth) is not the future.
        assert errors(issues_of(envelope("problem.confirmed", onset="2026-11-20"))) == []

    def test_birth_date_in_the_future(self):
        body = envelope("demographics.updated", birth_date="2030-01-01")
        assert errors(issues_of(body)) == [("future-timestamp", "data.birth_date")]

    def test_a_naive_now_is_utc(self):
        event = canonical(envelope("problem.confirmed"))
        assert check_domain(event, now=NOW.replace(tzinfo=None)) == []


class TestDevice:
    @pytest.mark.parametrize("device_id", ["bp-cuff-0042", "SN:12.34_56", "abc"])
    def test_well_formed(self, device_id):
        body = envelope("vitals.recorded")
        body["device"]["id"] = device_id
        assert errors(issues_of(body)) == []

    @pytest.mark.parametrize(
        "device_id", ["ab", "-cuff", "bp cuff 42", "cuff/42", "x" * 65, "cuff#1", "épée-01"]
    )
    def test_malformed(self, device_id):
        body = envelope("vitals.recorded")
        body["device"]["id"] = device_id
        assert errors(issues_of(body)) == [("malformed-device-id", "device.id")]


class TestCodes:
    def test_snomed_check_digit(self):
        body = envelope("problem.confirmed", code={"system": "SNOMED", "code": "38341004"})
        assert errors(issues_of(body)) == [("invalid-code", "data.code.code")]

    def test_icd10cm_format(self):
        assert (
            errors(issues_of(envelope("problem.confirmed", code={"system": "ICD-10-CM", "code": "I10"})))
            == []
        )
        body = envelope("problem.confirmed", code={"system": "ICD-10-CM", "code": "110"})
        assert errors(issues_of(body)) == [("invalid-code", "data.code.code")]

    def test_loinc_check_digit(self):
        body = envelope("note.signed", type={"system": "LOINC", "code": "11506-4"})
        assert errors(issues_of(body)) == [("invalid-code", "data.type.code")]

    def test_rxnorm_is_numeric(self):
        body = envelope("allergy.recorded", substance={"system": "RxNorm", "code": "PCN"})
        assert errors(issues_of(body)) == [("invalid-code", "data.substance.code")]

    def test_reaction_manifestation(self):
        body = envelope("allergy.recorded")
        body["data"]["reactions"][0]["manifestation"]["code"] = "247472005"
        assert errors(issues_of(body)) == [("invalid-code", "data.reactions[0].manifestation.code")]

    def test_medication_code(self):
        body = envelope("medication.reconciled")
        body["data"]["medications"][0]["code"]["code"] = "19736X"
        assert errors(issues_of(body)) == [("invalid-code", "data.medications[0].code.code")]

    def test_a_code_from_a_system_the_field_does_not_take(self):
        body = envelope("problem.confirmed", code={"system": "LOINC", "code": "8480-6"})
        assert errors(issues_of(body)) == [("code-system-not-allowed", "data.code.system")]


class TestDuplicates:
    def test_medications_with_the_same_code(self):
        med = {"code": {"system": "RxNorm", "code": "197361"}, "status": "active"}
        other = {"code": {"system": "RxNorm", "code": "7980"}, "status": "active"}
        body = envelope("medication.reconciled", medications=[med, other, med])
        assert errors(issues_of(body)) == [("duplicate-identifier", "data.medications[2].code")]

    def test_answers_with_the_same_link_id(self):
        answers = [{"link_id": "smoker", "value": False}, {"link_id": "smoker", "value": True}]
        body = envelope("intake.completed", answers=answers)
        assert errors(issues_of(body)) == [("duplicate-identifier", "data.answers[1].link_id")]

    def test_reactions_with_the_same_manifestation(self):
        body = envelope("allergy.recorded")
        body["data"]["reactions"] *= 2
        assert errors(issues_of(body)) == [("duplicate-identifier", "data.reactions[1].manifestation")]

    def test_the_same_phone_twice(self):
        telecom = [{"system": "phone", "value": "+1 555 0100"}, {"system": "phone", "value": "+15550100"}]
        body = envelope("demographics.updated", telecom=telecom)
        assert errors(issues_of(body)) == [("duplicate-identifier", "data.telecom[1].value")]

    def test_the_same_identifier_twice(self):
        identifier = [
            {"system": "urn:example:mrn", "value": "1"},
            {"system": "urn:example:mrn", "value": "1"},
        ]
        body = envelope("demographics.updated", identifier=identifier)
        assert errors(issues_of(body)) == [("duplicate-identifier", "data.identifier[1].value")]


class TestMedications:
    def test_a_medication_without_a_code(self):
        body = envelope("medication.reconciled")
        del body["data"]["medications"][0]["code"]
        assert errors(issues_of(body)) == [("missing-code", "data.medications[0].code")]


class TestEncounter:
    @pytest.mark.parametrize("status", ["finished", "cancelled", "entered-in-error"])
    def test_no_new_active_problem_on_a_closed_encounter(self, status):
        body = envelope("problem.confirmed")
        body["encounter"]["status"] = status
        assert errors(issues_of(body)) == [("encounter-closed", "encounter.status")]

    def test_a_resolved_problem_may_be_recorded_after_the_visit(self):
        body = envelope("problem.confirmed", clinical_status="resolved")
        body["encounter"]["status"] = "finished"
        assert errors(issues_of(body)) == []

    def test_other_events_on_a_finished_encounter(self):
        body = envelope("note.signed")
        body["encounter"]["status"] = "finished"
        assert errors(issues_of(body)) == []


class TestReferral:
    @pytest.mark.parametrize(
        ("source", "target", "path"),
        [
            ("requested", "accepted-ish", "data.to_status"),
            ("pending", "accepted", "data.from_status"),
            ("accepted", "accepted", "data.to_status"),
            ("completed", "in-progress", "data.from_status"),
            ("requested", "draft", "data.to_status"),
        ],
    )
    def test_invalid_transitions(self, source, target, path):
        body = envelope("referral.status_changed", from_status=source, to_status=target)
        assert errors(issues_of(body)) == [("invalid-transition", path)]

    @pytest.mark.parametrize(
        ("source", "target"),
        [("requested", "accepted"), ("accepted", "in-progress"), ("in-progress", "completed")],
    )
    def test_valid_transitions(self, source, target):
        body = envelope("referral.status_changed", from_status=source, to_status=target)
        assert errors(issues_of(body)) == []


class TestNote:
    @pytest.mark.parametrize("text", ["", "   \n"])
    def test_empty_text(self, text):
        assert errors(issues_of(envelope("note.signed", text=text))) == [("empty-note", "data.text")]

    @pytest.mark.parametrize("content_type", ["application/pdf", "image/png", "text/rtf"])
    def test_unsupported_content_type(self, content_type):
        body = envelope("note.signed", content_type=content_type)
        assert errors(issues_of(body)) == [("unsupported-content-type", "data.content_type")]

    @pytest.mark.parametrize(
        "content_type", ["text/plain", "text/markdown", "TEXT/HTML", "text/plain; charset=utf-8"]
    )
    def test_supported_content_types(self, content_type):
        assert errors(issues_of(envelope("note.signed", content_type=content_type))) == []
