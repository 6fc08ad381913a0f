"""Field-level changes to an existing resource: the JSON Patch we send, the merge we PUT, the comparison
that read-compare-write makes.

An update or patch from the ledger names the top-level elements it owns (for Patient: telecom and
address; for Task: status); every other element stays exactly as the EHR holds it. A change is a dict
`{element: new value}`; `None` removes the element.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from adapters.base import WriteRequest

# Elements that identify a resource rather than describe it: never part of a change set.
STRUCTURAL = frozenset({"resourceType", "id", "meta", "text", "identifier", "contained", "implicitRules"})
# Elements required by the resource's definition that our change sets carry only so the payload is a
# valid resource (Task.intent); they are not ours to change.
CARRIED_NOT_CHANGED = {"Task": frozenset({"intent"})}


def change_set(req: WriteRequest) -> dict[str, Any]:
    """The elements this update/patch changes, from `context["fields"]` when the ledger names them, else
    from the partial resource (minus structural and carried-only elements)."""
    resource = req.resource or {}
    fields = req.context.get("fields")
    if fields:
        return {f: copy.deepcopy(resource.get(f)) for f in fields}
    carried = CARRIED_NOT_CHANGED.get(req.resource_type, frozenset())
    changes = {k: copy.deepcopy(v) for k, v in resource.items() if k not in STRUCTURAL and k not in carried}
    for name in req.context.get("remove") or []:
        changes[name] = None
    return changes


def json_patch(changes: Mapping[str, Any], present: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """RFC 6902 operations for `changes`. `add` replaces an existing member, so setting needs no knowledge
    of the current resource; removing does (removing a missing member is an error), hence `present`: the
    elements known to exist at the base version. Unknown presence -> remove is sent anyway."""
    present_set = None if present is None else set(present)
    ops: list[dict[str, Any]] = []
    for name, value in changes.items():
        path = f"/{_escape(name)}"
        if value is None:
            if present_set is None or name in present_set:
                ops.append({"op": "remove", "path": path})
        else:
            ops.append({"op": "add", "path": path, "value": value})
    return ops


def merge(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`current` with only the changed elements replaced (read-merge-PUT). `meta` is dropped: the server
    owns it, and some servers refuse a PUT whose meta.versionId is stale."""
    merged = {k: copy.deepcopy(v) for k, v in current.items() if k != "meta"}
    for name, value in changes.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = copy.deepcopy(value)
    return merged


def differing(current: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """Elements whose current value is not the expected one (read-compare-write): an element absent on
    one side and None/empty on the other counts as equal."""
    return sorted(name for name, want in expected.items() if not same_value(current.get(name), want))


def same_value(a: Any, b: Any) -> bool:
    return _normalize(a) == _normalize(b)


def applied(current: Mapping[str, Any] | None, changes: Mapping[str, Any]) -> bool:
    """Whether `current` already holds every change (a repeated update that already landed)."""
    if not isinstance(current, Mapping):
        return False
    return all(same_value(current.get(k), v) for k, v in changes.items())


def _normalize(value: Any) -> Any:
    if value in (None, "", [], {}):
        return None
    if isinstance(value, Mapping):
        items = {k: _normalize(v) for k, v in value.items() if k not in ("id", "extension")}
        return {k: v for k, v in items.items() if v is not None} or None
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    return value


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")
