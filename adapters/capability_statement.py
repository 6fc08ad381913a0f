"""Reading a FHIR R4 CapabilityStatement into (resource type, operation, allowed) rows.

Only what the statement declares is reported; whether that may be trusted is decided elsewhere (the
manual capability registry always wins, see docs/vendors.md)."""

from __future__ import annotations

from typing import Any

from adapters.base import DiscoveredCapability

# CapabilityStatement interaction codes -> our operation names.
_INTERACTIONS = {
    "create": "create",
    "update": "update",
    "patch": "patch",
    "read": "read",
    "search-type": "search",
    "delete": "delete",
}
OPERATIONS = ("create", "update", "patch", "read", "search", "delete", "conditional_create")


class NotACapabilityStatement(ValueError):
    pass


def parse_capability_statement(body: Any) -> tuple[list[DiscoveredCapability], str, str]:
    """(capabilities, software, fhirVersion). Every operation of every declared type gets a row, allowed
    or not, so a narrowed server is recorded as narrowed rather than as silence."""
    if not isinstance(body, dict) or body.get("resourceType") != "CapabilityStatement":
        kind = body.get("resourceType") if isinstance(body, dict) else type(body).__name__
        raise NotACapabilityStatement(f"/metadata did not return a CapabilityStatement (got {kind})")
    software = body.get("software") or {}
    software_text = " ".join(str(software.get(k)) for k in ("name", "version") if software.get(k))
    declared: dict[str, set[str]] = {}
    notes: dict[str, str] = {}
    for rest in body.get("rest") or []:
        if not isinstance(rest, dict) or rest.get("mode", "server") != "server":
            continue
        for resource in rest.get("resource") or []:
            if not isinstance(resource, dict) or not resource.get("type"):
                continue
            ops = declared.setdefault(str(resource["type"]), set())
            for interaction in resource.get("interaction") or []:
                op = _INTERACTIONS.get((interaction or {}).get("code", ""))
                if op:
                    ops.add(op)
            if resource.get("conditionalCreate") is True and "create" in ops:
                ops.add("conditional_create")
            notes[str(resource["type"])] = conditional_notes(resource)
    rows = [
        DiscoveredCapability(resource_type=rtype, operation=op, allowed=op in ops, notes=notes.get(rtype, ""))
        for rtype, ops in sorted(declared.items())
        for op in OPERATIONS
    ]
    return rows, software_text, str(body.get("fhirVersion") or "")


def conditional_notes(resource: dict[str, Any]) -> str:
    """The conditional operations a resource entry declares, as text (our vocabulary has no rows for
    conditional update or delete), e.g. 'conditionalCreate=false; conditionalUpdate=true;
    conditionalDelete=single'. An element the statement leaves out reads 'not stated'."""
    parts = []
    for element in ("conditionalCreate", "conditionalUpdate", "conditionalDelete"):
        value = resource.get(element)
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str) and value:
            text = value
        else:
            text = "not stated"
        parts.append(f"{element}={text}")
    return "; ".join(parts)
