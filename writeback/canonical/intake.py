"""intake.completed: a patient's answers to an intake questionnaire."""

from typing import Annotated, Any

from pydantic import Field, PlainValidator

from writeback.canonical.base import DataModel
from writeback.canonical.fields import Instant, Text, Uri, invalid, string, wrong_type

# FHIR `integer` is a signed 32-bit number.
_INT32 = range(-(2**31), 2**31)


def _answer_value(value: Any) -> bool | int | float | str:
    # The JSON type of the answer decides the FHIR answer type (valueBoolean/Integer/Decimal/String).
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if value not in _INT32:
            raise invalid("is outside the 32-bit integer range FHIR allows")
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise invalid("must be a finite number")
        return value
    if isinstance(value, str):
        if not value.strip():
            raise invalid("must not be empty (leave the answer out instead)")
        if len(value) > 100_000:
            raise invalid("is longer than 100000 characters")
        return value
    raise wrong_type("a boolean, number or string")


AnswerValue = Annotated[bool | int | float | str, PlainValidator(_answer_value)]


class Answer(DataModel):
    link_id: string(255)
    text: Text | None = None
    value: AnswerValue


class IntakeData(DataModel):
    questionnaire: Uri
    authored: Instant | None = None  # defaults to the event's occurred_at
    answers: list[Answer] = Field(min_length=1, max_length=1000)
