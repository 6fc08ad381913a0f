"""Business events: what a clinical app told us, stored once and never changed."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models.fields.json import KeyTransform

from writeback.models.tenants import Consent, Tenant
from writeback.models.tokens import ApiToken


class ImmutableError(Exception):
    pass


class BusinessEvent(models.Model):
    class Kind(models.TextChoices):
        CLINICAL = "clinical", "Clinical event"
        ROLLBACK = "rollback", "Technical rollback"
        CORRECTION = "correction", "Clinical correction"

    class SourceKind(models.TextChoices):
        """Who proposed the event. Software proposes, people decide: a non-human event's writes always
        wait for a clinician's approval."""

        HUMAN = "human", "Human"
        AUTOMATION = "automation", "Automation"
        AI = "ai", "AI"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="events")
    type = models.CharField(max_length=64)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CLINICAL)
    idempotency_key = models.CharField(max_length=200)
    source_system = models.CharField(max_length=200, blank=True)
    source_message_id = models.CharField(max_length=200, null=True, blank=True)
    # SHA-256 over the fields that make two events "the same" (type, patient, encounter, canonical data).
    content_hash = models.CharField(max_length=64)
    raw_payload = models.JSONField()
    canonical_payload = models.JSONField()
    patient_ref = models.CharField(max_length=128)
    patient_identifier = models.JSONField(null=True, blank=True)
    encounter_ref = models.CharField(max_length=128, blank=True)
    encounter_status = models.CharField(max_length=32, blank=True)
    initiator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    initiator_name = models.CharField(max_length=150, blank=True)
    # Who sent it (the token's or session's user) and with which token: the four-eyes rule excludes the
    # submitter as well as the initiator, and the worker checks both, and the token, again before sending.
    submitter = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    submitted_token = models.ForeignKey(
        ApiToken, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    acting_system = models.CharField(max_length=200, blank=True, help_text="the API client that sent it")
    origin_device = models.CharField(max_length=128, blank=True)
    source_kind = models.CharField(max_length=16, choices=SourceKind.choices, default=SourceKind.HUMAN)
    # The author every resource of the event names (a Reference, as written into them): the initiator's
    # Practitioner, or the tenant's Organization where the tenant's policy attributes unmapped people.
    author = models.JSONField(null=True, blank=True)
    consent = models.ForeignKey(Consent, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    consent_snapshot = models.JSONField(null=True, blank=True)
    correlation_id = models.CharField(max_length=64, db_index=True)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    # Compensation and correction events point at the event whose writes they undo.
    compensates = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="compensated_by"
    )

    class Meta:
        ordering = ["-received_at"]
        # Granted to a client app's service account by `create_api_token --on-behalf`.
        permissions = [("submit_on_behalf", "May name another user of the tenant as an event's initiator")]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"], name="event_idempotency_key_unique"
            ),
            models.UniqueConstraint(
                fields=["tenant", "source_system", "source_message_id"],
                condition=models.Q(source_message_id__isnull=False),
                name="event_source_message_unique",
            ),
        ]
        indexes = [
            models.Index(fields=["tenant", "received_at"], name="event_tenant_received_idx"),
            models.Index(fields=["patient_ref"], name="event_patient_idx"),
            models.Index(fields=["received_at"], name="event_received_idx"),
            # The write list's clinical-key search (exact matches; each key alone, across tenants).
            models.Index(fields=["idempotency_key"], name="event_idempotency_key_idx"),
            models.Index(fields=["source_message_id"], name="event_source_message_idx"),
            models.Index(KeyTransform("value", "patient_identifier"), name="event_patient_identifier_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.uid}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise ImmutableError("a business event cannot be changed once stored")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ImmutableError("a business event cannot be deleted")
