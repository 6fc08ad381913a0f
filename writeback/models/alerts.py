"""Alerts, ranked by clinical risk. A very-high-risk alert holds its queue until someone acknowledges it."""

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from writeback.models.choices import Severity
from writeback.models.tenants import Tenant


class Alert(models.Model):
    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="alerts")
    write = models.ForeignKey(
        "writeback.Write", null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts"
    )
    resource_type = models.CharField(max_length=64, blank=True)
    severity = models.CharField(max_length=16, choices=Severity.choices)
    code = models.CharField(max_length=64)
    message = models.TextField()
    # While unacknowledged, the tenant x resource type queue sends nothing.
    holds_queue = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    ack_note = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The worker's held-queue check and the console's open-alert list.
            models.Index(
                fields=["tenant", "resource_type"],
                condition=models.Q(acknowledged_at__isnull=True),
                name="alert_open_idx",
            ),
            models.Index(fields=["severity", "created_at"], name="alert_severity_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.severity} {self.code} ({self.tenant_id})"

    @property
    def is_open(self) -> bool:
        return self.acknowledged_at is None
