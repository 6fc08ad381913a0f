"""Units of measure: common spellings to UCUM, and one canonical unit per kind of vital sign.

Each measurement kind accepts units of one dimension only; a heart rate in kg is a conflict, not a
conversion. Where a kind has several accepted units (weight, temperature), values are converted to the
canonical unit and the value as measured is kept beside it.
"""

UCUM_SYSTEM = "http://unitsofmeasure.org"

# UCUM code -> dimension. Only the units the vital-sign kinds use; anything else is an unknown unit.
DIMENSIONS: dict[str, str] = {
    "mm[Hg]": "pressure",
    "/min": "rate",
    "kg": "mass",
    "g": "mass",
    "[lb_av]": "mass",
    "Cel": "temperature",
    "[degF]": "temperature",
    "%": "fraction",
}

# The unit each dimension is stored in.
CANONICAL: dict[str, str] = {
    "pressure": "mm[Hg]",
    "rate": "/min",
    "mass": "kg",
    "temperature": "Cel",
    "fraction": "%",
}

# Spellings seen in client apps, matched exactly first (UCUM is case-sensitive), then case-insensitively.
_ALIASES: dict[str, str] = {
    "mm[Hg]": "mm[Hg]",
    "mmHg": "mm[Hg]",
    "mm Hg": "mm[Hg]",
    "/min": "/min",
    "1/min": "/min",
    "bpm": "/min",
    "beats/min": "/min",
    "{beats}/min": "/min",
    "breaths/min": "/min",
    "{breaths}/min": "/min",
    "per min": "/min",
    "kg": "kg",
    "kgs": "kg",
    "g": "g",
    "[lb_av]": "[lb_av]",
    "lb": "[lb_av]",
    "lbs": "[lb_av]",
    "[degF]": "[degF]",
    "F": "[degF]",
    "degF": "[degF]",
    "°F": "[degF]",
    "Cel": "Cel",
    "C": "Cel",
    "degC": "Cel",
    "°C": "Cel",
    "%": "%",
}
_ALIASES_FOLDED = {k.casefold(): v for k, v in _ALIASES.items()}

_KG_PER_LB = 0.45359237  # exact, by the international yard and pound agreement


def to_ucum(unit: str) -> str | None:
    """The UCUM code for a spelling we know, or None."""
    unit = unit.strip()
    return _ALIASES.get(unit) or _ALIASES_FOLDED.get(unit.casefold())


def dimension(ucum: str) -> str | None:
    return DIMENSIONS.get(ucum)


def to_canonical(value: float, ucum: str) -> tuple[float, str]:
    """`value` in `ucum`, converted to its dimension's canonical unit.

    Converted values are rounded to the precision the source unit carries (0.01 kg from pounds,
    0.01 °C from °F), so 180 [lb_av] is 81.65 kg and 98.6 [degF] is 37.0 Cel, not float noise.
    """
    target = CANONICAL[DIMENSIONS[ucum]]
    if ucum == target:
        return value, target
    if ucum == "[lb_av]":
        return round(value * _KG_PER_LB, 2), target
    if ucum == "g":
        return round(value / 1000, 6), target
    if ucum == "[degF]":
        return round((value - 32) * 5 / 9, 2), target
    raise ValueError(f"no conversion from {ucum} to {target}")
