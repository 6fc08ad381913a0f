"""Domain and workflow rules on a canonical event: what a schema cannot see.

Every rule has its own code and reports the exact path in the event. Errors block the event;
warnings (`value-unusual`) travel with it and never block.

Physiologic ranges, in the canonical units (bounds inclusive). Outside the hard range a value is not
a plausible reading of a living patient (a typing or unit error): `value-out-of-range`, an error.
Outside the soft range it is plausible but worth a second look: `value-unusual`, a warning.

| measurement                 | unit   | hard range (error) | soft range (warning) |
|-----------------------------|--------|--------------------|----------------------|
| blood_pressure.systolic     | mm[Hg] | 20 - 300           | 70 - 200             |
| blood_pressure.diastolic    | mm[Hg] | 10 - 200           | 40 - 120             |
| heart_rate                  | /min   | 20 - 300           | 40 - 150             |
| respiratory_rate            | /min   | 2 - 80             | 8 - 30               |
| body_weight                 | kg     | 0.2 - 650          | 2 - 250              |
| body_temperature            | Cel    | 25 - 45            | 35 - 40              |
| oxygen_saturation           | %      | 50 - 100           | 90 - 100             |

The hard ranges leave room for neonates (weight from 0.2 kg, heart rate to 300 /min, respiratory
rate to 80 /min) and for the extremes seen in resuscitation (temperature 25-45 Cel).
"""

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings

from writeback.canonical import CanonicalEvent
from writeback.canonical.codes import DISPLAY_NAMES, ICD10CM, LOINC, RXNORM, SNOMED
from writeback.canonical.coding import Coding
from writeback.canonical.dates import earliest_instant
from writeback.canonical.problem import ACTIVE_STATUSES
from writeback.validation.codes import code_problem
from writeback.validation.outcome import Issue, error, warning


@dataclass(frozen=True)
class Range:
    hard_low: float
    hard_high: float
    soft_low: float
    soft_high: float
    unit: str


RANGES: dict[str, Range] = {
    "blood_pressure.systolic": Range(20, 300, 70, 200, "mm[Hg]"),
    "blood_pressure.diastolic": Range(10, 200, 40, 120, "mm[Hg]"),
    "heart_rate": Range(20, 300, 40, 150, "/min"),
    "respiratory_rate": Range(2, 80, 8, 30, "/min"),
    "body_weight": Range(0.2, 650, 2, 250, "kg"),
    "body_temperature": Range(25, 45, 35, 40, "Cel"),
    "oxygen_saturation": Range(50, 100, 90, 100, "%"),
}

# Device ids end up in audit rows and vendor payloads: one conservative shape for all.
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{2,63}$")

NOTE_CONTENT_TYPES = frozenset({"text/plain", "text/markdown", "text/html"})

# FHIR R4 Task.status codes, and those a task never leaves.
TASK_STATUSES = frozenset(
    {
        "draft", "requested", "received", "accepted", "rejected", "ready", "cancelled",
        "in-progress", "on-hold", "failed", "completed", "entered-in-error",
    }
)  # fmt: skip
TERMINAL_TASK_STATUSES = frozenset({"rejected", "cancelled", "failed", "completed", "entered-in-error"})

# Code systems each coded field may use.
PROBLEM_SYSTEMS = (SNOMED, ICD10CM)
SUBSTANCE_SYSTEMS = (RXNORM, SNOMED)
MANIFESTATION_SYSTEMS = (SNOMED,)
MEDICATION_SYSTEMS = (RXNORM, SNOMED)
NOTE_TYPE_SYSTEMS = (LOINC,)


