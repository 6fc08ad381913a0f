"""problem.confirmed: a problem confirmed for the patient's problem list."""

from typing import Literal

from writeback.canonical.base import DataModel
from writeback.canonical.coding import Coding
from writeback.canonical.fields import FhirDateTime, LongText

# FHIR condition-clinical codes.
ClinicalStatus = Literal["active", "recurrence", "relapse", "inactive", "remission", "resolved"]
ACTIVE_STATUSES = frozenset({"active", "recurrence", "relapse"})


class ProblemData(DataModel):
    code: Coding
    clinical_status: ClinicalStatus
    onset: FhirDateTime | None = None  # a date (partial allowed) or a date-time with offset
    note: LongText | None = None
