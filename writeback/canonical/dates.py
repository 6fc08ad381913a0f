"""Dates and times as the API accepts them: ISO 8601 extended format, never a guess.

A date-time must carry an offset (`Z` or `±hh:mm`): a clinical time without one cannot be placed on
the timeline. Where FHIR allows a date (a problem's onset, a birth date) the partial forms `YYYY`,
`YYYY-MM` and `YYYY-MM-DD` are accepted as well. Day/month orders such as `03/04/2025` or `3/4/25`
read differently in different countries, so they are refused as ambiguous instead of being guessed.
"""

import re
from datetime import UTC, date, datetime, timedelta

_DATETIME = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)"
    r"(?P<offset>[Zz]|[+-]\d{2}:\d{2})?$"
)
_PARTIAL_DATE = re.compile(r"^(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2}))?)?$")
# Day and month in either order, separated by / . or -, with a 2- or 4-digit year: 03/04/2025, 3-4-25.
_AMBIGUOUS = re.compile(r"^\d{1,2}[/.\-]\d{1,2}[/.\-](?:\d{2}|\d{4})(?:$|[T\s,])")
# FHIR allows offsets from -14:00 to +14:00.
_MAX_OFFSET = timedelta(hours=14)
# No clinical time lies before this; it also keeps UTC conversions clear of datetime's year-1 limit.
_EARLIEST_YEAR = 1800


class DateProblem(ValueError):
    """A date or time we cannot read without guessing; `rule` is the rule code to report."""

    def __init__(self, rule: str, message: str) -> None:
        self.rule = rule
        self.message = message
        super().__init__(message)


def _refuse_unreadable(text: str, expected: str) -> DateProblem:
    if _AMBIGUOUS.match(text):
        return DateProblem(
            "ambiguous-date",
            f"'{text}' could be read as day/month or month/day; send ISO 8601 ({expected})",
        )
    return DateProblem("invalid-date", f"'{text}' is not an ISO 8601 {expected}")


def parse_instant(text: str) -> datetime:
    """An ISO 8601 date-time with an offset, as an aware datetime (the offset given is kept)."""
    text = text.strip()
    match = _DATETIME.match(text)
    if match is None:
        if _PARTIAL_DATE.match(text):
            raise DateProblem("invalid-date", f"'{text}' is a date; a date-time with an offset is required")
        raise _refuse_unreadable(text, "date-time with an offset, e.g. 2026-11-20T14:03:00-05:00")
    if match["offset"] is None:
        raise DateProblem(
            "missing-offset",
            f"'{text}' has no UTC offset; add one (e.g. -05:00 or Z) so the time is unambiguous",
        )
    normalized = f"{match['date']}T{match['time']}{match['offset'].upper()}"
    try:
        value = datetime.fromisoformat(normalized.replace("Z", "+00:00"))
    except ValueError:
        raise DateProblem("invalid-date", f"'{text}' is not a real date and time") from None
    offset = value.utcoffset()
    if offset is None or abs(offset) > _MAX_OFFSET:
        raise DateProblem("invalid-date", f"'{text}' has an offset outside -14:00..+14:00")
    return _plausible(value, text)


def _plausible(value: datetime, text: str) -> datetime:
    if value.year < _EARLIEST_YEAR:
        raise DateProblem("invalid-date", f"'{text}' lies before {_EARLIEST_YEAR}")
    try:
        value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00-05:00 has no UTC equivalent
        raise DateProblem("invalid-date", f"'{text}' is beyond the calendar we can represent") from None
    return value


def ensure_aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise DateProblem("missing-offset", "the date-time has no UTC offset")
    return _plausible(value, value.isoformat())


def _check_partial(match: re.Match[str], text: str) -> str:
    year, month, day = int(match["year"]), match["month"], match["day"]
    try:
        date(year, int(month or 1), int(day or 1))
    except ValueError:
        raise DateProblem("invalid-date", f"'{text}' is not a real date") from None
    if year < 1:
        raise DateProblem("invalid-date", f"'{text}' is not a real date")
    return text


def parse_date(text: str) -> str:
    """A FHIR `date`: YYYY, YYYY-MM or YYYY-MM-DD (kept as text, since partial dates are not dates)."""
    text = text.strip()
    match = _PARTIAL_DATE.match(text)
    if match is None:
        if _DATETIME.match(text):
            raise DateProblem("invalid-date", f"'{text}' is a date-time; a date (YYYY-MM-DD) is required")
        raise _refuse_unreadable(text, "date, e.g. 2024-03-01")
    return _check_partial(match, text)


def parse_date_or_instant(text: str) -> str:
    """A FHIR `dateTime`: a partial date, or a full date-time with an offset; returned in canonical text."""
    text = text.strip()
    match = _PARTIAL_DATE.match(text)
    if match is not None:
        return _check_partial(match, text)
    return format_instant(parse_instant(text))


def format_instant(value: datetime) -> str:
    """ISO 8601 with seconds and the offset, as FHIR `dateTime` and `instant` want it."""
    return value.isoformat()


def earliest_instant(value: str | datetime) -> datetime:
    """The first moment a (partial) FHIR date or dateTime can denote, for comparisons with `now`.

    A partial date is taken at its start in UTC+14, the earliest offset, so "2026-11-20" is never
    called future while that day has begun anywhere.
    """
    if isinstance(value, datetime):
        return value
    match = _PARTIAL_DATE.match(value)
    if match is None:
        return parse_instant(value)
    start = datetime(int(match["year"]), int(match["month"] or 1), int(match["day"] or 1), tzinfo=UTC)
    try:
        return start - _MAX_OFFSET
    except OverflowError:  # the year 1: nothing lies before it
        return start
