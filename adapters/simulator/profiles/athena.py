"""athena: athenaOne. FHIR R4 reads everything and creates only QuestionnaireResponse; clinical writes go
through the proprietary v1 REST API (`athena_v1`), which lands them in the same store so FHIR reads see
them. Throttling is a 403 with quota headers, as athena's gateway answers."""

from __future__ import annotations

from typing import Any

from ..capability_statements import athena as athena_statement
from ..messages import Request, Response, json_response
from ..outcomes import FhirError
from .athena_v1 import AthenaV1
from .base import Profile

V1_SCOPE_PREFIX = "athena/service/Athenanet.MDP."
QUOTA_HEADERS = {
    "X-Athena-RateLimit-Limit-Day": "50000",
    "X-Athena-RateLimit-Remaining-Day": "0",
    "Retry-After": "1",
}


class AthenaProfile(Profile):
    name = "athena"
    fhir_base_path = "/fhir/r4"
    token_path = "/oauth2/v1/token"

    def __init__(self, sim) -> None:
        super().__init__(sim)
        self.practice_id = sim.config.practice_id
        self.v1 = AthenaV1(self.store, self.practice_id)

    def surface(self, path: str) -> str | None:
        if path.startswith("/v1/"):
            return "v1"
        return super().surface(path)

    def handle(self, req: Request, surface: str) -> Response:
        return self.v1.handle(req) if surface == "v1" else self.fhir(req)

    def capability_statement(self) -> dict[str, Any]:
        return athena_statement(self.fhir_base)

    def scope_problem(self, req: Request, surface: str, scopes: tuple[str, ...]) -> str:
        if surface != "v1":
            return super().scope_problem(req, surface, scopes)
        if any(s.startswith(V1_SCOPE_PREFIX) for s in scopes):
            return ""
        return f"insufficient_scope: the v1 API needs a scope {V1_SCOPE_PREFIX}*"

    def error(
        self,
        surface: str,
        status: int,
        message: str,
        *,
        issue: str = "processing",
        headers: dict[str, str] | None = None,
    ) -> Response:
        if surface == "v1":
            return json_response(status, {"error": message, "detailedmessage": message}, headers=headers)
        return super().error(surface, status, message, issue=issue, headers=headers)

    def throttled(self, surface: str) -> Response:
        return self.error(
            surface, 403, "Over the API quota; try again later", issue="throttled", headers=QUOTA_HEADERS
        )

    def _check_subject(self, resource: dict[str, Any]) -> None:
        """athena files a questionnaire response in a chart of this practice: the subject must be one."""
        reference = str((resource.get("subject") or {}).get("reference") or "")
        if not reference:
            raise FhirError(
                400, "subject is required (the Patient)", issue="required", expression=["subject"]
            )
        kind, _, patient_id = reference.rpartition("/")
        if not kind.endswith("Patient") or self.store.read("Patient", patient_id) is None:
            raise FhirError(
                422,
                f"subject {reference} is not a patient of practice {self.practice_id}",
                issue="not-found",
                expression=["subject"],
            )

    def create(self, req: Request, resource_type: str) -> Response:
        if resource_type != "QuestionnaireResponse":
            raise FhirError(
                405,
                f"athena's FHIR API does not create {resource_type}; chart writes go through v1",
                issue="not-supported",
            )
        resource = self.resource_body(req, resource_type)
        resource.pop("id", None)
        self._check_subject(resource)
        new_id = self.store.new_id(resource_type, lambda n: f"a-{self.practice_id}.QuestionnaireResponse-{n}")
        stored, _ = self.store.create(resource, resource_id=new_id)
        return self.write_response(req, stored, 201, location=True)
