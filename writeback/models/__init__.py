from writeback.models.alerts import Alert
from writeback.models.audit import AuditAction, AuditEntry, audit_title
from writeback.models.bulk import BulkItem, BulkOperation
from writeback.models.choices import (
    RISK_ORDER,
    RISK_SEVERITY,
    Operation,
    Risk,
    Severity,
    TenantMode,
    Vendor,
    WritePattern,
)
from writeback.models.events import BusinessEvent, ImmutableError
from writeback.models.ledger import (
    Approval,
    Compensation,
    Conflict,
    LastOutcome,
    ManualTask,
    Write,
    WriteAttempt,
    WriteEditor,
)
from writeback.models.limits import RateBucket
from writeback.models.reconcile import ReconciliationFinding, ReconciliationRun
from writeback.models.tenants import (
    Capability,
    CapabilityChange,
    Consent,
    ContractOverride,
    ContractOverrideChange,
    ContractRule,
    KillSwitch,
    PatientIdentity,
    Tenant,
)
from writeback.models.tokens import ApiToken

__all__ = [
    "RISK_ORDER",
    "RISK_SEVERITY",
    "Alert",
    "ApiToken",
    "Approval",
    "AuditAction",
    "AuditEntry",
    "BulkItem",
    "BulkOperation",
    "BusinessEvent",
    "Capability",
    "CapabilityChange",
    "Compensation",
    "Conflict",
    "Consent",
    "ContractOverride",
    "ContractOverrideChange",
    "ContractRule",
    "ImmutableError",
    "KillSwitch",
    "ManualTask",
    "Operation",
    "PatientIdentity",
    "RateBucket",
    "ReconciliationFinding",
    "ReconciliationRun",
    "Risk",
    "Severity",
    "Tenant",
    "TenantMode",
    "Vendor",
    "Write",
    "WriteAttempt",
    "LastOutcome",
    "WriteEditor",
    "WritePattern",
    "audit_title",
]
