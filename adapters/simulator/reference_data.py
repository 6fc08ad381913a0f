"""Code tables the proprietary APIs need: athena's vitals elements and its allergen / medication lookups."""

from __future__ import annotations

from dataclasses import dataclass

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"


@dataclass(frozen=True)
class VitalSign:
    loinc: str
    display: str
    unit: str  # UCUM


# athena clinicalelementid -> LOINC. Values are taken in these units (kg, Cel, ...).
ATHENA_VITALS = {
    "VITALS.WEIGHT": VitalSign("29463-7", "Body weight", "kg"),
    "VITALS.HEIGHT": VitalSign("8302-2", "Body height", "cm"),
    "VITALS.TEMPERATURE": VitalSign("8310-5", "Body temperature", "Cel"),
    "VITALS.HEARTRATE": VitalSign("8867-4", "Heart rate", "/min"),
    "VITALS.RESPIRATIONRATE": VitalSign("9279-1", "Respiratory rate", "/min"),
    "VITALS.INO2SATURATION": VitalSign(
        "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%"
    ),
    "VITALS.BLOODPRESSURE.SYSTOLIC": VitalSign("8480-6", "Systolic blood pressure", "mm[Hg]"),
    "VITALS.BLOODPRESSURE.DIASTOLIC": VitalSign("8462-4", "Diastolic blood pressure", "mm[Hg]"),
}
VITALS_BY_LOINC = {v.loinc: v for v in ATHENA_VITALS.values()}
SYSTOLIC, DIASTOLIC = "8480-6", "8462-4"
BP_PANEL = VitalSign("85354-9", "Blood pressure panel with all children optional", "mm[Hg]")


@dataclass(frozen=True)
class Allergen:
    allergenid: str
    name: str
    rxnorm: str


@dataclass(frozen=True)
class Medication:
    medicationid: str
    name: str
    rxnorm: str


ALLERGENS = (
    Allergen("10495", "Penicillin G", "7980"),
    Allergen("10021", "Amoxicillin", "723"),
    Allergen("10177", "Aspirin", "1191"),
    Allergen("10212", "Codeine", "2670"),
    Allergen("10340", "Ibuprofen", "5640"),
    Allergen("10611", "Sulfamethoxazole", "10180"),
)
MEDICATIONS = (
    Medication("240010", "amlodipine 5 MG Oral Tablet", "197361"),
    Medication("240020", "lisinopril 10 MG Oral Tablet", "314076"),
    Medication("240030", "metformin hydrochloride 500 MG Oral Tablet", "861007"),
    Medication("240040", "atorvastatin 20 MG Oral Tablet", "617310"),
    Medication("240050", "ibuprofen 200 MG Oral Tablet", "310965"),
)
ALLERGENS_BY_ID = {a.allergenid: a for a in ALLERGENS}
MEDICATIONS_BY_ID = {m.medicationid: m for m in MEDICATIONS}


def lookup(table: tuple, search: str) -> list:
    """athena's reference search: an RxNorm code, or part of the name (case-insensitive)."""
    needle = search.strip().lower()
    return [item for item in table if needle == item.rxnorm or needle in item.name.lower()]
