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
    _flatten_into(out, value, prefix)
    return out


def _flatten_into(out: dict[str, Any], value: Any, prefix: str) -> None:
    # One dict filled in place, not one per level merged upwards (the read-back diff flattens every
    # resource sent and stored).
    if isinstance(value, dict):
        if not value and prefix:
            out[prefix] = {}
        for key, item in value.items():
            if not prefix and key in SERVER_MANAGED:
                continue
            _flatten_into(out, item, f"{prefix}.{key}" if prefix else key)
    elif isinstance(value, list):
        if not value and prefix:
            out[prefix] = []
        for i, item in enumerate(value):
            _flatten_into(out, item, f"{prefix}[{i}]")
    else:
        out[prefix] = value


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


def _masked(value: Any, own_ids: dict[str, str]) -> Any:
    if not isinstance(value, str):
        return value
    for raw, token in own_ids.items():
        if raw:
            value = value.replace(raw, token)
    return value


def replay_sent_diff(
    original: dict[str, Any] | None,
    copy: dict[str, Any] | None,
    original_ids: dict[str, str],
    copy_ids: dict[str, str],
) -> tuple[int, list[dict[str, Any]]]:
    """A test replay's copy against its original, field by field: (paths compared, the differing ones).

    A copy is a new write of a new event, so the identifier it carries and the event it names are its
    own by design: each side's `*_ids` ({raw id: token}) are read as the same token on both sides, and
    only what the mapping or the test tenant's policy made differently is reported. `kind` is "changed",
    "added" (only the copy sends it) or "dropped" (only the original does)."""
    ours, theirs = flatten(original or {}), flatten(copy or {})
    paths = list(ours) + [p for p in theirs if p not in ours]
    rows = []
    for path in paths:
        a, b = ours.get(path, _MISSING), theirs.get(path, _MISSING)
        if a is _MISSING:
            rows.append({"path": path, "original": None, "copy": b, "kind": "added"})
        elif b is _MISSING:
            rows.append({"path": path, "original": a, "copy": None, "kind": "dropped"})
        elif not _equal(_masked(a, original_ids), _masked(b, copy_ids)):
            rows.append({"path": path, "original": a, "copy": b, "kind": "changed"})
    return len(paths), rows


def replay_stored_diff(
    original_sent: dict[str, Any] | None,
    original_readback: list[dict[str, Any]],
    copy_sent: dict[str, Any] | None,
    copy_readback: list[dict[str, Any]],
    original_ids: dict[str, str],
    copy_ids: dict[str, str],
) -> list[dict[str, Any]]:
    """Where both sides committed: per path either target stored differently from what it was sent (the
    read-back diffs the ledger holds), what each stored, and whether the two targets now differ there.
    A path absent from a side's read-back diff was stored as that side sent it."""
    sent = (flatten(original_sent or {}), flatten(copy_sent or {}))
    readback = tuple(
        {d.get("path"): d for d in rows or [] if isinstance(d, dict)}
        for rows in (original_readback, copy_readback)
    )
    paths = list(readback[0]) + [p for p in readback[1] if p not in readback[0]]
    rows = []
    for path in paths:
        stored = [
            readback[i][path].get("stored") if path in readback[i] else sent[i].get(path) for i in (0, 1)
        ]
        rows.append(
            {
                "path": path,
                "original_sent": sent[0].get(path),
                "original_stored": stored[0],
                "original_kind": readback[0].get(path, {}).get("kind", "as sent"),
                "copy_sent": sent[1].get(path),
                "copy_stored": stored[1],
                "copy_kind": readback[1].get(path, {}).get("kind", "as sent"),
                "differs": not _equal(_masked(stored[0], original_ids), _masked(stored[1], copy_ids)),
            }
        )
    return rows
