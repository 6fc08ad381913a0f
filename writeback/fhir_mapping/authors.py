"""The author in the chart (US Core "small-p provenance"): each resource names who is responsible for it
in the element its type provides.

The author is a Reference: the initiator's Practitioner at the EHR, or the tenant's Organization where
the tenant attributes people it has no Practitioner for. R4 lets some elements name only people
(Condition and AllergyIntolerance recorder and asserter): an Organization is left out of those, and
the event's Provenance still names it as the author.
"""

from typing import Any

# Resource type -> its author elements, in the order they are added. Patient has none (the
# Provenance carries who changed the demographics).
AUTHOR_ELEMENTS: dict[str, tuple[str, ...]] = {
    "Observation": ("performer",),
    "Condition": ("recorder", "asserter"),
    "AllergyIntolerance": ("recorder", "asserter"),
    "MedicationStatement": ("informationSource",),
    "DocumentReference": ("author",),
    "QuestionnaireResponse": ("author",),
    # A referral status change is made by whoever now carries the task out: its owner. The requester
    # is the person who ordered the referral and is never ours to change.
    "Task": ("owner",),
}

# Elements that are lists in R4 (the others hold one Reference).
_LIST_ELEMENTS = frozenset({("Observation", "performer"), ("DocumentReference", "author")})

# Elements whose R4 target types exclude Organization.
_PEOPLE_ONLY = frozenset(
    {
        ("Condition", "recorder"),
        ("Condition", "asserter"),
        ("AllergyIntolerance", "recorder"),
        ("AllergyIntolerance", "asserter"),
    }
)


def reference_type(author: dict[str, Any]) -> str:
    """ "Practitioner" for {"reference": "Practitioner/7"}; the declared type of a display-only one."""
    ref = author.get("reference") or ""
    return ref.split("/", 1)[0] if "/" in ref else str(author.get("type") or "")


def author_elements(resource_type: str, author: dict[str, Any] | None) -> dict[str, Any]:
    """The author elements `resource_type` gets for `author` (nothing for None or a type without one)."""
    if not author:
        return {}
    out: dict[str, Any] = {}
    for element in AUTHOR_ELEMENTS.get(resource_type, ()):
        if (resource_type, element) in _PEOPLE_ONLY and reference_type(author) != "Practitioner":
            continue
        value = dict(author)
        out[element] = [value] if (resource_type, element) in _LIST_ELEMENTS else value
    return out


def with_author(resource: dict[str, Any], author: dict[str, Any] | None) -> dict[str, Any]:
    return {**resource, **author_elements(resource["resourceType"], author)}
