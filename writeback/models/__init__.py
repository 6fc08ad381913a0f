from writeback.models.alerts import SEVERITY_RANK, Alert, AlertDelivery, AlertRoute, AlertState
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
from writeback.models.counts import HourCount, WriteCount
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
    PractitionerMapping,
    Tenant,
    UnmappedAuthor,
)
from writeback.models.tokens import ApiToken

__all__ = [
    "RISK_ORDER",
    "RISK_SEVERITY",
    "SEVERITY_RANK",
    "Alert",
    "AlertDelivery",
    "AlertRoute",
    "AlertState",
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
    "HourCount",
    "ImmutableError",
    "KillSwitch",
    "ManualTask",
    "Operation",
    "PatientIdentity",
    "PractitionerMapping",
    "RateBucket",
    "ReconciliationFinding",
    "ReconciliationRun",
    "Risk",
    "Severity",
    "Tenant",
    "TenantMode",
    "UnmappedAuthor",
    "Vendor",
    "Write",
    "WriteAttempt",
    "LastOutcome",
    "WriteCount",
    "WriteEditor",
    "WritePattern",
    "audit_title",
]
