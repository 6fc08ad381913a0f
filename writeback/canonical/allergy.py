"""allergy.recorded: an allergy or intolerance, with its reactions."""

from typing import Literal

from pydantic import Field

from writeback.canonical.base import DataModel
from writeback.canonical.coding import Coding
from writeback.canonical.fields import LongText


class Reaction(DataModel):
    manifestation: Coding
    severity: Literal["mild", "moderate", "severe"] | None = None


class AllergyData(DataModel):
    substance: Coding
    criticality: Literal["low", "high", "unable-to-assess"] | None = None
    # Absent means "unconfirmed": the weakest claim, never more than the client said.
    verification_status: Literal["unconfirmed", "confirmed", "refuted", "entered-in-error"] = "unconfirmed"
    reactions: list[Reaction] = Field(default_factory=list, max_length=50)
    note: LongText | None = None