def check_domain(event: CanonicalEvent, *, now: datetime) -> list[Issue]:
    """Domain and pure workflow rules (no database): errors and warnings, each with its path."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)  # a naive clock is taken as UTC
    issues = [*_times(event, now), *_device(event)]
    issues.extend(_BY_TYPE[event.type](event))
    return issues


# --- rules every event shares -------------------------------------------------------------------


def _future_tolerance() -> timedelta:
    return timedelta(seconds=getattr(settings, "WRITEBACK_FUTURE_TOLERANCE_SECONDS", 300))


def _event_times(event: CanonicalEvent) -> Iterable[tuple[str, datetime | str | None]]:
    yield "occurred_at", event.occurred_at
    data = event.data
    for name in ("effective_at", "authored", "onset", "birth_date"):
        if name in type(data).model_fields:
            yield f"data.{name}", getattr(data, name)


def _times(event: CanonicalEvent, now: datetime) -> Iterable[Issue]:
    limit = now + _future_tolerance()
    for path, value in _event_times(event):
        if value is not None and earliest_instant(value) > limit:
            yield error(
                "future-timestamp",
                path,
                f"{path} ({value if isinstance(value, str) else value.isoformat()}) lies in the future; "
                f"clinical times may be at most {int(_future_tolerance().total_seconds())} s ahead",
                code="business-rule",
            )


def _device(event: CanonicalEvent) -> Iterable[Issue]:
    if event.device is not None and not DEVICE_ID.match(event.device.id):
        yield error(
            "malformed-device-id",
            "device.id",
            f"device.id '{event.device.id[:80]}' is not a device id (3-64 of A-Z a-z 0-9 . _ : -, "
            "starting with a letter or digit)",
            code="value",
        )


def _coding(coding: Coding, path: str, systems: tuple[str, ...]) -> Iterable[Issue]:
    if coding.system not in systems:
        allowed = ", ".join(DISPLAY_NAMES[s] for s in systems)
        yield error(
            "code-system-not-allowed",
            f"{path}.system",
            f"{path} is a {DISPLAY_NAMES.get(coding.system, coding.system)} code; this field takes {allowed}",
            code="code-invalid",
        )
        return
    problem = code_problem(coding.system, coding.code)
    if problem:
        yield error("invalid-code", f"{path}.code", f"{path}.code {problem}", code="code-invalid")


def _duplicates(
    items: Iterable[tuple[int, object]], path: Callable[[int], str], what: str
) -> Iterable[Issue]:
    """`duplicate-identifier` for each (index, key) whose key an earlier item already had."""
    first: dict[object, int] = {}
    for index, key in items:
        if key in first:
            yield error(
                "duplicate-identifier",
                path(index),
                f"{path(index)} repeats {what} of item {first[key]}; send each once",
                code="duplicate",
            )
        else:
            first[key] = index


# --- per event type -----------------------------------------------------------------------------


def _range(value: float, name: str, path: str) -> Iterable[Issue]:
    r = RANGES[name]
    label = name.replace("blood_pressure.", "").replace("_", " ")
    if not r.hard_low <= value <= r.hard_high:
        yield error(
            "value-out-of-range",
            path,
            f"{label} {value} {r.unit} is outside the physiologic range {r.hard_low}-{r.hard_high} {r.unit}",
            code="value",
        )
    elif not r.soft_low <= value <= r.soft_high:
        yield warning(
            "value-unusual",
            path,
            f"{label} {value} {r.unit} is unusual (usually {r.soft_low}-{r.soft_high} {r.unit}); check it",
        )


def _vitals(event: CanonicalEvent) -> Iterable[Issue]:
    measurements = event.data.measurements
    for i, m in enumerate(measurements):
        at = f"data.measurements[{i}]"
        if m.kind == "blood_pressure":
            yield from _range(m.systolic, "blood_pressure.systolic", f"{at}.systolic")
            yield from _range(m.diastolic, "blood_pressure.diastolic", f"{at}.diastolic")
            if m.systolic <= m.diastolic:
                yield error(
                    "systolic-below-diastolic",
                    f"{at}.systolic",
                    f"systolic {m.systolic} must exceed diastolic {m.diastolic} (values swapped?)",
                    code="business-rule",
                )
        else:
            yield from _range(m.value, m.kind, f"{at}.value")
    yield from _duplicates(
        ((i, m.kind) for i, m in enumerate(measurements)),
        lambda i: f"data.measurements[{i}].kind",
        "the measurement kind",
    )


def _intake(event: CanonicalEvent) -> Iterable[Issue]:
    yield from _duplicates(
        ((i, a.link_id) for i, a in enumerate(event.data.answers)),
        lambda i: f"data.answers[{i}].link_id",
        "the link_id",
    )


def _note(event: CanonicalEvent) -> Iterable[Issue]:
    data = event.data
    yield from _coding(data.type, "data.type", NOTE_TYPE_SYSTEMS)
    media_type = data.content_type.split(";", 1)[0].strip()
    if media_type not in NOTE_CONTENT_TYPES:
        yield error(
            "unsupported-content-type",
            "data.content_type",
            f"data.content_type '{data.content_type}' is not one of {', '.join(sorted(NOTE_CONTENT_TYPES))}",
            code="not-supported",
        )
    if not data.text.strip():
        yield error(
            "empty-note", "data.text", "data.text is empty: a signed note needs its text", code="required"
        )


def _problem(event: CanonicalEvent) -> Iterable[Issue]:
    data = event.data
    yield from _coding(data.code, "data.code", PROBLEM_SYSTEMS)
    if data.clinical_status in ACTIVE_STATUSES and event.encounter_closed:
        yield error(
            "encounter-closed",
            "encounter.status",
            f"encounter {event.encounter.id} is {event.encounter.status}: it takes no new active problem "
            "without reconciliation",
            code="business-rule",
        )


def _demographics(event: CanonicalEvent) -> Iterable[Issue]:
    data = event.data
    yield from _duplicates(
        ((i, (t.system, t.value)) for i, t in enumerate(data.telecom or ())),
        lambda i: f"data.telecom[{i}].value",
        "the contact",
    )
    yield from _duplicates(
        ((i, (ident.system, ident.value)) for i, ident in enumerate(data.identifier or ())),
        lambda i: f"data.identifier[{i}].value",
        "the identifier",
    )


def _referral(event: CanonicalEvent) -> Iterable[Issue]:
    data = event.data
    source, target = data.from_status, data.to_status

    def refuse(path: str, why: str) -> Issue:
        message = f"{source} -> {target} is not a valid Task transition: {why}"
        return error("invalid-transition", path, message, code="business-rule")

    if source not in TASK_STATUSES:
        yield refuse("data.from_status", f"'{source}' is not a FHIR Task status")
    if target not in TASK_STATUSES:
        yield refuse("data.to_status", f"'{target}' is not a FHIR Task status")
    if source == target:
        yield refuse("data.to_status", "the status does not change")
    elif source in TERMINAL_TASK_STATUSES:
        yield refuse("data.from_status", f"a {source} task is finished and does not change status")
    elif target == "draft":
        yield refuse("data.to_status", "a task never goes back to draft")


def _allergy(event: CanonicalEvent) -> Iterable[Issue]:
    data = event.data
    yield from _coding(data.substance, "data.substance", SUBSTANCE_SYSTEMS)
    for i, reaction in enumerate(data.reactions):
        yield from _coding(
            reaction.manifestation, f"data.reactions[{i}].manifestation", MANIFESTATION_SYSTEMS
        )
    yield from _duplicates(
        ((i, (r.manifestation.system, r.manifestation.code)) for i, r in enumerate(data.reactions)),
        lambda i: f"data.reactions[{i}].manifestation",
        "the manifestation",
    )


def _medication(event: CanonicalEvent) -> Iterable[Issue]:
    medications = event.data.medications
    for i, item in enumerate(medications):
        if item.code is None:
            yield error(
                "missing-code",
                f"data.medications[{i}].code",
                f"data.medications[{i}] has no code (RxNorm or SNOMED CT): it cannot be written",
                code="required",
            )
        else:
            yield from _coding(item.code, f"data.medications[{i}].code", MEDICATION_SYSTEMS)
    yield from _duplicates(
        ((i, (m.code.system, m.code.code)) for i, m in enumerate(medications) if m.code is not None),
        lambda i: f"data.medications[{i}].code",
        "the code",
    )


_BY_TYPE: dict[str, Callable[[CanonicalEvent], Iterable[Issue]]] = {
    "vitals.recorded": _vitals,
    "intake.completed": _intake,
    "note.signed": _note,
    "problem.confirmed": _problem,
    "demographics.updated": _demographics,
    "referral.status_changed": _referral,
    "allergy.recorded": _allergy,
    "medication.reconciled": _medication,
}
