"""Validation issues and the FHIR OperationOutcome they are reported as.

Every problem we find, at any layer, is an `Issue`: severity, FHIR issue-type code, our rule code
(`details.coding[0].code`), the path (`expression`) and a message a person can act on.
"""

from dataclasses import dataclass, field
from typing import Any

RULE_CODE_SYSTEM = "urn:fhir-writeback:rule"


@dataclass(frozen=True)
class Issue:
    rule: str  # our rule code, e.g. "systolic-below-diastolic"
    path: str  # FHIRPath-like location in the event, e.g. "data.measurements[0].systolic"
    message: str
    severity: str = "error"  # fatal | error | warning | information
    code: str = "invalid"  # FHIR IssueType: invalid, required, value, business-rule, conflict, ...

    @property
    def is_error(self) -> bool:
        return self.severity in ("fatal", "error")

    def as_fhir(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "details": {
                "coding": [{"system": RULE_CODE_SYSTEM, "code": self.rule}],
                "text": self.message,
            },
            "diagnostics": self.message,
            "expression": [self.path] if self.path else [],
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.rule,
            "path": self.path,
            "message": self.message,
        }


def error(rule: str, path: str, message: str, code: str = "invalid") -> Issue:
    return Issue(rule=rule, path=path, message=message, severity="error", code=code)


def warning(rule: str, path: str, message: str, code: str = "informational") -> Issue:
    return Issue(rule=rule, path=path, message=message, severity="warning", code=code)


@dataclass
class Report:
    issues: list[Issue] = field(default_factory=list)

    def add(self, issue: Issue) -> None:
        self.issues.append(issue)

    def extend(self, issues: list[Issue]) -> None:
        self.issues.extend(issues)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.is_error]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if not i.is_error]

    @property
    def ok(self) -> bool:
        return not self.errors


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.as_fhir() for i in issues]}


def single(
    rule: str, message: str, *, path: str = "", code: str = "invalid", severity: str = "error"
) -> dict:
    return operation_outcome([Issue(rule=rule, path=path, message=message, severity=severity, code=code)])


class ValidationFailed(Exception):
    """Raised with the issues (errors and warnings) when an event cannot be accepted."""

    def __init__(self, issues: list[Issue], status: int = 422) -> None:
        self.issues = issues
        self.status = status
        super().__init__("; ".join(f"{i.rule} at {i.path}: {i.message}" for i in issues if i.is_error))
