"""Tenants (EHR deployments) and what each may do: the contract, capabilities, consents, kill switches."""

import uuid

from django.conf import settings
from django.db import models
from simple_history.models import HistoricalRecords

from writeback.models.choices import Operation, Risk, TenantMode, Vendor, WritePattern


class UnmappedAuthor(models.TextChoices):
    REFUSE = "refuse", "Refuse the event (practitioner-unmapped)"
    ORGANIZATION = "organization", "Attribute to the tenant's Organization"


class Tenant(models.Model):
    class AuthMode(models.TextChoices):
        NONE = "none", "None (local targets)"
        SMART = "smart", "SMART backend services"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200, blank=True)
    vendor = models.CharField(max_length=16, choices=Vendor.choices)
    base_url = models.URLField(max_length=500, help_text="FHIR R4 base URL")
    mode = models.CharField(max_length=16, choices=TenantMode.choices, default=TenantMode.LIVE)
    auth_mode = models.CharField(max_length=16, choices=AuthMode.choices, default=AuthMode.NONE)
    client_id = models.CharField(max_length=200, blank=True)
    token_url = models.URLField(max_length=500, blank=True)
    # A reference to the signing key (file path or environment variable name), never the key itself.
    private_key_ref = models.CharField(max_length=300, blank=True)
    key_id = models.CharField(max_length=200, blank=True)
    scope_style = models.CharField(
        max_length=4, choices=[("v1", "SMART v1"), ("v2", "SMART v2")], default="v2"
    )
    consent_required = models.BooleanField(default=True)
    # Resource types for which this tenant waived the consent requirement (each waiver is audited).
    consent_waived_resource_types = models.JSONField(default=list, blank=True)
    # Vendor context: athena practice and department ids, Unity app name, and so on.
    settings = models.JSONField(default=dict, blank=True)
    # Bulkhead: at most this many writes of this tenant in flight across all workers of one process.
    max_concurrency = models.PositiveSmallIntegerField(default=4)
    # The author every written resource names: what to do when the initiator has no Practitioner here.
    unmapped_author = models.CharField(
        max_length=16, choices=UnmappedAuthor.choices, default=UnmappedAuthor.ORGANIZATION
    )
    # The EHR's own Organization for this deployment ("Organization/ID"): the declared author of
    # unmapped initiators, and the transmitter agent of every Provenance we write.
    organization_ref = models.CharField(max_length=200, blank=True)
    # One Provenance per event, written after the event's other writes (only where the vendor's adapter
    # writes Provenance: see docs/vendors.md).
    write_provenance = models.BooleanField(default=False)
    # Retention: PHI payload bodies of settled writes older than this many days are purged (None: kept).
    retention_days = models.PositiveIntegerField(null=True, blank=True)
    # A test environment (set at creation only): replays of other tenants' writes may target it, and
    # nothing else may; a live tenant can never be turned into one.
    is_test = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["slug"]
        permissions = [("access_tenant", "May act on this tenant's writes")]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_paused(self) -> bool:
        return self.mode == TenantMode.PAUSED


