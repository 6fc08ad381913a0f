"""Choices shared by several models. Persisted values are never renamed or reused."""

from django.db import models


class Vendor(models.TextChoices):
    EPIC = "epic", "Epic"
    ATHENA = "athena", "athenahealth"
    VERADIGM = "veradigm", "Veradigm / Allscripts"
    GENERIC = "generic", "Generic FHIR R4"


class TenantMode(models.TextChoices):
    LIVE = "live", "Live"
    SHADOW = "shadow", "Shadow"
    DRY_RUN = "dry_run", "Dry run"
    PAUSED = "paused", "Paused"


class Risk(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"
    VERY_HIGH = "very_high", "Very high"


class Operation(models.TextChoices):
    CREATE = "create", "Create"
    UPDATE = "update", "Update"
    PATCH = "patch", "Patch"
    COMPENSATE = "compensate", "Compensate"
    READ = "read", "Read"
    SEARCH = "search", "Search"
    CONDITIONAL_CREATE = "conditional_create", "Conditional create"


class WritePattern(models.TextChoices):
    CREATE_ONLY = "create_only", "Create only"
    PATCH_WITH_VERSION = "patch_with_version", "Patch with version check"
    APPEND_ONLY = "append_only", "Append only"
    TWO_PHASE_SURROGATE = "two_phase_surrogate", "Two-phase commit surrogate"
    HUMAN_APPROVAL = "human_approval", "Human approval gate"


class Severity(models.TextChoices):
    INFO = "info", "Info (dashboard)"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"
    PAGE = "page", "Page on-call"


RISK_ORDER = {Risk.LOW: 0, Risk.MEDIUM: 1, Risk.HIGH: 2, Risk.VERY_HIGH: 3}
RISK_SEVERITY = {
    Risk.LOW: Severity.INFO,
    Risk.MEDIUM: Severity.WARNING,
    Risk.HIGH: Severity.CRITICAL,
    Risk.VERY_HIGH: Severity.PAGE,
}
