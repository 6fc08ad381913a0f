"""vitals.recorded: a set of vital-sign measurements taken together."""

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, WrapValidator, field_validator, model_validator
from pydantic_core import PydanticCustomError

from writeback.canonical import units
from writeback.canonical.base import DataModel
from writeback.canonical.fields import Instant, Number, string, wrong_type

UnitText = string(32)


def _unit(value: str, expected_dimension: str) -> str:
    ucum = units.to_ucum(value)
    if ucum is None:
        raise PydanticCustomError("unknown-unit", "'{unit}' is not a unit we can read", {"unit": value})
    if units.dimension(ucum) != expected_dimension:
        raise PydanticCustomError(
            "conflicting-units",
            "{unit} is a {found} unit; this measurement needs a {expected} unit such as {canonical}",
            {
                "unit": ucum,
                "found": units.dimension(ucum),
                "expected": expected_dimension,
                "canonical": units.CANONICAL[expected_dimension],
            },
        )
    return ucum


class BloodPressure(DataModel):
    kind: Literal["blood_pressure"]
    systolic: Number
    diastolic: Number
    unit: UnitText

    @field_validator("unit")
    @classmethod
    def _ucum(cls, value: str) -> str:
        return _unit(value, "pressure")


class _Quantity(DataModel):
    """One value with a unit. `value`/`unit` hold the canonical unit; `original_value`/`original_unit`
    keep what was measured (UCUM), so a conversion can always be explained."""

    dimension: ClassVar[str]
    kind: str  # narrowed to one Literal by each subclass
    value: Number
    unit: UnitText
    original_value: Number | None = None
    original_unit: UnitText | None = None

    @field_validator("unit", "original_unit")
    @classmethod
    def _ucum(cls, value: str | None) -> str | None:
        return None if value is None else _unit(value, cls.dimension)

    @model_validator(mode="after")
    def _to_canonical(self) -> Any:
        if self.original_unit is None:
            # As received from a client: remember what was measured, then convert.
            self.original_value, self.original_unit = self.value, self.unit
            self.value, self.unit = units.to_canonical(self.value, self.unit)
            return self
        # Reloaded canonical form: the stored conversion must still hold.
        if self.original_value is None or units.to_canonical(self.original_value, self.original_unit) != (
            self.value,
            self.unit,
        ):
            raise PydanticCustomError(
                "conflicting-units", "value/unit do not match original_value/original_unit"
            )
        return self


class HeartRate(_Quantity):
    dimension = "rate"
    kind: Literal["heart_rate"]


class RespiratoryRate(_Quantity):
    dimension = "rate"
    kind: Literal["respiratory_rate"]


class BodyWeight(_Quantity):
    dimension = "mass"
    kind: Literal["body_weight"]


class BodyTemperature(_Quantity):
    dimension = "temperature"
    kind: Literal["body_temperature"]


class OxygenSaturation(_Quantity):
    dimension = "fraction"
    kind: Literal["oxygen_saturation"]


MEASUREMENT_MODELS: dict[str, type[DataModel]] = {
    "blood_pressure": BloodPressure,
    "heart_rate": HeartRate,
    "body_weight": BodyWeight,
    "body_temperature": BodyTemperature,
    "respiratory_rate": RespiratoryRate,
    "oxygen_saturation": OxygenSaturation,
}
MEASUREMENT_KINDS = tuple(MEASUREMENT_MODELS)


class _KindOnly(DataModel):
    model_config = {"extra": "ignore"}
    kind: Literal[MEASUREMENT_KINDS]  # type: ignore[valid-type]


def _measurement(value: Any, _handler: Any) -> DataModel:
    # Dispatch on `kind` ourselves so error paths stay data.measurements[i].<field> (no union tags).
    if isinstance(value, DataModel) and type(value) in MEASUREMENT_MODELS.values():
        return value
    if not isinstance(value, dict):
        raise wrong_type("an object")
    kind = value.get("kind")
    if isinstance(kind, str) and kind in MEASUREMENT_MODELS:
        return MEASUREMENT_MODELS[kind].model_validate(value)
    _KindOnly.model_validate(value)  # raises: kind missing or unknown
    raise AssertionError("unreachable")


Measurement = Annotated[
    BloodPressure | HeartRate | BodyWeight | BodyTemperature | RespiratoryRate | OxygenSaturation,
    WrapValidator(_measurement),
]


class VitalsData(DataModel):
    effective_at: Instant | None = None
    measurements: list[Measurement] = Field(min_length=1, max_length=50)
