"""FHIR errors: raised by the profiles' handlers, rendered as OperationOutcome by the profile."""

from __future__ import annotations

from typing import Any


class FhirError(Exception):
    """An answer other than success. `code` is a vendor error code (Epic's numeric codes), rendered
    in `issue.details.coding` by profiles that have such a code system."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        issue: str = "invalid",
        code: str = "",
        expression: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.issue = issue
        self.code = code
        self.expression = expression or []
        self.headers = headers or {}


def operation_outcome(
    message: str,
    *,
    issue: str = "invalid",
    severity: str = "error",
    code: str = "",
    code_system: str = "",
    expression: list[str] | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"severity": severity, "code": issue, "diagnostics": message}
    if code and code_system:
        entry["details"] = {
            "coding": [{"system": code_system, "code": code, "display": message}],
            "text": message,
        }
    if expression:
        entry["expression"] = expression
    return {"resourceType": "OperationOutcome", "issue": [entry]}
