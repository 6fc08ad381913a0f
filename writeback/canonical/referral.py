"""referral.status_changed: a referral Task moves from one status to another.

The statuses are kept as sent; whether they form a valid Task transition is a domain rule.
"""

from writeback.canonical.base import DataModel
from writeback.canonical.fields import FhirId, string


class ReferralData(DataModel):
    task_id: FhirId
    from_status: string(64)
    to_status: string(64)