class ContractRule(models.Model):
    """One row of the contract matrix: what we may write for one resource type, and how."""

    resource_type = models.CharField(max_length=64, unique=True)
    event_type = models.CharField(max_length=64)
    pattern = models.CharField(max_length=32, choices=WritePattern.choices)
    operations = models.JSONField(default=list, help_text="operations we may perform")
    # Field-level source of truth: only these elements are ours to write; the rest is EHR-authoritative.
    writable_fields = models.JSONField(default=list)
    risk = models.CharField(max_length=16, choices=Risk.choices)
    approval_required = models.BooleanField(default=False)
    enabled = models.BooleanField(default=True)
    # Bumped on every save: each write records the version it was decided under.
    version = models.PositiveIntegerField(default=1)
    notes = models.TextField(blank=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["resource_type"]

    def __str__(self) -> str:
        return f"{self.resource_type} ({self.pattern})"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            self.version += 1
        super().save(*args, **kwargs)

    @staticmethod
    def resource_types() -> list[str]:
        """The resource types the contract writes: the only ones a consent or a consent waiver may name."""
        return list(ContractRule.objects.order_by("resource_type").values_list("resource_type", flat=True))


class Capability(models.Model):
    """Tenant x resource type x operation: allowed or not, and who said so (discovery or a person)."""

    class Source(models.TextChoices):
        DISCOVERED = "discovered", "Discovered (/metadata)"
        MANUAL = "manual", "Set by hand"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="capabilities")
    resource_type = models.CharField(max_length=64)
    operation = models.CharField(max_length=32, choices=Operation.choices)
    source = models.CharField(max_length=16, choices=Source.choices)
    allowed = models.BooleanField()
    set_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    set_at = models.DateTimeField(auto_now=True)
    notes = models.TextField(blank=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["tenant", "resource_type", "operation", "source"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "resource_type", "operation", "source"], name="capability_unique"
            )
        ]

    def __str__(self) -> str:
        verdict = "allowed" if self.allowed else "refused"
        return f"{self.tenant_id}:{self.resource_type}.{self.operation} {verdict} ({self.source})"


class CapabilityChange(models.Model):
    """A requested change to a manual capability. Widening waits for a second engineer's approval."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for a second engineer"
        APPLIED = "applied", "Applied"
        REJECTED = "rejected", "Rejected"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="capability_changes")
    resource_type = models.CharField(max_length=64)
    operation = models.CharField(max_length=32, choices=Operation.choices)
    allowed = models.BooleanField()
    widens = models.BooleanField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    note = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    requested_at = models.DateTimeField(auto_now_add=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at"]
        indexes = [models.Index(fields=["tenant", "status"], name="capchange_tenant_status_idx")]

    def __str__(self) -> str:
        return f"{self.tenant_id}:{self.resource_type}.{self.operation} -> {self.allowed} ({self.status})"


class ContractOverride(models.Model):
    """A tenant's own version of one contract row. A None/empty column inherits the contract row's value;
    a set one replaces it (within the row's operations and fields: an override never reaches beyond the
    contract). Changed only by `writeback.services.policy`; versioned, with history."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="contract_overrides")
    resource_type = models.CharField(max_length=64)
    approval_required = models.BooleanField(null=True, blank=True)
    risk = models.CharField(max_length=16, choices=Risk.choices, blank=True)
    operations = models.JSONField(null=True, blank=True)
    writable_fields = models.JSONField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["tenant", "resource_type"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "resource_type"], name="contract_override_unique")
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id}:{self.resource_type} override v{self.version}"


