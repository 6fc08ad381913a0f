"""Small helpers for the canonical-layer tests."""

from typing import Any

from writeback.canonical import CanonicalEvent, canonicalize
from writeback.validation.outcome import Issue

from .examples import NOW


def canonical(body: dict[str, Any]) -> CanonicalEvent:
    """The canonical event of a body that must read without errors."""
    result = canonicalize(body, now=NOW)
    assert result.status == 200, result.issues
    assert result.event is not None
    return result.event


def errors(issues: list[Issue]) -> list[tuple[str, str]]:
    return [(i.rule, i.path) for i in issues if i.is_error]


def warnings(issues: list[Issue]) -> list[tuple[str, str]]:
    return [(i.rule, i.path) for i in issues if not i.is_error]


def data_error(body: dict[str, Any]) -> list[tuple[str, str]]:
    """The (rule, path) errors of a body that must fail as a data problem (422)."""
    result = canonicalize(body, now=NOW)
    assert result.status == 422, result.issues
    assert result.event is None
    return errors(result.issues)
