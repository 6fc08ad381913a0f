"""Canonicalize first: units to UCUM, code systems to URIs, dates with offsets, names and phones tidied."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from writeback.canonical import dates, units
from writeback.canonical.codes import ICD10CM, LOINC, RXNORM, SNOMED, system_uri

from .examples import envelope
from .helpers import canonical, data_error


def vitals(*measurements, **data):
    return envelope("vitals.recorded", measurements=list(measurements), **data)


def one(measurement):
    return canonical(vitals(measurement)).data.measurements[0]


class TestUnits:
    @pytest.mark.parametrize(
        ("spelling", "ucum"),
        [
            ("mmHg", "mm[Hg]"),
            ("mm[Hg]", "mm[Hg]"),
            ("mm Hg", "mm[Hg]"),
            ("bpm", "/min"),
            ("/min", "/min"),
            ("breaths/min", "/min"),
            ("lb", "[lb_av]"),
            ("lbs", "[lb_av]"),
            ("[lb_av]", "[lb_av]"),
            ("kg", "kg"),
            ("g", "g"),
            ("F", "[degF]"),
            ("degF", "[degF]"),
            ("[degF]", "[degF]"),
            ("C", "Cel"),
            ("Cel", "Cel"),
            ("%", "%"),
            (" kg ", "kg"),
            ("KG", "kg"),
        ],
    )
    def test_spellings_to_ucum(self, spelling, ucum):
        assert units.to_ucum(spelling) == ucum

    @pytest.mark.parametrize("spelling", ["stone", "furlong", "mmol/L", "", "kPa"])
    def test_unknown_spellings(self, spelling):
        assert units.to_ucum(spelling) is None

    def test_blood_pressure_unit_is_ucum(self):
        bp = one({"kind": "blood_pressure", "systolic": 120, "diastolic": 80, "unit": "mmHg"})
        assert bp.unit == "mm[Hg]"

    def test_heart_rate_bpm(self):
        hr = one({"kind": "heart_rate", "value": 72, "unit": "bpm"})
        assert (hr.value, hr.unit) == (72, "/min")
        assert (hr.original_value, hr.original_unit) == (72, "/min")

    def test_pounds_to_kilograms_keeping_the_original(self):
        weight = one({"kind": "body_weight", "value": 180, "unit": "lb"})
        assert weight.unit == "kg"
        assert weight.value == pytest.approx(81.65, abs=0.01)
        assert (weight.original_value, weight.original_unit) == (180, "[lb_av]")

    def test_grams_to_kilograms(self):
        weight = one({"kind": "body_weight", "value": 3250, "unit": "g"})
        assert (weight.value, weight.unit) == (3.25, "kg")

    def test_fahrenheit_to_celsius(self):
        temperature = one({"kind": "body_temperature", "value": 98.6, "unit": "F"})
        assert temperature.unit == "Cel"
        assert temperature.value == pytest.approx(37.0, abs=0.001)
        assert (temperature.original_value, temperature.original_unit) == (98.6, "[degF]")

    def test_celsius_stays(self):
        temperature = one({"kind": "body_temperature", "value": 38.2, "unit": "C"})
        assert (temperature.value, temperature.unit, temperature.original_unit) == (38.2, "Cel", "Cel")

    def test_unknown_unit(self):
        body = vitals({"kind": "body_weight", "value": 12, "unit": "stone"})
        assert data_error(body) == [("unknown-unit", "data.measurements[0].unit")]

    @pytest.mark.parametrize(
        "measurement",
        [
            {"kind": "heart_rate", "value": 72, "unit": "kg"},
            {"kind": "body_weight", "value": 80, "unit": "bpm"},
            {"kind": "body_temperature", "value": 37, "unit": "%"},
            {"kind": "oxygen_saturation", "value": 97, "unit": "/min"},
            {"kind": "blood_pressure", "systolic": 120, "diastolic": 80, "unit": "kg"},
        ],
    )
    def test_a_unit_of_another_dimension_conflicts(self, measurement):
        assert data_error(vitals(measurement)) == [("conflicting-units", "data.measurements[0].unit")]

    def test_a_reloaded_conversion_must_still_hold(self):
        body = vitals(
            {
                "kind": "body_weight",
                "value": 90,
                "unit": "kg",
                "original_value": 180,
                "original_unit": "[lb_av]",
            }
        )
        assert data_error(body) == [("conflicting-units", "data.measurements[0]")]

    @pytest.mark.parametrize("value", ["72", True, None, float("nan"), float("inf"), 1e300])
    def test_values_must_be_finite_numbers(self, value):
        body = vitals({"kind": "heart_rate", "value": value, "unit": "bpm"})
        assert data_error(body) == [("invalid-value", "data.measurements[0].value")]

    def test_a_measurement_needs_a_known_kind(self):
        body = vitals({"kind": "glucose", "value": 5, "unit": "mmol/L"}, {"value": 1, "unit": "kg"}, "x")
        assert data_error(body) == [
            ("invalid-value", "data.measurements[0].kind"),
            ("missing-field", "data.measurements[1].kind"),
            ("invalid-value", "data.measurements[2]"),
        ]

    def test_blood_pressure_needs_both_values(self):
        body = vitals({"kind": "blood_pressure", "systolic": 120, "unit": "mmHg"})
        assert data_error(body) == [("missing-field", "data.measurements[0].diastolic")]

    def test_at_least_one_measurement(self):
        assert data_error(vitals()) == [("invalid-value", "data.measurements")]


class TestCodeSystems:
    @pytest.mark.parametrize(
        ("name", "uri"),
        [
            ("SNOMED", SNOMED),
            ("sct", SNOMED),
            ("SNOMED CT", SNOMED),
            ("snomed-ct", SNOMED),
            ("http://snomed.info/sct", SNOMED),
            ("urn:oid:2.16.840.1.113883.6.96", SNOMED),
            ("LOINC", LOINC),
            ("http://loinc.org", LOINC),
            ("RxNorm", RXNORM),
            ("RXNORM", RXNORM),
            ("http://www.nlm.nih.gov/research/umls/rxnorm", RXNORM),
            ("ICD-10-CM", ICD10CM),
            ("icd10cm", ICD10CM),
            ("http://hl7.org/fhir/sid/icd-10-cm", ICD10CM),
        ],
    )
    def test_aliases_to_uris(self, name, uri):
        assert system_uri(name) == uri

    @pytest.mark.parametrize("name", ["CPT", "ICD-9", "http://example.org/codes", "local", "snomed.info"])
    def test_unknown_systems(self, name):
        assert system_uri(name) is None

    def test_unknown_code_system_in_an_event(self):
        body = envelope("problem.confirmed", code={"system": "CPT", "code": "99213"})
        assert data_error(body) == [("unknown-code-system", "data.code.system")]

    def test_icd10cm_codes_are_upper_case(self):
        body = envelope("problem.confirmed", code={"system": "ICD-10-CM", "code": " i10 "})
        assert canonical(body).data.code.code == "I10"

    def test_a_code_must_be_a_string(self):
        body = envelope("allergy.recorded", substance={"system": "RxNorm", "code": 7980})
        assert data_error(body) == [("invalid-value", "data.substance.code")]


class TestDates:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                "2026-11-20T14:03:00-05:00",
                datetime(2026, 11, 20, 14, 3, tzinfo=timezone(timedelta(hours=-5))),
            ),
            ("2026-11-20T19:03:00Z", datetime(2026, 11, 20, 19, 3, tzinfo=UTC)),
            ("2026-11-20T19:03Z", datetime(2026, 11, 20, 19, 3, tzinfo=UTC)),
            ("2026-11-20T19:03:00.250+00:00", datetime(2026, 11, 20, 19, 3, 0, 250000, tzinfo=UTC)),
        ],
    )
    def test_instants(self, text, expected):
        assert dates.parse_instant(text) == expected

    @pytest.mark.parametrize(
        ("text", "rule"),
        [
            ("2026-11-20T14:03:00", "missing-offset"),
            ("2026-11-20 14:03", "missing-offset"),
            ("03/04/2025", "ambiguous-date"),
            ("3/4/25", "ambiguous-date"),
            ("03-04-2025 10:00", "ambiguous-date"),
            ("20.11.2026", "ambiguous-date"),
            ("2026-11-20", "invalid-date"),
            ("2026-02-30T10:00:00Z", "invalid-date"),
            ("2026-11-20T25:00:00Z", "invalid-date"),
            ("2026-11-20T10:00:00+15:00", "invalid-date"),
            ("Nov 20 2026", "invalid-date"),
            ("20261120T140300Z", "invalid-date"),
            ("", "invalid-date"),
            ("0001-01-01T00:00:00+05:00", "invalid-date"),
            ("9999-12-31T23:00:00-05:00", "invalid-date"),
        ],
    )
    def test_refused_instants(self, text, rule):
        with pytest.raises(dates.DateProblem) as caught:
            dates.parse_instant(text)
        assert caught.value.rule == rule

    @pytest.mark.parametrize("text", ["2024", "2024-03", "2024-03-01"])
    def test_partial_dates(self, text):
        assert dates.parse_date(text) == text
        assert dates.parse_date_or_instant(text) == text

    @pytest.mark.parametrize(
        ("text", "rule"),
        [
            ("03/01/2024", "ambiguous-date"),
            ("2024-13", "invalid-date"),
            ("2024-03-01T10:00:00Z", "invalid-date"),
        ],
    )
    def test_refused_dates(self, text, rule):
        with pytest.raises(dates.DateProblem) as caught:
            dates.parse_date(text)
        assert caught.value.rule == rule

    def test_onset_takes_a_date_or_a_date_time(self):
        assert canonical(envelope("problem.confirmed", onset="2024")).data.onset == "2024"
        with_time = canonical(envelope("problem.confirmed", onset="2024-03-01T08:00:00+01:00"))
        assert with_time.data.onset == "2024-03-01T08:00:00+01:00"

    @pytest.mark.parametrize(
        ("onset", "rule"),
        [
            ("03/01/2024", "ambiguous-date"),
            ("3/1/24", "ambiguous-date"),
            ("2024-03-01T08:00", "missing-offset"),
        ],
    )
    def test_onset_never_guesses(self, onset, rule):
        assert data_error(envelope("problem.confirmed", onset=onset)) == [(rule, "data.onset")]

    def test_effective_at_needs_an_offset(self):
        body = envelope("vitals.recorded", effective_at="2026-11-20T14:00:00")
        assert data_error(body) == [("missing-offset", "data.effective_at")]

    def test_the_offset_given_is_kept(self):
        event = canonical(envelope("vitals.recorded"))
        assert event.occurred_at.utcoffset() == timedelta(hours=-5)
        assert event.to_json()["occurred_at"] == "2026-11-20T14:03:00-05:00"

    def test_earliest_instant_of_a_partial_date(self):
        assert dates.earliest_instant("2026") == datetime(2025, 12, 31, 10, tzinfo=UTC)


class TestDemographics:
    def test_phone_numbers_lose_their_separators(self):
        telecom = [
            {"system": "phone", "value": "+1 555 0100", "use": "mobile"},
            {"system": "phone", "value": "(217) 555-0199", "use": "home"},
            {"system": "email", "value": " Jane.Doe@Example.ORG "},
        ]
        data = canonical(envelope("demographics.updated", telecom=telecom)).data
        assert [t.value for t in data.telecom] == ["+15550100", "2175550199", "Jane.Doe@example.org"]

    @pytest.mark.parametrize("value", ["call me", "+1 555 0100 x12", "12"])
    def test_a_phone_number_must_be_dialable(self, value):
        body = envelope("demographics.updated", telecom=[{"system": "phone", "value": value}])
        assert data_error(body) == [("invalid-value", "data.telecom[0].value")]

    def test_postal_codes_stay_strings(self):
        address = [{"line": ["1 Main St"], "city": "Boston", "state": "MA", "postal_code": "02134"}]
        data = canonical(envelope("demographics.updated", address=address)).data
        assert data.address[0].postal_code == "02134"

    def test_a_numeric_postal_code_is_refused(self):
        address = [{"city": "Boston", "postal_code": 2134}]
        body = envelope("demographics.updated", address=address)
        assert data_error(body) == [("invalid-value", "data.address[0].postal_code")]

    def test_names_are_trimmed(self):
        name = [{"family": "  Doe ", "given": [" Mary  Ann "]}]
        data = canonical(envelope("demographics.updated", name=name)).data
        assert (data.name[0].family, data.name[0].given) == ("Doe", ["Mary Ann"])

    def test_ehr_owned_fields_are_accepted_for_the_contract_to_refuse(self):
        body = envelope(
            "demographics.updated",
            name=[{"family": "Doe", "given": ["Jane"]}],
            birth_date="1980-02-29",
            gender="female",
            identifier=[{"system": "urn:example:mrn", "value": "MRN1001"}],
        )
        data = canonical(body).data
        assert data.touched() == ["telecom", "address", "name", "birth_date", "gender", "identifier"]

    def test_base_version_may_be_a_number(self):
        assert canonical(envelope("demographics.updated", base_version=3)).data.base_version == "3"

    def test_base_version_is_required(self):
        body = envelope("demographics.updated")
        del body["data"]["base_version"]
        assert data_error(body) == [("missing-field", "data.base_version")]

    def test_an_update_must_change_something(self):
        body = envelope("demographics.updated")
        body["data"] = {"base_version": "3"}
        assert data_error(body) == [("nothing-to-write", "data")]

    def test_birth_date_never_guesses(self):
        body = envelope("demographics.updated", birth_date="02/03/1980")
        assert data_error(body) == [("ambiguous-date", "data.birth_date")]


class TestOtherTypes:
    def test_intake_answer_types_are_kept(self):
        answers = [
            {"link_id": "smoker", "value": False},
            {"link_id": "cigarettes", "value": 10},
            {"link_id": "height", "value": 1.72},
            {"link_id": "complaint", "value": "headache"},
        ]
        data = canonical(envelope("intake.completed", answers=answers)).data
        assert [a.value for a in data.answers] == [False, 10, 1.72, "headache"]
        assert [type(a.value) for a in data.answers] == [bool, int, float, str]

    @pytest.mark.parametrize("value", [None, "", [1], {"a": 1}, 2**40])
    def test_intake_answer_values(self, value):
        body = envelope("intake.completed", answers=[{"link_id": "q", "value": value}])
        assert data_error(body) == [("invalid-value", "data.answers[0].value")]

    def test_medication_needs_a_status_or_an_action(self):
        body = envelope(
            "medication.reconciled", medications=[{"code": {"system": "RxNorm", "code": "197361"}}]
        )
        assert data_error(body) == [("missing-field", "data.medications[0]")]

    @pytest.mark.parametrize(
        ("status", "action", "expected"),
        [
            ("active", "continue", "active"),
            ("active", "stop", "stopped"),
            (None, "stop", "stopped"),
            ("active", "hold", "on-hold"),
            (None, "start", "active"),
            ("intended", "start", "intended"),
            ("completed", None, "completed"),
        ],
    )
    def test_medication_statement_status(self, status, action, expected):
        item = {"code": {"system": "RxNorm", "code": "197361"}, "status": status, "action": action}
        item = {k: v for k, v in item.items() if v is not None}
        data = canonical(envelope("medication.reconciled", medications=[item])).data
        assert data.medications[0].statement_status == expected

    def test_allergy_verification_defaults_to_unconfirmed(self):
        body = envelope("allergy.recorded")
        del body["data"]["verification_status"]
        assert canonical(body).data.verification_status == "unconfirmed"

    def test_note_text_is_kept_exactly(self):
        text = "  Line one\n\nLine two  \n"
        assert canonical(envelope("note.signed", text=text)).data.text == text

    def test_problem_clinical_status_is_a_fhir_code(self):
        body = envelope("problem.confirmed", clinical_status="confirmed")
        assert data_error(body) == [("invalid-value", "data.clinical_status")]


@pytest.mark.parametrize("code", ["0\r\r0", "11506-3\n", "a\tb", "a  b"])
def test_a_code_with_line_breaks_or_runs_of_blanks_is_refused_not_passed_to_fhir(code):
    body = envelope("note.signed")
    body["data"]["type"] = {"system": "LOINC", "code": code}
    if code.strip() != code and " " not in code.strip() and "\t" not in code:
        # Leading and trailing blanks are trimmed, like every text field; what is left must still be a code.
        assert canonical(body).data.type.code == code.strip()
    else:
        assert data_error(body) == [("invalid-code", "data.type.code")]
