"""Scalar field types shared by the canonical models.

Each type validates one JSON value and raises errors whose type is our rule code, or `wrong-type`
for a value of the wrong JSON type or shape (not a string, empty, too long), which becomes
`invalid-envelope` (400) in the envelope and `invalid-value` (422) in `data`. Values are
accepted only in their JSON type: "72" is not a number and 7980 is not a code.
"""

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator, SerializationInfo
from pydantic_core import PydanticCustomError

from writeback.canonical import dates

WRONG_TYPE = "wrong-type"

_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,64}$")
# Numbers beyond this are typing errors, and would overflow float conversions.
_MAX_MAGNITUDE = 1e12


def wrong_type(expected: str) -> PydanticCustomError:
    return PydanticCustomError(WRONG_TYPE, "must be {expected}", {"expected": expected})


def invalid(message: str) -> PydanticCustomError:
    return PydanticCustomError("invalid-value", message)


def _text_validator(max_length: int, *, strip: bool = True, allow_empty: bool = False):
    def validate(value: Any) -> str:
        if not isinstance(value, str):
            raise wrong_type("a string")
        if strip:
            value = value.strip()
        if not value and not allow_empty:
            raise PydanticCustomError(WRONG_TYPE, "must not be empty")
        if len(value) > max_length:
            raise PydanticCustomError(WRONG_TYPE, f"is longer than {max_length} characters")
        return value

    return validate


def string(max_length: int = 1000) -> Any:
    """A non-empty string, trimmed."""
    return Annotated[str, PlainValidator(_text_validator(max_length))]


Text = string()
LongText = string(1_000_000)
# Free text kept byte for byte (a note's body): not trimmed, may be empty (the domain rules decide).
RawText = Annotated[str, PlainValidator(_text_validator(10_000_000, strip=False, allow_empty=True))]


def _collapse(value: Any) -> str:
    # Names: trimmed, runs of whitespace made one space ("Mary  Ann " -> "Mary Ann").
    return " ".join(_text_validator(200)(value).split())


NameText = Annotated[str, PlainValidator(_collapse)]


def _fhir_id(value: Any) -> str:
    value = _text_validator(64)(value)
    if not _FHIR_ID.match(value):
        raise invalid("is not a valid FHIR id (1-64 of A-Z a-z 0-9 - .)")
    return value


FhirId = Annotated[str, PlainValidator(_fhir_id)]


def _slug(value: Any) -> str:
    value = _text_validator(64)(value)
    if not _SLUG.match(value):
        raise PydanticCustomError(WRONG_TYPE, "must be a tenant slug (letters, digits, - and _)")
    return value


Slug = Annotated[str, PlainValidator(_slug)]


def _uri(value: Any) -> str:
    value = _text_validator(1000)(value)
    if any(c.isspace() for c in value):
        raise invalid("must be a URI (no spaces)")
    return value


Uri = Annotated[str, PlainValidator(_uri)]


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong_type("a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise invalid("must be a finite number")
    if abs(value) > _MAX_MAGNITUDE:
        raise invalid("is far outside any plausible value")
    return value


Number = Annotated[int | float, PlainValidator(_number)]


def _version(value: Any) -> str:
    # Versions are ETag values (text); a non-negative integer is the same version written as a number.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**18:
        return str(value)
    value = _text_validator(64)(value)
    if not _FHIR_ID.match(value):
        raise invalid("is not a valid resource version id")
    return value


VersionId = Annotated[str, PlainValidator(_version)]


def _date_problem(problem: dates.DateProblem) -> PydanticCustomError:
    return PydanticCustomError(problem.rule, problem.message)


def _instant(value: Any) -> datetime:
    try:
        if isinstance(value, datetime):
            return dates.ensure_aware(value)
        if not isinstance(value, str):
            raise wrong_type("an ISO 8601 date-time string with an offset")
        return dates.parse_instant(value)
    except dates.DateProblem as problem:
        raise _date_problem(problem) from None


def _serialize_instant(value: datetime, info: SerializationInfo) -> str:
    # Hash material puts every time in UTC: the same instant written with another offset is the same.
    if info.context and info.context.get("utc"):
        return dates.format_instant(value.astimezone(UTC))
    return dates.format_instant(value)


Instant = Annotated[datetime, PlainValidator(_instant), PlainSerializer(_serialize_instant, when_used="json")]


def _fhir_date(value: Any) -> str:
    if not isinstance(value, str):
        raise wrong_type("an ISO 8601 date string (YYYY-MM-DD)")
    try:
        return dates.parse_date(value)
    except dates.DateProblem as problem:
        raise _date_problem(problem) from None


FhirDate = Annotated[str, PlainValidator(_fhir_date)]


def _fhir_datetime(value: Any) -> str:
    if not isinstance(value, str):
        raise wrong_type("an ISO 8601 date or date-time string")
    try:
        return dates.parse_date_or_instant(value)
    except dates.DateProblem as problem:
        raise _date_problem(problem) from None


# A FHIR dateTime: a (partial) date, or a date-time with an offset.
FhirDateTime = Annotated[str, PlainValidator(_fhir_datetime)]
