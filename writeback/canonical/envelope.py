"""The canonical event: the envelope every type shares, with the typed `data` of its type."""

from typing import Annotated, Any, Literal

from pydantic import ValidationInfo, WrapValidator
from pydantic_core import PydanticCustomError

from writeback.canonical.allergy import AllergyData
from writeback.canonical.base import DataModel, EnvelopeModel
from writeback.canonical.demographics import DemographicsData
from writeback.canonical.fields import FhirId, Instant, Slug, Uri, string, wrong_type
from writeback.canonical.intake import IntakeData
from writeback.canonical.medication import MedicationData
from writeback.canonical.note import NoteData
from writeback.canonical.problem import ProblemData
from writeback.canonical.referral import ReferralData
from writeback.canonical.vitals import VitalsData

DATA_MODELS: dict[str, type[DataModel]] = {
    "vitals.recorded": VitalsData,
    "intake.completed": IntakeData,
    "note.signed": NoteData,
    "problem.confirmed": ProblemData,
    "demographics.updated": DemographicsData,
    "referral.status_changed": ReferralData,
    "allergy.recorded": AllergyData,
    "medication.reconciled": MedicationData,
}
EVENT_TYPES: tuple[str, ...] = tuple(DATA_MODELS)

# FHIR R4 Encounter.status codes.
EncounterStatus = Literal[
    "planned",
    "arrived",
    "triaged",
    "in-progress",
    "onleave",
    "finished",
    "cancelled",
    "entered-in-error",
    "unknown",
]
CLOSED_ENCOUNTER_STATUSES = frozenset({"finished", "cancelled", "entered-in-error"})

# Lengths follow the BusinessEvent columns these values are stored in.
Key200 = string(200)


SOURCE_KINDS = ("human", "automation", "ai")


def _source_kind(value: Any, _handler: Any) -> str:
    if not isinstance(value, str):
        raise wrong_type("a string")
    if value not in SOURCE_KINDS:
        raise PydanticCustomError(
            "unknown-source-kind",
            "'{kind}' is not a source kind; use one of human, automation, ai",
            {"kind": value[:50]},
        )
    return value


class Source(EnvelopeModel):
    system: Key200
    message_id: Key200 | None = None
    # Who proposed the event. Software proposes, people decide: writes of a non-human event always wait
    # for a clinician's approval.
    kind: Annotated[str, WrapValidator(_source_kind)] = "human"


class Identifier(EnvelopeModel):
    system: Uri
    value: string(200)


class PatientRef(EnvelopeModel):
    id: FhirId
    identifier: Identifier | None = None


class EncounterRef(EnvelopeModel):
    id: FhirId
    status: EncounterStatus | None = None


class Initiator(EnvelopeModel):
    user: string(150)


class Device(EnvelopeModel):
    id: string(128)  # its format is a domain rule (malformed-device-id)


def _event_type(value: Any, _handler: Any) -> str:
    if not isinstance(value, str):
        raise wrong_type("a string")
    if value not in DATA_MODELS:
        raise PydanticCustomError(
            "unknown-type", "'{type}' is not an event type we accept", {"type": value[:100]}
        )
    return value


def _data(value: Any, _handler: Any, info: ValidationInfo) -> DataModel | None:
    model = DATA_MODELS.get(info.data.get("type", ""))
    if model is None:
        return None  # the type was already reported; data cannot be read without it
    if isinstance(value, model):
        return value
    if not isinstance(value, dict):
        raise wrong_type("an object")
    return model.model_validate(value)


EventData = (
    VitalsData
    | IntakeData
    | NoteData
    | ProblemData
    | DemographicsData
    | ReferralData
    | AllergyData
    | MedicationData
)


class CanonicalEvent(EnvelopeModel):
    """One business event in its canonical form (see spec/events.md).

    `type` comes first: `data` is read with the model of its type.
    """

    type: Annotated[str, WrapValidator(_event_type)]
    tenant: Slug
    idempotency_key: Key200 | None = None
    source: Source | None = None
    occurred_at: Instant
    patient: PatientRef
    encounter: EncounterRef | None = None
    initiator: Initiator | None = None
    device: Device | None = None
    data: Annotated[EventData, WrapValidator(_data)]

    def to_json(self) -> dict[str, Any]:
        """The canonical form as JSON-safe data: stored with the event and shown on dry runs."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> "CanonicalEvent":
        """Rebuild an event from `to_json()` output (normalization is idempotent)."""
        return cls.model_validate(payload)

    def hash_material(self) -> dict[str, Any]:
        """What makes two events the same content: type, patient, encounter and the canonical data.

        Not the received time, idempotency key, source message id or initiator: a resend of the same
        facts must hash the same. Times inside the data are taken in UTC.
        """
        material = {
            "type": self.type,
            "patient": self.patient.id,
            "encounter": self.encounter.id if self.encounter else None,
            "data": self.data.model_dump(mode="json", exclude_none=True, context={"utc": True}),
        }
        if self.source_kind != "human":
            # The same facts proposed by software are not the same event as a person's (and a human
            # event hashes as it always did).
            material["source_kind"] = self.source_kind
        return material

    @property
    def source_kind(self) -> str:
        return self.source.kind if self.source else "human"

    @property
    def encounter_closed(self) -> bool:
        return self.encounter is not None and self.encounter.status in CLOSED_ENCOUNTER_STATUSES
