"""JSON Patch (RFC 6902) applied to a resource, for FHIR PATCH with `application/json-patch+json`."""

from __future__ import annotations

import copy
from typing import Any


class PatchError(Exception):
    """The patch document is malformed or cannot be applied to this resource."""


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _split(pointer: Any) -> list[str]:
    if not isinstance(pointer, str) or (pointer and not pointer.startswith("/")):
        raise PatchError(f"invalid JSON pointer {pointer!r}")
    return [_unescape(t) for t in pointer.split("/")[1:]]


def _index(container: list[Any], token: str, *, allow_end: bool) -> int:
    if allow_end and token == "-":
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise PatchError(f"invalid array index {token!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not allow_end):
        raise PatchError(f"array index {index} is out of range")
    return index


def _parent(doc: Any, tokens: list[str]) -> tuple[Any, str]:
    if not tokens:
        raise PatchError("the whole resource cannot be the target of an operation")
    target = doc
    for token in tokens[:-1]:
        if isinstance(target, dict) and token in target:
            target = target[token]
        elif isinstance(target, list):
            target = target[_index(target, token, allow_end=False)]
        else:
            raise PatchError(f"path element {token!r} does not exist")
    return target, tokens[-1]


def _get(doc: Any, tokens: list[str]) -> Any:
    parent, last = _parent(doc, tokens)
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path element {last!r} does not exist")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, allow_end=False)]
    raise PatchError(f"path element {last!r} does not exist")


def _add(doc: Any, tokens: list[str], value: Any) -> None:
    parent, last = _parent(doc, tokens)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True), value)
    else:
        raise PatchError(f"cannot add {last!r} to a scalar")


def _remove(doc: Any, tokens: list[str]) -> Any:
    parent, last = _parent(doc, tokens)
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path element {last!r} does not exist")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, allow_end=False))
    raise PatchError(f"path element {last!r} does not exist")


def apply_patch(document: dict[str, Any], operations: Any) -> dict[str, Any]:
    """Returns the patched copy; the operations apply all or nothing."""
    if not isinstance(operations, list):
        raise PatchError("a JSON Patch document is an array of operations")
    doc = copy.deepcopy(document)
    for number, op in enumerate(operations, start=1):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"operation {number} needs 'op' and 'path'")
        name, path = op["op"], _split(op["path"])
        if name in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"operation {number} ({name}) needs a 'value'")
        if name == "add":
            _add(doc, path, copy.deepcopy(op["value"]))
        elif name == "remove":
            _remove(doc, path)
        elif name == "replace":
            _get(doc, path)  # must exist
            _remove(doc, path)
            _add(doc, path, copy.deepcopy(op["value"]))
        elif name in ("move", "copy"):
            source = _split(op.get("from"))
            if name == "move" and path[: len(source)] == source and path != source:
                raise PatchError(f"operation {number} moves a value into itself")
            value = _remove(doc, source) if name == "move" else copy.deepcopy(_get(doc, source))
            _add(doc, path, value)
        elif name == "test":
            if _get(doc, path) != op["value"]:
                raise PatchError(f"operation {number} (test) failed at {op['path']}")
        else:
            raise PatchError(f"operation {number} has unknown op {name!r}")
    return doc