class ContractOverrideChange(models.Model):
    """A requested change to a tenant's contract override. Narrowing applies at once; widening waits for
    a second integration engineer who confirms the review checklist (as CapabilityChange does)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for a second engineer"
        APPLIED = "applied", "Applied"
        REJECTED = "rejected", "Rejected"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="contract_override_changes")
    resource_type = models.CharField(max_length=64)
    # The effective row before and after, as {approval_required, risk, operations, writable_fields}.
    before = models.JSONField()
    after = models.JSONField()
    # The override version the request was made against: approving a stale request is refused.
    base_version = models.PositiveIntegerField(default=0)
    widens = models.BooleanField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    note = models.TextField(blank=True)
    checklist = models.JSONField(default=dict, blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    requested_at = models.DateTimeField(auto_now_add=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at"]
        indexes = [models.Index(fields=["tenant", "status"], name="ovchange_tenant_status_idx")]

    def __str__(self) -> str:
        return f"{self.tenant_id}:{self.resource_type} override change ({self.status})"


class Consent(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        REVOKED = "revoked", "Revoked"

    class Action(models.TextChoices):
        """The FHIR interactions we perform on a patient's chart: what a consent's `actions` may name.
        A compensating write is the interaction it performs (an entered-in-error status is an update)."""

        CREATE = "create", "Create"
        UPDATE = "update", "Update"
        PATCH = "patch", "Patch"
        DELETE = "delete", "Delete"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="consents")
    patient_ref = models.CharField(max_length=128)
    # Empty list = every resource type / every action (Consent.Action).
    resource_types = models.JSONField(default=list, blank=True)
    actions = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)
    artifact = models.JSONField(null=True, blank=True, help_text="the FHIR Consent resource")
    artifact_hash = models.CharField(max_length=64, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoke_reason = models.TextField(blank=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at"]
        # Used by the consent checks at intake and before every send.
        indexes = [models.Index(fields=["tenant", "patient_ref", "status"], name="consent_lookup_idx")]

    def __str__(self) -> str:
        return f"consent {self.uid} {self.patient_ref} ({self.status})"


class KillSwitch(models.Model):
    """Stops sending at one level. `hold` stops at once; `drain` lets claimed writes finish, then holds."""

    class Scope(models.TextChoices):
        GLOBAL = "global", "All tenants"
        TENANT = "tenant", "Tenant"
        RESOURCE_TYPE = "resource_type", "Tenant x resource type"
        STREAM = "stream", "One patient stream"

    class Behaviour(models.TextChoices):
        HOLD = "hold", "Hold (keep queued, stop at once)"
        DRAIN = "drain", "Drain (finish in-flight, then hold)"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    scope = models.CharField(max_length=16, choices=Scope.choices)
    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    resource_type = models.CharField(max_length=64, blank=True)
    patient_ref = models.CharField(max_length=128, blank=True)
    behaviour = models.CharField(max_length=8, choices=Behaviour.choices, default=Behaviour.HOLD)
    reason = models.TextField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        # The worker reads the active switches once per claim cycle.
        indexes = [
            models.Index(
                fields=["scope"], condition=models.Q(released_at__isnull=True), name="killswitch_active_idx"
            )
        ]

    def __str__(self) -> str:
        return f"{self.scope} {self.behaviour} ({'active' if self.released_at is None else 'released'})"


class PractitionerMapping(models.Model):
    """A person of ours -> the EHR's own Practitioner at one tenant: the author the chart names."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="practitioners")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    practitioner_ref = models.CharField(max_length=200, help_text="Practitioner/ID at the EHR")
    set_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    set_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["tenant", "user"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user"], name="practitioner_mapping_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id}:{self.user_id} -> {self.practitioner_ref}"


class PatientIdentity(models.Model):
    """The chart identity first seen for a patient id at a tenant; later events must agree with it."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    patient_ref = models.CharField(max_length=128)
    identifier_system = models.CharField(max_length=300)
    identifier_value = models.CharField(max_length=128)
    first_seen_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "patient_ref"], name="patient_identity_unique"),
        ]
        indexes = [
            models.Index(
                fields=["tenant", "identifier_system", "identifier_value"], name="patient_identity_mrn_idx"
            )
        ]

    def __str__(self) -> str:
        return f"{self.patient_ref} = {self.identifier_system}|{self.identifier_value}"


__all__ = [
    "Capability",
    "CapabilityChange",
    "Consent",
    "ContractOverride",
    "ContractOverrideChange",
    "ContractRule",
    "KillSwitch",
    "Operation",
    "PatientIdentity",
    "PractitionerMapping",
    "Tenant",
    "UnmappedAuthor",
]


class ContractStamp(models.Model):
    """One row whose `value` changes on every change to the contract rows, the tenants' overrides or
    their capabilities, made by database triggers (writeback.db.stamps) whatever made the change: a
    service, the admin, a queryset `update()`, a SQL session. Intake reads it with the tenant and keeps
    each tenant's contract in memory for as long as it stays the same (`TenantContract.current`).

    A random number, not a counter: a counter goes back when a transaction rolls back, and a later
    change would then bring back a value an in-memory copy was kept under."""

    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"contract stamp {self.value}"
