"""vitals.recorded -> one vital-signs Observation per measurement."""

from typing import Any

from writeback.canonical import CanonicalEvent
from writeback.canonical.codes import LOINC
from writeback.canonical.units import UCUM_SYSTEM
from writeback.fhir_mapping.common import compact, encounter, fhir_time, subject

OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

# kind -> (LOINC codings, code text). Pulse oximetry carries 59408-5 and 2708-6, as US Core asks.
CODES: dict[str, tuple[list[tuple[str, str]], str]] = {
    "blood_pressure": ([("85354-9", "Blood pressure panel with all children optional")], "Blood pressure"),
    "heart_rate": ([("8867-4", "Heart rate")], "Heart rate"),
    "body_weight": ([("29463-7", "Body weight")], "Body weight"),
    "body_temperature": ([("8310-5", "Body temperature")], "Body temperature"),
    "respiratory_rate": ([("9279-1", "Respiratory rate")], "Respiratory rate"),
    "oxygen_saturation": (
        [
            ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
            ("2708-6", "Oxygen saturation in Arterial blood"),
        ],
        "Oxygen saturation",
    ),
}
SYSTOLIC = ("8480-6", "Systolic blood pressure")
DIASTOLIC = ("8462-4", "Diastolic blood pressure")

# Human-readable unit beside the UCUM code.
_UNIT_DISPLAY = {"mm[Hg]": "mmHg", "/min": "/min", "kg": "kg", "Cel": "Cel", "%": "%"}


def _code(codings: list[tuple[str, str]], text: str) -> dict[str, Any]:
    return {"coding": [{"system": LOINC, "code": c, "display": d} for c, d in codings], "text": text}


def quantity(value: float, ucum: str) -> dict[str, Any]:
    return {"value": value, "unit": _UNIT_DISPLAY.get(ucum, ucum), "system": UCUM_SYSTEM, "code": ucum}


def observation(event: CanonicalEvent, measurement: Any) -> dict[str, Any]:
    data = event.data
    codings, text = CODES[measurement.kind]
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [{"system": OBSERVATION_CATEGORY, "code": "vital-signs", "display": "Vital Signs"}],
                "text": "Vital Signs",
            }
        ],
        "code": _code(codings, text),
        "subject": subject(event),
        "encounter": encounter(event),
        "effectiveDateTime": fhir_time(data.effective_at or event.occurred_at),
    }
    if measurement.kind == "blood_pressure":
        resource["component"] = [
            {
                "code": _code([SYSTOLIC], SYSTOLIC[1]),
                "valueQuantity": quantity(measurement.systolic, "mm[Hg]"),
            },
            {
                "code": _code([DIASTOLIC], DIASTOLIC[1]),
                "valueQuantity": quantity(measurement.diastolic, "mm[Hg]"),
            },
        ]
    else:
        resource["valueQuantity"] = quantity(measurement.value, measurement.unit)
    if event.device is not None:
        # The device is named, not referenced: we know its id, not a Device resource on the EHR.
        resource["device"] = {"display": event.device.id}
    return compact(resource)
