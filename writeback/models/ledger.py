"""The write ledger: one row per target resource operation, its attempts, approvals, conflicts and undo."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models.fields.json import KeyTransform
from django.utils import timezone

from writeback.models.choices import Operation, Risk
from writeback.models.events import BusinessEvent
from writeback.models.tenants import Tenant
from writeback.states import CLAIMABLE, DECIDABLE, FINAL, WriteState


class AttemptOutcome(models.TextChoices):
    """How one attempt (one request, or one step of one) ended."""

    COMMITTED = "committed", "Committed"
    CONFLICT = "conflict", "Conflict"
    RETRYABLE = "retryable", "Retryable"
    AMBIGUOUS = "ambiguous", "Ambiguous (may have landed)"
    TERMINAL = "terminal", "Terminal"
    FOUND = "found", "Found by read (already landed)"
    NOT_FOUND = "not_found", "Not found by read"
    LOST = "lost", "Lost (worker died, lease expired)"
    HELD = "held", "Held before sending"
    STEP = "step", "Intermediate request (lookup, read, read-back)"


# What `Write.last_outcome` holds: the last attempt's outcome, "" before any, or IN_FLIGHT while a
# worker holds the write mid-call. A claim sets IN_FLIGHT and a worker that dies leaves it, which is
# how the next worker knows to check by read before it resends anything.
LastOutcome = models.TextChoices(
    "LastOutcome",
    [(o.name, (o.value, o.label)) for o in AttemptOutcome]
    + [("IN_FLIGHT", ("in_flight", "In flight (a worker holds it mid-call)"))],
)


# The approval queue's order: writes held at send time first (they were due to go out when their
# authorisation lapsed), then the oldest. Shared by the queue and its index (write_decidable_idx).
APPROVAL_QUEUE_ORDER = (
    models.Case(models.When(state=WriteState.HELD_AUTHORIZATION, then=0), default=1),
    models.F("created_at"),
    models.F("id"),
)


class Write(models.Model):
    class Guarantee(models.TextChoices):
        IF_MATCH = "if_match", "If-Match on the base version"
        CONDITIONAL_CREATE = "conditional_create", "Conditional create (If-None-Exist)"
        READ_COMPARE_WRITE = "read_compare_write", "Read-compare-write (weaker: no If-Match at the vendor)"
        LEDGER = "ledger", "Our ledger and check-by-read"

    class Phase(models.TextChoices):
        NONE = "", "-"
        PREPARED = "prepared", "Prepared"
        COMMITTED = "committed", "Committed"
        COMPENSATED = "compensated", "Compensated"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    event = models.ForeignKey(BusinessEvent, on_delete=models.PROTECT, related_name="writes")
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="writes")
    position = models.PositiveSmallIntegerField(default=0, help_text="order within the event")
    resource_type = models.CharField(max_length=64)
    operation = models.CharField(max_length=32, choices=Operation.choices)
    # The FHIR resource we intend the EHR to hold (adapters translate it to their wire format).
    payload = models.JSONField()
    payload_hash = models.CharField(max_length=64)
    # For updates: the version we based the change on (sent as If-Match) and the target's id.
    base_version = models.CharField(max_length=64, blank=True)
    target_resource_id = models.CharField(max_length=128, blank=True)
    target_version = models.CharField(max_length=64, blank=True)
    state = models.CharField(max_length=24, choices=WriteState.choices, default=WriteState.DRAFT)
    state_changed_at = models.DateTimeField(default=timezone.now)
    risk = models.CharField(max_length=16, choices=Risk.choices)
    approval_required = models.BooleanField(default=False)
    # The contract it was decided under: "contract v3", or "contract v3 + tenant override v2".
    contract_version = models.CharField(max_length=64, blank=True)
    # Retention blanked the payload bodies (resource, attempts' bodies, conflict snapshots); hashes kept.
    payload_purged_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=8)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_owner = models.CharField(max_length=128, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.CharField(max_length=16, blank=True)
    last_error = models.TextField(blank=True)
    # Set after a database restore (or a restore detected on worker start): the EHR may hold this write
    # already, so the worker looks it up by our identifier before sending it.
    verify_before_send = models.BooleanField(default=False)
    patient_ref = models.CharField(max_length=128)
    # Writes of one stream (tenant + patient + resource type) are sent in event order.
    stream_key = models.CharField(max_length=300)
    correlation_id = models.CharField(max_length=64)
    guarantee = models.CharField(max_length=24, choices=Guarantee.choices, blank=True)
    phase = models.CharField(max_length=16, choices=Phase.choices, blank=True, default="")
    # What the EHR stored differs from what we sent (read-back after commit).
    readback_diff = models.JSONField(default=list, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    # Dry run: the requests that would have been made; shadow: field-level divergence from the EHR.
    preview = models.JSONField(null=True, blank=True)
    divergence = models.JSONField(null=True, blank=True)
    # Extra context for the worker (2PC previous status, compensation target, ...).
    context = models.JSONField(default=dict, blank=True)
    supersedes = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="superseded_by"
    )
    compensates = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="compensated_by"
    )
    replay_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="replays"
    )
    compensation = models.ForeignKey(
        "writeback.Compensation", null=True, blank=True, on_delete=models.PROTECT, related_name="writes"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            # run_sync_worker's claim query: due writes in claimable states, oldest first.
            models.Index(
                fields=["next_attempt_at", "id"],
                condition=models.Q(state__in=CLAIMABLE),
                name="write_due_idx",
            ),
            models.Index(fields=["state", "next_attempt_at"], name="write_state_next_idx"),
            # The approval queue, in its order: without it every page sorts all the waiting writes.
            models.Index(
                *APPROVAL_QUEUE_ORDER,
                condition=models.Q(state__in=DECIDABLE),
                name="write_decidable_idx",
            ),
            # The worker's sweep for writes whose worker died mid-call (only claimed writes are in flight).
            models.Index(
                fields=["lease_expires_at"],
                condition=models.Q(last_outcome=LastOutcome.IN_FLIGHT),
                name="write_inflight_lease_idx",
            ),
            # Per-stream ordering check in the claim query and the console's stream view.
            models.Index(fields=["stream_key", "id"], name="write_stream_idx"),
            models.Index(fields=["tenant", "state"], name="write_tenant_state_idx"),
            # The console's write list filtered by state, newest first (keyset pages on id); a rare state
            # would otherwise cost a walk over the whole ledger per page.
            models.Index(fields=["state", "-id"], name="write_state_id_idx"),
            models.Index(fields=["patient_ref"], name="write_patient_idx"),
            models.Index(fields=["resource_type", "state"], name="write_type_state_idx"),
            models.Index(fields=["created_at"], name="write_created_idx"),
            models.Index(fields=["target_resource_id"], name="write_target_idx"),
            models.Index(fields=["correlation_id"], name="write_correlation_idx"),
            # Reconciliation looks writes up by the identifier value the EHR shows: a replay carries
            # its original's (context["identity"]), so that value is indexed too.
            models.Index(KeyTransform("identity", "context"), name="write_identity_idx"),
            models.Index(fields=["risk", "state"], name="write_risk_state_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.resource_type} {self.operation} {self.uid} [{self.state}]"

    @property
    def is_final(self) -> bool:
        return self.state in FINAL

    @staticmethod
    def make_stream_key(tenant_id: int, patient_ref: str, resource_type: str) -> str:
        return f"{tenant_id}:{patient_ref}:{resource_type}"


class WriteAttempt(models.Model):
    Outcome = AttemptOutcome

    write = models.ForeignKey(Write, on_delete=models.CASCADE, related_name="attempts_log")
    number = models.PositiveIntegerField()
    worker_id = models.CharField(max_length=128, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    correlation_id = models.CharField(max_length=64, blank=True)
    method = models.CharField(max_length=8, blank=True)
    url = models.CharField(max_length=1000, blank=True)
    request_headers = models.JSONField(default=dict, blank=True)
    request_body_hash = models.CharField(max_length=64, blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["write", "number"]
        indexes = [models.Index(fields=["started_at"], name="attempt_started_idx")]

    def __str__(self) -> str:
        return f"attempt {self.number} of write {self.write_id}: {self.outcome}"


class Approval(models.Model):
    class Decision(models.TextChoices):
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"

    write = models.ForeignKey(Write, on_delete=models.CASCADE, related_name="approvals")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=16, choices=Decision.choices)
    rationale = models.TextField()
    # The approval covers exactly this payload; a changed payload voids it.
    payload_hash = models.CharField(max_length=64)
    decided_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    voided_at = models.DateTimeField(null=True, blank=True)
    void_reason = models.CharField(max_length=200, blank=True)
    # Given for a write held at send time because its authorisation lapsed: the approver answers for
    # sending it in place of the initiator, submitter or token that no longer may.
    reauthorizes = models.BooleanField(default=False)

    class Meta:
        ordering = ["-decided_at"]

    def __str__(self) -> str:
        return f"{self.decision} by {self.approver_id} for write {self.write_id}"

    def is_valid_for(self, payload_hash: str, at=None) -> bool:
        at = at or timezone.now()
        return (
            self.decision == self.Decision.APPROVED
            and self.voided_at is None
            and self.payload_hash == payload_hash
            and self.expires_at > at
        )


class WriteEditor(models.Model):
    """A person who shaped a write's payload after intake: the four-eyes rule keeps them from approving it.

    A write made in place of another (a replay, a conflict's resolution) inherits the other's editors."""

    class How(models.TextChoices):
        EDIT = "edit", "Edited the payload (replay)"
        CONFLICT_RESOLUTION = "conflict_resolution", "Reconciled a conflict"
        CORRECTION = "correction", "Requested a clinical correction"

    write = models.ForeignKey(Write, on_delete=models.CASCADE, related_name="editors")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    how = models.CharField(max_length=24, choices=How.choices)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["write", "user", "how"], name="write_editor_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.how} write {self.write_id}"


class Conflict(models.Model):
    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    write = models.ForeignKey(Write, on_delete=models.CASCADE, related_name="conflicts")
    base = models.JSONField(null=True, blank=True)
    ours = models.JSONField()
    theirs = models.JSONField(null=True, blank=True)
    base_version = models.CharField(max_length=64, blank=True)
    theirs_version = models.CharField(max_length=64, blank=True)
    # [{"path", "base", "ours", "theirs", "changed": "ours"|"theirs"|"both"}]
    diff = models.JSONField(default=list)
    resolution = models.JSONField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution_write = models.ForeignKey(
        Write, null=True, blank=True, on_delete=models.PROTECT, related_name="resolves_conflicts"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"conflict {self.uid} on write {self.write_id}"


class Compensation(models.Model):
    class Kind(models.TextChoices):
        ROLLBACK = "rollback", "Technical rollback"
        CORRECTION = "correction", "Clinical correction"

    class Status(models.TextChoices):
        QUEUED = "queued", "Compensating write queued"
        MANUAL = "manual", "Manual task in the EHR"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    reason = models.TextField()
    original_write = models.ForeignKey(Write, on_delete=models.PROTECT, related_name="compensations")
    event = models.ForeignKey(BusinessEvent, on_delete=models.PROTECT, related_name="+")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} {self.uid} ({self.status})"


class ManualTask(models.Model):
    """A correction the vendor offers no API for: exact instructions for a named role, tracked to done."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        DONE = "done", "Confirmed done in the EHR"
        CANCELLED = "cancelled", "Cancelled"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="manual_tasks")
    write = models.ForeignKey(Write, on_delete=models.PROTECT, related_name="manual_tasks")
    compensation = models.ForeignKey(
        Compensation, null=True, blank=True, on_delete=models.PROTECT, related_name="manual_tasks"
    )
    role = models.CharField(max_length=32)
    title = models.CharField(max_length=200)
    instructions = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(default=timezone.now)
    confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    confirmed_at = models.DateTimeField(null=True, blank=True)
    confirmation_note = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "status"], name="manualtask_tenant_status_idx")]

    def __str__(self) -> str:
        return f"{self.title} ({self.status})"
