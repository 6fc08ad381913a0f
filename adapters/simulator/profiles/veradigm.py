"""veradigm: Veradigm EHR. The FHIR API is read-only (every write is 405), although its `/metadata`
advertises create and update on 12 types; writes go through the Unity RPC API (`unity`)."""

from __future__ import annotations

from typing import Any

from ..capability_statements import veradigm as veradigm_statement
from ..messages import Request, Response, json_response
from ..outcomes import FhirError
from ..redact import redact_body
from .base import Profile
from .unity import UNITY_PATH, Unity


class VeradigmProfile(Profile):
    name = "veradigm"
    versioned = False  # `versioning: no-version`: no ETag, no vread, no history
    keeps_history = False

    def __init__(self, sim) -> None:
        super().__init__(sim)
        self.fhir_base_path = f"/fhir/{sim.config.tenant}"
        self.unity = Unity(self.store, sim.config.unity_users)

    def surface(self, path: str) -> str | None:
        if path.startswith(UNITY_PATH):
            return "unity"
        return super().surface(path)

    def handle(self, req: Request, surface: str) -> Response:
        return self.unity.handle(req) if surface == "unity" else self.fhir(req)

    def faultable(self, req: Request) -> bool:
        return req.path != UNITY_PATH + "GetToken"

    def capability_statement(self) -> dict[str, Any]:
        return veradigm_statement(self.fhir_base)

    def logged_body(self, req: Request) -> str:
        # GetUserAuthentication carries the EHR user's password in Parameter1.
        authenticating = req.path.endswith("GetUserAuthentication") or b"GetUserAuthentication" in req.body
        extra = ("Parameter1",) if self.surface(req.path) == "unity" and authenticating else ()
        return redact_body(req.body, req.content_type, extra)

    def error(
        self,
        surface: str,
        status: int,
        message: str,
        *,
        issue: str = "processing",
        headers: dict[str, str] | None = None,
    ) -> Response:
        if surface == "unity":
            return json_response(status, [{"Error": message}], headers=headers)
        return super().error(surface, status, message, issue=issue, headers=headers)

    def refuse(self, message: str) -> Response:
        raise FhirError(
            405,
            f"{message}: Veradigm's FHIR API is read-only; write through the Unity API",
            issue="not-supported",
        )
