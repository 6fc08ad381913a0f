"""Pydantic validation errors, reported as our Issues: rule code, event path, message."""

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import ValidationError

from writeback.canonical.fields import WRONG_TYPE
from writeback.validation.outcome import Issue

# Rules that make the envelope itself unusable: the API answers 400, not 422.
ENVELOPE_RULES = frozenset({"missing-field", "invalid-envelope", "unknown-type"})

# FHIR IssueType for each rule code the canonical layer reports.
_FHIR_CODES = {
    "missing-field": "required",
    "invalid-envelope": "structure",
    "unknown-type": "not-supported",
    "unknown-source-kind": "code-invalid",
    "unknown-field": "structure",
    "invalid-value": "value",
    "invalid-date": "value",
    "missing-offset": "value",
    "ambiguous-date": "value",
    "unknown-unit": "value",
    "conflicting-units": "value",
    "unknown-code-system": "code-invalid",
    "invalid-code": "code-invalid",
    "nothing-to-write": "required",
}


def format_path(loc: Sequence[str | int]) -> str:
    """('data', 'measurements', 0, 'value') -> 'data.measurements[0].value'."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def in_data(path: str) -> bool:
    return path.startswith(("data.", "data["))


def _rule_for(error_type: str, path: str) -> str:
    if error_type == "missing":
        return "missing-field"
    if error_type == "extra_forbidden":
        return "unknown-field"
    if error_type in _FHIR_CODES:
        return error_type
    # Built-in type errors (string_type, dict_type, model_type, list_type, ...) and our wrong-type.
    wrong_type = error_type == WRONG_TYPE or error_type.endswith("_type")
    if wrong_type and not in_data(path):
        return "invalid-envelope"
    return "invalid-value"


_TYPE_MESSAGES = {
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "list_type": "must be a list",
    "string_type": "must be a string",
}


def _message(rule: str, path: str, error: dict[str, Any]) -> str:
    where = path or "the event"
    if error["type"] in _TYPE_MESSAGES:
        return f"{where} {_TYPE_MESSAGES[error['type']]}"
    if rule == "missing-field":
        return f"{where} is required"
    if rule == "unknown-field":
        return f"{where} is not a field of this event type"
    message = error["msg"]
    if message.startswith(("is ", "must ", "has ")):
        return f"{where} {message}"
    return f"{where}: {message}"


def issues_from(exc: ValidationError, prefix: Sequence[str | int] = ()) -> list[Issue]:
    return list(_issues(exc.errors(include_url=False, include_input=False), prefix))


def _issues(errors: Iterable[dict[str, Any]], prefix: Sequence[str | int]) -> Iterable[Issue]:
    seen: set[tuple[str, str]] = set()
    for error in errors:
        path = format_path([*prefix, *error["loc"]])
        rule = _rule_for(error["type"], path)
        if (rule, path) in seen:  # a union can report the same place twice
            continue
        seen.add((rule, path))
        yield Issue(
            rule=rule,
            path=path,
            message=_message(rule, path, error),
            severity="error",
            code=_FHIR_CODES.get(rule, "invalid"),
        )


def is_envelope_error(issue: Issue) -> bool:
    return issue.is_error and issue.rule in ENVELOPE_RULES and not in_data(issue.path)
