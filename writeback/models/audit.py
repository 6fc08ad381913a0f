"""The audit trail: append-only, hash-chained. Rows are written only by writeback.services.audit."""

from django.db import models


class AuditEntry(models.Model):
    # Assigned under the chain lock as previous + 1, so a missing row is as visible as an altered one.
    seq = models.BigIntegerField(primary_key=True)
    at = models.DateTimeField()
    actor = models.CharField(max_length=150, help_text="username, API client or worker id")
    actor_user_id = models.IntegerField(null=True, blank=True)
    action = models.CharField(max_length=64)
    tenant = models.CharField(max_length=64, blank=True)
    object_type = models.CharField(max_length=32, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    event_uid = models.CharField(max_length=36, blank=True)
    write_uid = models.CharField(max_length=36, blank=True)
    correlation_id = models.CharField(max_length=64, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    # Whether the target EHR acknowledged what this entry records (None: not a target interaction).
    target_ack = models.BooleanField(null=True)
    data = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["seq"]
        verbose_name_plural = "audit entries"
        indexes = [
            models.Index(fields=["write_uid", "seq"], name="audit_write_idx"),
            models.Index(fields=["event_uid", "seq"], name="audit_event_idx"),
            models.Index(fields=["correlation_id"], name="audit_correlation_idx"),
            models.Index(fields=["tenant", "at"], name="audit_tenant_at_idx"),
            models.Index(fields=["action", "at"], name="audit_action_at_idx"),
            models.Index(fields=["at"], name="audit_at_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} by {self.actor}"
