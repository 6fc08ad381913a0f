"""What a vendor's wire format cannot carry of our intended FHIR resource, declared per adapter.

The contract tests compare what each simulator profile stores with the resource our mapping produced
and fail on any difference not declared here (server bookkeeping, `id`, `meta` and `text`, aside).
Paths are globs over flattened paths (see `adapters.base.WireLoss`); docs/vendors.md lists them.
"""

from __future__ import annotations

from adapters.base import WireLoss

DROPPED, CHANGED, ADDED = "dropped", "changed", "added"

# Proprietary write APIs (athena v1, Unity) carry no FHIR identifier: the `[wb:<uid>]` marker in a note
# is what check-by-read finds instead.
NO_IDENTIFIER = WireLoss("identifier[*].*", DROPPED, "the API carries no FHIR identifier")
MARKER_NOTE = WireLoss("note[0].text", ADDED, "the [wb:<write uid>] marker, for check-by-read")
MARKER_APPENDED = WireLoss("note[0].text", CHANGED, "the [wb:<write uid>] marker appended to our note")
NO_ENCOUNTER = WireLoss("encounter.*", DROPPED, "the API takes no encounter for this item")
STATUS_DISPLAYS = (
    WireLoss("clinicalStatus.coding[0].display", DROPPED, "stored as a bare code"),
    WireLoss("verificationStatus.coding[0].display", DROPPED, "stored as a bare code"),
)
RECORDED_NOW = WireLoss("recordedDate", CHANGED, "the EHR stamps the time it filed the entry")
ASSERTED_NOW = WireLoss("dateAsserted", CHANGED, "the EHR stamps the time it filed the entry")
FILED_NOW = WireLoss("date", CHANGED, "the EHR stamps the time it filed the note")


def no_author(api: str, *elements: str) -> tuple[WireLoss, ...]:
    """The author element(s) (US Core small-p provenance): the API files the entry under its own user."""
    why = f"{api} files the entry under its API user: the author is not carried"
    return tuple(WireLoss(f"{element}*", DROPPED, why) for element in elements)


def vital_losses(api: str) -> tuple[WireLoss, ...]:
    """A reading sent as an element or code + value + unit + time: what our vital-signs Observation loses."""
    return (
        NO_IDENTIFIER,
        MARKER_NOTE,
        NO_ENCOUNTER,
        WireLoss("category[0].text", DROPPED, f"{api} files every reading as vital-signs, coding only"),
        WireLoss("device.*", DROPPED, f"{api} takes no device for a reading"),
        WireLoss("code.coding[1].*", DROPPED, f"{api} takes one code per reading (the first LOINC code)"),
        WireLoss("code.text", CHANGED, f"{api} names the reading by its own element name"),
        WireLoss("component[*].valueQuantity.unit", CHANGED, f"{api} states the UCUM code as the unit"),
    )


def note_losses(api: str) -> tuple[WireLoss, ...]:
    return (
        NO_IDENTIFIER,
        FILED_NOW,
        WireLoss("category[*].*", DROPPED, f"{api} has no US Core note category"),
        WireLoss("content[0].attachment.title", DROPPED, f"{api} keeps the title as the note type's text"),
        WireLoss("context.encounter[*].*", DROPPED, f"{api} files the note in the chart, not an encounter"),
        WireLoss("type.coding[0].*", CHANGED, f"{api}'s own note type code instead of LOINC"),
        WireLoss("type.text", ADDED, f"{api}'s note type name"),
    )


EPIC: dict[str, tuple[WireLoss, ...]] = {
    "Observation": (
        WireLoss("code.coding[1].*", DROPPED, "Epic takes one code.coding per vital (the first LOINC)"),
    ),
    "Condition": (
        WireLoss(
            "verificationStatus.coding[0].*",
            CHANGED,
            "Epic's Problems API takes provisional only (confirmed is a fatal modifier, 59012)",
        ),
    ),
    "AllergyIntolerance": (
        WireLoss("verificationStatus.coding[0].*", CHANGED, "Epic's allergy API takes unconfirmed only"),
    ),
}

