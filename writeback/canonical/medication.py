"""medication.reconciled: the outcome of a medication reconciliation, one entry per medication."""

from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from writeback.canonical.base import DataModel
from writeback.canonical.coding import Coding
from writeback.canonical.fields import string

# FHIR R4 MedicationStatement.status codes.
StatementStatus = Literal[
    "active", "completed", "entered-in-error", "intended", "stopped", "on-hold", "unknown", "not-taken"
]
Action = Literal["continue", "start", "stop", "hold", "change"]

# The reconciliation decision wins over the status the app last saw: "status active, action stop"
# means the clinician stopped an active medication, so the statement says "stopped".
_ACTION_STATUS = {"stop": "stopped", "hold": "on-hold"}


class MedicationItem(DataModel):
    code: Coding | None = None  # required, but reported by the domain rules as missing-code
    status: StatementStatus | None = None
    action: Action | None = None
    dosage: string(2000) | None = None

    @model_validator(mode="after")
    def _status_or_action(self) -> Any:
        if self.status is None and self.action is None:
            raise PydanticCustomError("missing-field", "give a status, an action, or both")
        return self

    @property
    def statement_status(self) -> str:
        """The MedicationStatement.status to write.

        stop -> stopped; hold -> on-hold; continue / start / change -> the status given, else active.
        """
        if self.action in _ACTION_STATUS:
            return _ACTION_STATUS[self.action]
        return self.status or "active"


class MedicationData(DataModel):
    medications: list[MedicationItem] = Field(min_length=1, max_length=200)
