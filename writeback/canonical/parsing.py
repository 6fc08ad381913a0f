"""canonicalize(): an inbound event envelope in, a canonical event (or the reasons why not) out."""

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from writeback.canonical.envelope import CanonicalEvent, EncounterRef, Initiator, PatientRef, Source
from writeback.canonical.envelope import Device as DeviceRef
from writeback.canonical.envelope import Identifier as PatientIdentifier
from writeback.canonical.errors import is_envelope_error, issues_from
from writeback.validation.outcome import Issue, error, warning

log = logging.getLogger(__name__)

# Envelope objects whose unknown keys we warn about: path -> the model that reads it.
_ENVELOPE_PARTS: dict[tuple[str, ...], type[BaseModel]] = {
    (): CanonicalEvent,
    ("source",): Source,
    ("patient",): PatientRef,
    ("patient", "identifier"): PatientIdentifier,
    ("encounter",): EncounterRef,
    ("initiator",): Initiator,
    ("device",): DeviceRef,
}


@dataclass
class CanonicalResult:
    event: CanonicalEvent | None
    issues: list[Issue] = field(default_factory=list)
    # 400: the envelope is unusable; 422: the data is not acceptable; 200: no errors (maybe warnings).
    status: int = 200

    @property
    def ok(self) -> bool:
        return self.event is not None and not any(i.is_error for i in self.issues)


def _unknown_keys(envelope: dict[str, Any]) -> list[Issue]:
    issues = []
    for path, model in _ENVELOPE_PARTS.items():
        part: Any = envelope
        for key in path:
            part = part.get(key) if isinstance(part, dict) else None
        if not isinstance(part, dict):
            continue
        for key in part:
            if key not in model.model_fields:
                where = ".".join([*path, str(key)])
                issues.append(
                    warning("unknown-field", where, f"{where} is not part of the envelope; ignored")
                )
    return issues


def canonicalize(envelope: Any, *, now: datetime | None = None) -> CanonicalResult:
    """Read an event envelope (parsed JSON) into its canonical form.

    Schema and normalization only: units to UCUM, code systems to URIs, dates with offsets, names
    and phone numbers tidied. Domain rules (ranges, future times, code check digits, ...) are
    `writeback.validation.rules.check_domain`, run on the result. `now` is accepted for callers that
    pass their clock everywhere; reading an event does not depend on the time.

    Never raises: any input gives a CanonicalResult.
    """
    try:
        return _canonicalize(envelope)
    except Exception:  # a bug here must not become a 500; the log keeps it visible
        log.exception("canonicalize failed on an unexpected input")
        return CanonicalResult(
            None, [error("invalid-envelope", "", "the event could not be read", code="exception")], 400
        )


def _canonicalize(envelope: Any) -> CanonicalResult:
    if not isinstance(envelope, dict):
        issue = error("invalid-envelope", "", "the event must be a JSON object", code="structure")
        return CanonicalResult(None, [issue], 400)
    issues = _unknown_keys(envelope)
    try:
        event = CanonicalEvent.model_validate(envelope)
    except ValidationError as exc:
        errors = issues_from(exc)
        status = 400 if any(is_envelope_error(i) for i in errors) else 422
        return CanonicalResult(None, errors + issues, status)
    return CanonicalResult(event, issues, 200)
