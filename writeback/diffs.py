"""Field-level diffs of FHIR resources (pure functions on plain dicts; no ORM, no I/O).

Paths look like `telecom[0].value`. Server-managed elements (id, meta, text) are left out of every
comparison: a server always sets them and they say nothing about what the chart holds.
"""

from typing import Any

SERVER_MANAGED = frozenset({"id", "meta", "text"})
_MISSING = object()


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": [1, 2]}} -> {"a.b[0]": 1, "a.b[1]": 2}; empty containers are kept as leaves."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        if not value and prefix:
            out[prefix] = {}
        for key, item in value.items():
            if not prefix and key in SERVER_MANAGED:
                continue
            out.update(flatten(item, f"{prefix}.{key}" if prefix else key))
    elif isinstance(value, list):
        if not value and prefix:
            out[prefix] = []
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
    else:
        out[prefix] = value
    return out


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def readback_diff(sent: dict[str, Any] | None, stored: dict[str, Any] | None) -> list[dict[str, Any]]:
    """What the EHR stored differently from what we sent: changed values and dropped fields.
    Fields the server added are not reported (servers enrich resources)."""
    if not sent or not stored:
        return []
    ours, theirs = flatten(sent), flatten(stored)
    out = []
    for path, value in ours.items():
        got = theirs.get(path, _MISSING)
        if got is _MISSING:
            out.append({"path": path, "sent": value, "stored": None, "kind": "dropped"})
        elif not _equal(got, value):
            out.append({"path": path, "sent": value, "stored": got, "kind": "changed"})
    return out


def field_values(resource: dict[str, Any] | None, fields: list[str]) -> dict[str, Any]:
    resource = resource or {}
    return {f: resource.get(f) for f in fields}


def divergence(
    ours: dict[str, Any], theirs: dict[str, Any] | None, fields: list[str]
) -> list[dict[str, Any]]:
    """Shadow mode: per field we would write, whether what the EHR holds differs."""
    out = []
    for f in fields:
        mine = ours.get(f)
        held = (theirs or {}).get(f)
        if mine is None:
            continue
        out.append(
            {"field": f, "ours": mine, "theirs": held, "differs": not _equal(flatten(mine), flatten(held))}
        )
    return out


def three_way(
    base: dict[str, Any] | None, ours: dict[str, Any], theirs: dict[str, Any] | None, fields: list[str]
) -> list[dict[str, Any]]:
    """Per field of ours: base / ours / theirs and who changed it. `changed` is "ours", "theirs" or "both"
    (both changed it, differently: the real conflict), or "none"."""
    rows = []
    for f in fields:
        b, o, t = (base or {}).get(f), ours.get(f), (theirs or {}).get(f)
        ours_changed = base is None or not _equal(b, o)
        theirs_changed = base is not None and not _equal(b, t)
        if base is None:
            # Without the base we only know whether theirs differs from ours.
            changed = "both" if not _equal(o, t) else "none"
        elif ours_changed and theirs_changed and not _equal(o, t):
            changed = "both"
        elif theirs_changed:
            changed = "theirs"
        elif ours_changed:
            changed = "ours"
        else:
            changed = "none"
        rows.append({"path": f, "base": b, "ours": o, "theirs": t, "changed": changed})
    return rows
