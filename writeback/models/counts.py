"""Running counts of the ledger, so the console and /metrics never aggregate the whole ledger.

Both tables are kept by database triggers (writeback.db.counters), not by application code: every path
that inserts, moves or deletes a write or inserts an attempt is counted, the ORM's bulk statements and raw
SQL included, in the same transaction as the change itself.

Rows are deltas, not one row per key: a trigger only ever INSERTs (+n / -n), so two transactions moving
writes at once never wait on, deadlock on or overwrite the same counter row. A count is the SUM over its
key; `writeback.services.counts.compact` folds the deltas back to one row per key (the worker's
housekeeping runs it), which keeps the tables at a few hundred rows whatever the ledger size.
"""

from django.db import models


class WriteCount(models.Model):
    """Writes per tenant x state x resource type (a delta; the count is the SUM per key)."""

    # Plain ids, no foreign keys: the trigger inserts them in the middle of the writer's statement.
    tenant_id = models.BigIntegerField()
    state = models.CharField(max_length=24)
    resource_type = models.CharField(max_length=64)
    n = models.BigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["tenant_id", "state", "resource_type"], name="writecount_key_idx")]

    def __str__(self) -> str:
        return f"tenant {self.tenant_id} {self.resource_type} {self.state}: {self.n:+d}"


class HourCount(models.Model):
    """Per tenant x UTC hour x resource type x outcome: send attempts by outcome, and stored events
    (outcome `event`, resource type "")."""

    EVENT = "event"

    tenant_id = models.BigIntegerField()
    hour = models.DateTimeField()
    resource_type = models.CharField(max_length=64)
    outcome = models.CharField(max_length=16)
    n = models.BigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["hour", "tenant_id"], name="hourcount_hour_idx")]

    def __str__(self) -> str:
        hour = f"{self.hour:%Y-%m-%d %H}h"
        return f"tenant {self.tenant_id} {hour} {self.resource_type} {self.outcome}: {self.n}"
