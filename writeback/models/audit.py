"""The audit trail: append-only, keyed hash chain. Rows are written only by writeback.services.audit."""

from django.db import models


class AuditAction(models.TextChoices):
    """Every action the audit trail records, with the title the console shows for it.

    `writeback.services.audit` refuses any other value, so a new action is added here first. Persisted
    values are never renamed or reused: verifiers and exports of old entries rely on them."""

    ACCESS_REFUSED = "access.refused", "Action refused"
    ALERT_ACKNOWLEDGED = "alert.acknowledged", "Alert acknowledged"
    ALERT_DELIVERY_FAILED = "alert.delivery_failed", "Alert delivery gave up"
    ALERT_ESCALATED = "alert.escalated", "Alert escalated"
    ALERT_RAISED = "alert.raised", "Alert raised"
    ALERT_RESOLVED = "alert.resolved", "Alert resolved"
    ALERT_ROUTE_ADDED = "alert_route.added", "Alert route added"
    ALERT_ROUTE_REMOVED = "alert_route.removed", "Alert route removed"
    API_TOKEN_CREATED = "api_token.created", "API token created"
    API_TOKEN_REVOKED = "api_token.revoked", "API token revoked"
    APPROVAL_VOIDED = "approval.voided", "Approval voided"
    AUDIT_CHAIN_VERIFIED = "audit.chain_verified", "Audit chain verified"
    AUDIT_EXPORTED = "audit.exported", "Audit trail exported"
    AUDIT_HEAD_EXPORTED = "audit.head_exported", "Audit chain head exported"
    BULK_ABORTED = "bulk.aborted", "Bulk replay aborted"
    BULK_FINISHED = "bulk.finished", "Bulk replay finished"
    BULK_ITEM_PROCESSED = "bulk.item_processed", "Bulk replay item"
    BULK_RESUMED = "bulk.resumed", "Bulk replay resumed"
    BULK_STARTED = "bulk.started", "Bulk replay started"
    CAPABILITIES_DISCOVERED = "capabilities.discovered", "Capabilities discovered"
    CAPABILITIES_DISCOVERY_FAILED = "capabilities.discovery_failed", "Capability discovery failed"
    CAPABILITY_CHANGED = "capability.changed", "Capability changed"
    CAPABILITY_CHANGE_APPROVED = "capability.change_approved", "Capability change approved"
    CAPABILITY_CHANGE_REJECTED = "capability.change_rejected", "Capability change rejected"
    CAPABILITY_CHANGE_REQUESTED = "capability.change_requested", "Capability change requested"
    CONFLICT_RESOLVED = "conflict.resolved", "Conflict reconciled"
    CONSENT_CREATED = "consent.created", "Consent recorded"
    CONSENT_REVOKED = "consent.revoked", "Consent revoked"
    CONTRACT_OVERRIDE_APPROVED = "contract_override.change_approved", "Tenant policy change approved"
    CONTRACT_OVERRIDE_CHANGED = "contract_override.changed", "Tenant policy changed"
    CONTRACT_OVERRIDE_REJECTED = "contract_override.change_rejected", "Tenant policy change rejected"
    CONTRACT_OVERRIDE_REQUESTED = "contract_override.change_requested", "Tenant policy change requested"
    EHR_READ = "ehr.read", "EHR read from the console"
    EVENT_DUPLICATE_SUPPRESSED = "event.duplicate_suppressed", "Duplicate event suppressed"
    EVENT_RECEIVED = "event.received", "Event received"
    EVENT_REFUSED = "event.refused", "Event refused"
    KILL_SWITCH_ENGAGED = "kill_switch.engaged", "Kill switch engaged"
    KILL_SWITCH_RELEASED = "kill_switch.released", "Kill switch released"
    LOGIN_LOCKED_OUT = "login.locked_out", "Sign-in locked out"
    MANUAL_TASK_CONFIRMED = "manual_task.confirmed", "Manual task confirmed"
    MANUAL_TASK_CREATED = "manual_task.created", "Manual task created"
    OUTBOUND_REFUSED = "outbound.refused", "Outbound request refused"
    PAYLOADS_PURGED = "payloads.purged", "PHI payloads purged (retention)"
    PERMISSION_GRANTED = "permission.granted", "Permission granted"
    PRACTITIONER_MAPPED = "practitioner.mapped", "Practitioner mapping set"
    PRACTITIONER_UNMAPPED = "practitioner.unmapped", "Practitioner mapping removed"
    RECONCILIATION_ACCEPTED = (
        "reconciliation.accepted",
        "Reconciliation finding accepted: the EHR's state stands",
    )
    RECONCILIATION_ADOPTED = "reconciliation.adopted", "Orphan adopted: committed as found at the EHR"
    RECONCILIATION_CORRECTION_REQUESTED = (
        "reconciliation.correction_requested",
        "Drift: correction in the EHR requested",
    )
    RECONCILIATION_FINISHED = "reconciliation.finished", "Reconciliation sweep finished"
    RECONCILIATION_RESENT = "reconciliation.resent", "Missing write resent"
    RESTORE_DETECTED = "restore.detected", "Database restore detected"
    RESTORE_RECOVERY = "restore.recovery", "Writes marked to verify before sending (restore)"
    TENANT_ACCESS_GRANTED = "tenant.access_granted", "Tenant access granted"
    TENANT_ACCESS_REVOKED = "tenant.access_revoked", "Tenant access revoked"
    TENANT_ALERT_THRESHOLDS_CHANGED = "tenant.alert_thresholds_changed", "Tenant alert thresholds changed"
    TENANT_AUTHOR_POLICY_CHANGED = "tenant.author_policy_changed", "Tenant author policy changed"
    TENANT_BASE_URL_CHANGED = "tenant.base_url_changed", "Tenant base URL changed"
    TENANT_CONSENT_POLICY_CHANGED = "tenant.consent_policy_changed", "Tenant consent policy changed"
    TENANT_CREATED = "tenant.created", "Tenant created"
    TENANT_MODE_CHANGED = "tenant.mode_changed", "Tenant mode changed"
    TENANT_RETENTION_CHANGED = "tenant.retention_changed", "Tenant retention period changed"
    TEST_REPLAY_CREATED = "test_replay.created", "Replayed into a test tenant"
    WRITE_APPROVED = "write.approved", "Write approved"
    WRITE_CHECK_SCHEDULED = "write.check_scheduled", "Check by read scheduled"
    WRITE_CORRECTION_REQUESTED = "write.correction_requested", "Clinical correction requested"
    WRITE_CREATED = "write.created", "Write created from the event"
    WRITE_HELD_AUTHORIZATION = "write.held_authorization", "Held before sending: authorisation lapsed"
    WRITE_PREPARED = "write.prepared", "Prepared: current version read and recorded"
    WRITE_READBACK = "write.readback", "Read back after commit"
    WRITE_REJECTED = "write.rejected", "Write rejected"
    WRITE_REPLAYED = "write.replayed", "Replay requested"
    WRITE_RETRY_SCHEDULED = "write.retry_scheduled", "Retry scheduled"
    WRITE_ROLLBACK_REQUESTED = "write.rollback_requested", "Technical rollback requested"
    WRITE_TRANSITION = "write.transition", "State changed"


def audit_title(action: str) -> str:
    """The console's title for an action (entries written before an action was named keep their code)."""
    try:
        return AuditAction(action).label
    except ValueError:
        return action


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
    # HMAC-SHA256 under the key named by key_id (a fingerprint, writeback.audit_keys); "" marks the
    # unkeyed SHA-256 entries written before the chain was keyed.
    hash = models.CharField(max_length=64)
    key_id = models.CharField(max_length=16, blank=True, default="")

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
