"""Our mark on what we write: the FHIR identifier (system + write uid), or a text marker where the vendor
API carries no identifier (athena v1, Unity). Check-by-read looks for one or the other.

This module is the one definition of that identifier: the FHIR mapping, replays, the plan preview, the
adapters and the simulator all stamp and detect it through these functions, so they cannot drift."""

from __future__ import annotations

import copy
import json
from typing import Any


def our_identifier(system: str, write_uid: str) -> dict[str, str]:
    return {"system": system, "value": str(write_uid)}


def identifier_token(system: str, write_uid: str) -> str:
    """The search token `system|value`, as used in `If-None-Exist` and `?identifier=`."""
    return f"{system}|{write_uid}"


# R4 types whose `identifier` is 0..1 (a single Identifier); on every other type it is a list.
SINGLE_IDENTIFIER = frozenset(
    {
        "AdverseEvent",
        "Bundle",
        "Composition",
        "ConceptMap",
        "QuestionnaireResponse",
        "SpecimenDefinition",
        "TestReport",
        "TestScript",
    }
)


def identifiers_of(resource: dict[str, Any] | None) -> list[dict[str, Any]]:
    found = (resource or {}).get("identifier")
    items = found if isinstance(found, list) else [found]
    return [i for i in items if isinstance(i, dict)]


def stamp_identifier(resource: dict[str, Any], system: str, write_uid: str) -> dict[str, Any]:
    """A copy of `resource` carrying our identifier for this write (replacing any other of our system).

    The write's uid decides, not whatever the payload carried: a compensating or replayed write gets its
    uid from the ledger, and its check-by-read looks for that one. Ours comes first, and the identifier
    element right after `resourceType`, so it is the first thing a person reading the resource sees."""
    ours = our_identifier(system, write_uid)
    if resource.get("resourceType") in SINGLE_IDENTIFIER:
        identifier: Any = ours
    else:
        identifier = [ours, *(i for i in identifiers_of(resource) if i.get("system") != system)]
    rest = {k: copy.deepcopy(v) for k, v in resource.items() if k not in ("resourceType", "identifier")}
    return {"resourceType": resource.get("resourceType"), "identifier": identifier, **rest}


def carries_identifier(resource: dict[str, Any] | None, system: str, write_uid: str) -> bool:
    return any(
        i.get("system") == system and str(i.get("value")) == str(write_uid) for i in identifiers_of(resource)
    )


def our_identifier_value(resource: dict[str, Any] | None, system: str) -> str:
    """The write uid recorded on a resource by us, or ''."""
    for ident in identifiers_of(resource):
        if ident.get("system") == system:
            return str(ident.get("value") or "")
    return ""


def marker(write_uid: str) -> str:
    """The text marker put into a note field where the vendor API has no identifier."""
    return f"[wb:{write_uid}]"


def carries_marker(resource: dict[str, Any] | None, write_uid: str) -> bool:
    """Whether the marker appears anywhere in the resource (vendors copy notes into `note`, `description`
    or an extension; where exactly does not matter, the uid is unique)."""
    if not isinstance(resource, dict):
        return False
    return marker(write_uid) in json.dumps(resource, ensure_ascii=False)


def with_marker(text: str | None, write_uid: str) -> str:
    mark = marker(write_uid)
    text = (text or "").strip()
    if mark in text:
        return text
    return f"{text} {mark}".strip()