_ALLERGY_CATEGORY = WireLoss("category[0]", ADDED, "the EHR classes the allergen (medication)")
_NO_CONTEXT = WireLoss("context.*", DROPPED, "the API takes no encounter for a medication")

_PHONES = "v1 sets each phone kind alone: numbers of other kinds stay, ours follow them"

ATHENA: dict[str, tuple[WireLoss, ...]] = {
    "Observation": (*vital_losses("athena v1"), *no_author("athena v1", "performer")),
    "DocumentReference": (
        *note_losses("athena v1"),
        *no_author("athena v1", "author"),
        WireLoss("description", CHANGED, "the marker appended to the title (internalnote)"),
    ),
    "Condition": (
        NO_IDENTIFIER,
        *STATUS_DISPLAYS,
        NO_ENCOUNTER,
        RECORDED_NOW,
        MARKER_APPENDED,
        WireLoss("code.coding[0].display", DROPPED, "v1 takes the SNOMED code only"),
        WireLoss("code.text", DROPPED, "v1 takes the SNOMED code only"),
        *no_author("athena v1", "recorder", "asserter"),
    ),
    "AllergyIntolerance": (
        NO_IDENTIFIER,
        *STATUS_DISPLAYS,
        NO_ENCOUNTER,
        RECORDED_NOW,
        MARKER_NOTE,
        _ALLERGY_CATEGORY,
        WireLoss("code.coding[1].*", ADDED, "athena's allergenid beside the RxNorm code"),
        *no_author("athena v1", "recorder", "asserter"),
    ),
    "MedicationStatement": (
        NO_IDENTIFIER,
        _NO_CONTEXT,
        ASSERTED_NOW,
        MARKER_NOTE,
        WireLoss("effectiveDateTime", CHANGED, "v1 startdate is a date: the time of day is lost"),
        *no_author("athena v1", "informationSource"),
    ),
    "Patient": (
        WireLoss("telecom[*].*", CHANGED, _PHONES),
        WireLoss("telecom[*].*", ADDED, _PHONES),
        WireLoss("address[0].use", ADDED, "athena's address is the home address"),
    ),
}

VERADIGM: dict[str, tuple[WireLoss, ...]] = {
    "Observation": (*vital_losses("Unity"), *no_author("Unity", "performer")),
    "DocumentReference": (
        *note_losses("Unity"),
        *no_author("Unity", "author"),
        WireLoss("description", CHANGED, "SaveNote keeps the marker as the description, the title as type"),
    ),
    "Condition": (
        NO_IDENTIFIER,
        *STATUS_DISPLAYS,
        NO_ENCOUNTER,
        RECORDED_NOW,
        MARKER_APPENDED,
        *no_author("Unity", "recorder", "asserter"),
    ),
    "AllergyIntolerance": (
        NO_IDENTIFIER,
        *STATUS_DISPLAYS,
        NO_ENCOUNTER,
        RECORDED_NOW,
        MARKER_NOTE,
        _ALLERGY_CATEGORY,
        WireLoss("reaction[*].manifestation[*].coding[*].*", DROPPED, "SaveAllergy takes reactions as text"),
        WireLoss("reaction[*].severity", DROPPED, "SaveAllergy keeps the severity in the reaction text"),
        WireLoss("reaction[*].manifestation[*].text", CHANGED, "the severity appended: 'Hives (moderate)'"),
        *no_author("Unity", "recorder", "asserter"),
    ),
    "MedicationStatement": (
        NO_IDENTIFIER,
        _NO_CONTEXT,
        ASSERTED_NOW,
        MARKER_NOTE,
        WireLoss("effectiveDateTime", DROPPED, "SaveRX takes no start time"),
        *no_author("Unity", "informationSource"),
    ),
    "Task": no_author("Unity SaveTaskStatus", "owner"),
}
