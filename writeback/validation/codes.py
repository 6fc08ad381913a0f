"""Code format checks: is this a well-formed code of its system?

These catch typing and transcription errors (a swapped digit, a code pasted into the wrong system)
without a terminology server. A code that passes may still not exist; one that fails cannot.
"""

import re

from writeback.canonical.codes import ICD10CM, LOINC, RXNORM, SNOMED

_LOINC = re.compile(r"^(\d{1,7})-(\d)$")
_SNOMED = re.compile(r"^[1-9]\d{5,17}$")
# Letter, digit, letter-or-digit, then optionally a dot and 1-4 letters or digits (I10, E11.9, S72.001A).
_ICD10CM = re.compile(r"^[A-Z]\d[0-9A-Z](?:\.[0-9A-Z]{1,4})?$")
_RXNORM = re.compile(r"^[1-9]\d{0,9}$")
# SNOMED CT partition identifiers of concept ids (short format 00, long format 10).
_CONCEPT_PARTITIONS = frozenset({"00", "10"})


def loinc_check_digit(number: str) -> int:
    """LOINC's mod-10 check digit of the part before the hyphen.

    From the right, the digits in odd positions form a number that is doubled; the digits of that
    product and the digits in even positions are summed; the check digit brings the sum to a multiple
    of ten (the Luhn scheme). 8480 -> 6, so "8480-6".
    """
    digits = number[::-1]
    odd = int(digits[0::2][::-1]) * 2
    total = sum(int(d) for d in str(odd)) + sum(int(d) for d in digits[1::2])
    return (10 - total % 10) % 10


def is_loinc(code: str) -> bool:
    match = _LOINC.match(code)
    return match is not None and loinc_check_digit(match[1]) == int(match[2])


# Verhoeff's dihedral-group tables, as published with SNOMED CT's identifier specification.
_VERHOEFF_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_VERHOEFF_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)


def verhoeff_valid(digits: str) -> bool:
    """True when the last digit is the Verhoeff check digit of the others."""
    check = 0
    for position, digit in enumerate(reversed(digits)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[position % 8][int(digit)]]
    return check == 0


def is_snomed_concept(code: str) -> bool:
    """A SNOMED CT concept id: 6-18 digits, a concept partition, a valid Verhoeff check digit."""
    return bool(_SNOMED.match(code)) and code[-3:-1] in _CONCEPT_PARTITIONS and verhoeff_valid(code)


def is_icd10cm(code: str) -> bool:
    return bool(_ICD10CM.match(code))


def is_rxnorm(code: str) -> bool:
    """An RxNorm concept id (RXCUI): a positive integer."""
    return bool(_RXNORM.match(code))


_CHECKS = {
    LOINC: (is_loinc, "is not a LOINC code (NNNNN-C with a valid mod-10 check digit)"),
    SNOMED: (is_snomed_concept, "is not a SNOMED CT concept id (6-18 digits, valid Verhoeff check digit)"),
    ICD10CM: (is_icd10cm, "is not an ICD-10-CM code (e.g. I10, E11.9)"),
    RXNORM: (is_rxnorm, "is not an RxNorm concept id (digits only)"),
}


def code_problem(system: str, code: str) -> str | None:
    """Why `code` is not a well-formed code of `system` (a message), or None when it is."""
    check = _CHECKS.get(system)
    if check is None:
        return None
    valid, reason = check
    return None if valid(code) else f"'{code}' {reason}"
