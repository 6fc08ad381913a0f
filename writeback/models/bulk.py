"""Bulk operations started from the console: several failed writes replayed by an admin, one by one,
at a capped rate, each item recorded, abortable at any point."""

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class BulkOperation(models.Model):
    class Kind(models.TextChoices):
        REPLAY = "replay", "Bulk replay"

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        ABORTED = "aborted", "Aborted"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.REPLAY)
    mode = models.CharField(max_length=16, default="resend")
    reason = models.TextField()
    # Items per second; the processor never runs ahead of started_at + n / rate.
    rate_per_second = models.FloatField(default=2.0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Touched by whoever is processing items; a stale heartbeat on a running operation means no runner.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    aborted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    total = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "created_at"], name="bulk_status_idx")]

    def __str__(self) -> str:
        return f"{self.kind} {self.uid} ({self.status}, {self.processed}/{self.total})"

    @property
    def processed(self) -> int:
        return self.succeeded + self.failed + self.skipped

    @property
    def is_running(self) -> bool:
        return self.status == self.Status.RUNNING


class BulkItem(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        DONE = "done", "Replayed"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped (aborted)"

    operation = models.ForeignKey(BulkOperation, on_delete=models.CASCADE, related_name="items")
    position = models.PositiveIntegerField()
    write = models.ForeignKey("writeback.Write", on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    result_write = models.ForeignKey(
        "writeback.Write", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    error = models.TextField(blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["operation", "position"]
        constraints = [
            models.UniqueConstraint(fields=["operation", "position"], name="bulkitem_position_unique")
        ]
        # The processor's "next queued item of this operation" query.
        indexes = [models.Index(fields=["operation", "status", "position"], name="bulkitem_queue_idx")]

    def __str__(self) -> str:
        return f"item {self.position} of {self.operation_id}: {self.status}"
