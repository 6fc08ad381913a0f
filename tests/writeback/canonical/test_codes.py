"""Code format checks: LOINC mod-10, SNOMED CT Verhoeff, ICD-10-CM, RxNorm."""

import pytest

from writeback.canonical.codes import ICD10CM, LOINC, RXNORM, SNOMED
from writeback.validation import codes


@pytest.mark.parametrize(
    "code",
    ["11506-3", "8867-4", "85354-9", "8480-6", "8462-4", "29463-7", "8310-5", "9279-1", "59408-5", "2708-6"],
)
def test_spec_loinc_codes_pass_the_check_digit(code):
    assert codes.is_loinc(code)
    assert codes.code_problem(LOINC, code) is None


@pytest.mark.parametrize("code", ["8480-5", "8480", "8480-66", "-6", "84806", "LP1234-5", "8480-6 "])
def test_bad_loinc_codes(code):
    assert not codes.is_loinc(code)
    assert codes.code_problem(LOINC, code)


def test_loinc_check_digit():
    assert codes.loinc_check_digit("8480") == 6
    assert codes.loinc_check_digit("85354") == 9


@pytest.mark.parametrize("code", ["38341003", "247472004", "195967001", "73211009", "404684003", "22298006"])
def test_snomed_concepts_pass_verhoeff(code):
    assert codes.verhoeff_valid(code)
    assert codes.is_snomed_concept(code)


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("38341004", "check digit"),
        ("38341030", "transposed digits"),
        ("12345", "too short"),
        ("1" * 19, "too long"),
        ("038341003", "leading zero"),
        ("3834100A", "not digits"),
    ],
)
def test_bad_snomed_codes(code, why):
    assert not codes.is_snomed_concept(code), why


def test_a_snomed_description_id_is_not_a_concept():
    # Partition 01 marks a description id; it passes Verhoeff but is no concept.
    description = next(f"1234501{d}" for d in range(10) if codes.verhoeff_valid(f"1234501{d}"))
    assert not codes.is_snomed_concept(description)


def test_verhoeff_tables_are_the_dihedral_permutation_powers():
    p = codes._VERHOEFF_P
    for i in range(1, 7):
        assert tuple(p[1][x] for x in p[i]) == p[i + 1]


@pytest.mark.parametrize("code", ["7980", "197361", "1049502"])
def test_rxnorm(code):
    assert codes.code_problem(RXNORM, code) is None


@pytest.mark.parametrize("code", ["07980", "PCN", "7980-1", ""])
def test_bad_rxnorm(code):
    assert codes.code_problem(RXNORM, code)


@pytest.mark.parametrize("code", ["I10", "E11.9", "S72.001A", "U07.1", "J45.909"])
def test_icd10cm(code):
    assert codes.code_problem(ICD10CM, code) is None


@pytest.mark.parametrize("code", ["110", "I1", "E11.90000", "E11-9", "e11.9"])
def test_bad_icd10cm(code):
    assert codes.code_problem(ICD10CM, code)


def test_messages_name_the_code():
    assert "38341004" in codes.code_problem(SNOMED, "38341004")
