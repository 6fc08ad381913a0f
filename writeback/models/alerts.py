"""Alerts, ranked by clinical risk, and the routes that carry them to people.

An alert is `firing` until someone acknowledges it, then `acknowledged` until it is resolved (by a person,
or by the threshold evaluation once the measure is back below its limit). A very-high-risk alert holds
its queue until someone acknowledges it. There is at most one firing alert per tenant, kind (`code`) and
subject: a repeat counts an occurrence on it instead of raising a new one (once acknowledged, a repeat is
news again and raises a new alert).
"""

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from writeback.models.choices import Severity
from writeback.models.tenants import Tenant

# Severities in increasing order of urgency; a route takes alerts at or above its minimum.
SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2, Severity.PAGE: 3}


class AlertState(models.TextChoices):
    FIRING = "firing", "Firing"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    RESOLVED = "resolved", "Resolved"


class Alert(models.Model):
    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="alerts")
    write = models.ForeignKey(
        "writeback.Write", null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts"
    )
    resource_type = models.CharField(max_length=64, blank=True)
    severity = models.CharField(max_length=16, choices=Severity.choices)
    code = models.CharField(max_length=64)
    # What the alert is about within its kind (a write's uid, a refused URL, a threshold's measure):
    # the dedup key, with tenant and code, while the alert is firing.
    subject = models.CharField(max_length=300, blank=True)
    message = models.TextField()
    # Numbers only (a threshold's value and limit): these go into deliveries, the message does not.
    details = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=16, choices=AlertState.choices, default=AlertState.FIRING)
    occurrences = models.PositiveIntegerField(default=1)
    last_seen_at = models.DateTimeField(default=timezone.now)
    # While unacknowledged, the tenant x resource type queue sends nothing.
    holds_queue = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    ack_note = models.TextField(blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolve_note = models.TextField(blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)

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
            # The escalation sweep: firing page alerts not yet escalated, oldest first.
            models.Index(
                fields=["created_at"],
                condition=models.Q(state="firing", severity="page", escalated_at__isnull=True),
                name="alert_escalation_idx",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "code", "subject"],
                # Every alert_raise() sets a subject; rows made without one are not deduplicated.
                condition=models.Q(state="firing") & ~models.Q(subject=""),
                name="alert_one_firing",
            )
        ]

    def __str__(self) -> str:
        return f"{self.severity} {self.code} ({self.tenant_id})"

    @property
    def is_open(self) -> bool:
        return self.acknowledged_at is None and self.state != AlertState.RESOLVED


class AlertRoute(models.Model):
    """Where alerts go: a webhook or a mailbox, for one tenant or all, from a minimum severity. An
    escalation route receives only escalations (page alerts nobody acknowledged in time)."""

    class Kind(models.TextChoices):
        WEBHOOK = "webhook", "Webhook"
        EMAIL = "email", "Email"

    name = models.SlugField(max_length=64)
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.PROTECT, related_name="alert_routes"
    )
    min_severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.WARNING)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    target = models.CharField(max_length=500)
    escalation = models.BooleanField(default=False)
    # Webhooks: the signing secret, encrypted (writeback.services.alert_delivery.seal); the receiver
    # got it once, when the route was added.
    secret_sealed = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Removed routes are kept (their delivery log stays readable) and receive nothing new.
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["name"], condition=models.Q(removed_at__isnull=True), name="alertroute_active_name"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class AlertDelivery(models.Model):
    """One message about one alert to one route: created in the transaction that changed the alert,
    sent by the worker's housekeeping. Unique per (alert, route, event): never a repeat flood."""

    class Event(models.TextChoices):
        FIRING = "firing", "Firing"
        RESOLVED = "resolved", "Resolved"
        ESCALATION = "escalation", "Escalation"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Gave up"

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    route = models.ForeignKey(AlertRoute, on_delete=models.PROTECT, related_name="deliveries")
    event = models.CharField(max_length=16, choices=Event.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # [{"at", "status" (HTTP status or null), "error", "ms"}], one per try.
    log = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status="pending"),
                name="alertdelivery_due_idx",
            )
        ]
        constraints = [models.UniqueConstraint(fields=["alert", "route", "event"], name="alertdelivery_once")]

    def __str__(self) -> str:
        return f"{self.event} of alert {self.alert_id} to {self.route_id}: {self.status}"
