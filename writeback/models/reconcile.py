"""Reconciliation of the ledger with what the EHR holds: each sweep (a run) and what it found."""

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from writeback.models.tenants import Tenant


class ReconciliationRun(models.Model):
    """One sweep of a tenant's EHR for resources carrying our identifier system, over a time window."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        INCOMPLETE = "incomplete", "Incomplete (a search failed; absence not concluded)"
        UNSUPPORTED = "unsupported", "Unsupported (the vendor cannot search by identifier system)"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="reconciliation_runs")
    since = models.DateTimeField(null=True, blank=True)
    until = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    actor = models.CharField(max_length=150, help_text="who or what started it (user, command, worker)")
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    resource_types = models.JSONField(default=list, blank=True)
    requests = models.PositiveIntegerField(default=0)
    resources_seen = models.PositiveIntegerField(default=0)
    # Findings of this run per kind, and writes left to the worker's check by read.
    counts = models.JSONField(default=dict, blank=True)
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["tenant", "started_at"], name="reconrun_tenant_idx")]

    def __str__(self) -> str:
        return f"reconciliation {self.uid} of {self.tenant_id} ({self.status})"


class ReconciliationFinding(models.Model):
    """A difference between the ledger and the EHR that a person works in the console."""

    class Kind(models.TextChoices):
        ORPHAN = "orphan", "Orphan: at the EHR, not committed in the ledger"
        MISSING = "missing", "Missing: committed in the ledger, gone or entered-in-error at the EHR"
        DRIFT = "drift", "Drift: the EHR holds another version or content than we committed"

    class State(models.TextChoices):
        OPEN = "open", "Open"
        ADOPTED = "adopted", "Adopted (the write is committed, found at the EHR)"
        RESENT = "resent", "Resent (a replay of the write is queued)"
        ACCEPTED = "accepted", "Accepted (the EHR's version stands)"
        CORRECTED = "corrected", "Correction requested (a clinician restores it in the EHR)"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    run = models.ForeignKey(ReconciliationRun, on_delete=models.PROTECT, related_name="findings")
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="reconciliation_findings")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.OPEN)
    write = models.ForeignKey(
        "writeback.Write", null=True, blank=True, on_delete=models.PROTECT, related_name="findings"
    )
    resource_type = models.CharField(max_length=64)
    resource_id = models.CharField(max_length=128, blank=True)
    version = models.CharField(max_length=64, blank=True)
    identifier_value = models.CharField(max_length=64, blank=True)
    # What the sweep saw: the EHR's status, the version we committed, the field-level difference.
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True)
    # The replay a resend queued.
    resolution_write = models.ForeignKey(
        "writeback.Write", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # The clinician's task a correction opened.
    task = models.ForeignKey(
        "writeback.ManualTask", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The console's list (open first, per tenant and kind) and the sweep's "already open?" check.
            models.Index(fields=["tenant", "state", "kind"], name="finding_tenant_state_idx"),
            models.Index(fields=["tenant", "identifier_value"], name="finding_identifier_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.resource_type}/{self.resource_id} ({self.state})"

    @property
    def is_open(self) -> bool:
        return self.state == self.State.OPEN
