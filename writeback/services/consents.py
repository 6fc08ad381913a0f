"""Consent: recorded per patient and tenant, checked at intake and again just before sending.

Fail closed: no consent, a revoked one, an expired one or one whose scope does not cover the write
means no write, with the reason.

A consent's scope names resource types (rows of the contract) and actions (`Consent.Action`: the FHIR
interactions we perform, `create`, `update`, `patch`, `delete`); an empty list means all. Each write is
checked against its own operation. A word outside that vocabulary is refused when the consent is
recorded: stored, it would only refuse every write later, with nobody told why.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from django.db import transaction
from django.utils import timezone

from writeback.canonical.dates import DateProblem, parse_instant
from writeback.errors import DomainError
from writeback.fhir_mapping.common import validation_problem
from writeback.models import AuditAction, Consent, ContractRule, Tenant
from writeback.services import audit

# (resource type, action): one write as consent sees it, e.g. ("Patient", "patch").
ConsentedWrite = tuple[str, str]


@dataclass(frozen=True)
class ConsentDecision:
    ok: bool
    rule: str = ""
    reason: str = ""
    consent: Consent | None = None
    waived: bool = False

    def snapshot(self) -> dict[str, Any] | None:
        if self.waived:
            return {"waived": True}
        c = self.consent
        if c is None:
            return None
        return {
            "id": str(c.uid),
            "status": c.status,
            "resource_types": c.resource_types,
            "actions": c.actions,
            "period_start": c.period_start.isoformat() if c.period_start else None,
            "period_end": c.period_end.isoformat() if c.period_end else None,
            "artifact_hash": c.artifact_hash,
        }


def _uncovered(consent: Consent, needed: set[ConsentedWrite]) -> list[ConsentedWrite]:
    return sorted(
        (rtype, action)
        for rtype, action in needed
        # An operation outside the vocabulary is a caller's mistake: no consent covers it (fail closed).
        if action not in Consent.Action.values
        or (consent.resource_types and rtype not in consent.resource_types)
        or (consent.actions and action not in consent.actions)
    )


@cache
def _consents_sql() -> str:
    table = Consent._meta.db_table  # from the model; every value is a parameter
    return f"SELECT * FROM {table} WHERE tenant_id = %s AND patient_ref = %s ORDER BY created_at DESC"  # noqa: S608


def consents_on_file(tenant: Tenant, patient_ref: str) -> list[Consent]:
    """The patient's consents at `tenant`, newest first (`Consent.Meta.ordering`). Plain SQL built once
    per process, as intake's other reads (`writeback/intake_reads.py`): the ORM spends about 0.45 ms of
    CPU compiling this query for every event, twice what reading the rows costs."""
    return list(Consent.objects.raw(_consents_sql(), [tenant.pk, patient_ref]))


def consents_on_file_many(patients: dict[int, set[str]]) -> dict[tuple[int, str], list[Consent]]:
    """`consents_on_file` for several patients of several tenants ({tenant id: patient refs}) in one
    query, by (tenant id, patient ref); a patient with none is absent. The worker reads a whole claimed
    batch's consents this way."""
    if not patients:
        return {}
    refs = set().union(*patients.values())
    rows = Consent.objects.filter(tenant_id__in=list(patients), patient_ref__in=list(refs)).order_by(
        "-created_at"
    )
    found: dict[tuple[int, str], list[Consent]] = {}
    for c in rows:
        if c.patient_ref in patients[c.tenant_id]:
            found.setdefault((c.tenant_id, c.patient_ref), []).append(c)
    return found


def consent_check(
    *,
    tenant: Tenant,
    patient_ref: str,
    writes: Iterable[ConsentedWrite],
    at: datetime | None = None,
    consents: list[Consent] | None = None,
) -> ConsentDecision:
    """One consent must cover every write given: each (resource type, action) pair, the action being the
    FHIR interaction the write performs (`Consent.Action`)."""
    at = at or timezone.now()
    waived = set(tenant.consent_waived_resource_types or [])
    needed = {(rtype, action) for rtype, action in writes if rtype not in waived}
    if not tenant.consent_required or not needed:
        return ConsentDecision(ok=True, waived=True)
    if consents is None:
        consents = consents_on_file(tenant, patient_ref)
    if not consents:
        return ConsentDecision(False, "consent-missing", f"no consent on file for patient {patient_ref}")
    best_reason: tuple[str, str, Consent] | None = None
    for c in consents:
        if c.status != Consent.Status.ACTIVE:
            best_reason = best_reason or ("consent-revoked", f"consent {c.uid} was revoked", c)
            continue
        if c.period_start and c.period_start > at:
            best_reason = ("consent-not-yet-valid", f"consent {c.uid} starts {c.period_start.isoformat()}", c)
            continue
        if c.period_end and c.period_end <= at:
            best_reason = ("consent-expired", f"consent {c.uid} expired {c.period_end.isoformat()}", c)
            continue
        uncovered = _uncovered(c, needed)
        if uncovered:
            best_reason = (
                "consent-out-of-scope",
                f"consent {c.uid} does not cover {', '.join(f'{a} of {t}' for t, a in uncovered)}",
                c,
            )
            continue
        return ConsentDecision(ok=True, consent=c)
    rule, reason, consent = best_reason
    return ConsentDecision(False, rule, reason, consent)


def _authorize(actor: Any, tenant: Tenant, *, object_id: str = "", request_id: str = "") -> None:
    """People and client apps need the `manage_consent` role or permission on the tenant; internal
    callers (commands, the demo, fixtures) pass a system name or None and are not checked."""
    if getattr(actor, "is_authenticated", False):
        from writeback.services.permissions import require

        require(
            actor,
            "manage_consent",
            tenant,
            object_type="consent",
            object_id=object_id,
            request_id=request_id,
        )


def _scope(resource_types: list[str] | None, actions: list[str] | None) -> tuple[list[str], list[str]]:
    """The scope as stored, or a 422 naming the allowed values."""
    actions = sorted(set(actions or []))
    unknown = [a for a in actions if a not in Consent.Action.values]
    if unknown:
        raise DomainError(
            422,
            "unknown-consent-action",
            f"{', '.join(repr(a[:64]) for a in unknown)} is not an action we perform; allowed: "
            f"{', '.join(Consent.Action.values)} (an empty list means all)",
            "scope.actions",
        )
    resource_types = sorted(set(resource_types or []))
    known = ContractRule.resource_types()
    unknown = [t for t in resource_types if t not in known]
    if unknown:
        raise DomainError(
            422,
            "unknown-resource-type",
            f"{', '.join(repr(t[:64]) for t in unknown)} is not a resource type we write; allowed: "
            f"{', '.join(known)} (an empty list means all)",
            "scope.resource_types",
        )
    return resource_types, actions


def _instant(value: datetime | str | None, path: str) -> datetime | None:
    """A period bound: an aware datetime, or ISO 8601 text with an offset (a time without one is a guess)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        if timezone.is_naive(value):
            raise DomainError(422, "invalid-period", f"{path} has no UTC offset", path)
        return value
    try:
        return parse_instant(value)
    except DateProblem as problem:
        raise DomainError(422, "invalid-period", f"{path}: {problem.message}", path) from None


def _artifact(artifact: dict | None) -> None:
    """The signed consent we keep as proof must be one: a valid FHIR R4 Consent resource."""
    if artifact is None:
        return
    if artifact.get("resourceType") != "Consent":
        raise DomainError(422, "invalid-artifact", "the artifact must be a FHIR Consent resource", "artifact")
    problem = validation_problem(artifact)
    if problem:
        raise DomainError(
            422, "invalid-artifact", f"the artifact is not a valid Consent: {problem}", "artifact"
        )


def consent_create(
    *,
    tenant: Tenant,
    patient_ref: str,
    actor: Any,
    resource_types: list[str] | None = None,
    actions: list[str] | None = None,
    period_start: datetime | str | None = None,
    period_end: datetime | str | None = None,
    artifact: dict | None = None,
    request_id: str = "",
) -> Consent:
    """Records a consent. An unknown action or resource type, a period that cannot be read or ends
    before it starts, and an artifact that is not a valid FHIR Consent are refused (422) and nothing is
    stored."""
    _authorize(actor, tenant, request_id=request_id)
    resource_types, actions = _scope(resource_types, actions)
    _artifact(artifact)
    period_start = _instant(period_start, "period.start")
    period_end = _instant(period_end, "period.end")
    if period_start and period_end and period_end <= period_start:
        raise DomainError(422, "invalid-period", "period.end must be after period.start", "period")
    with transaction.atomic():
        consent = Consent.objects.create(
            tenant=tenant,
            patient_ref=patient_ref,
            resource_types=resource_types,
            actions=actions,
            period_start=period_start,
            period_end=period_end,
            artifact=artifact,
            artifact_hash=audit.sha256_text(artifact) if artifact else "",
            created_by=actor if getattr(actor, "pk", None) else None,
        )
        audit.record(
            AuditAction.CONSENT_CREATED,
            actor=actor,
            tenant=tenant.slug,
            object_type="consent",
            object_id=str(consent.uid),
            request_id=request_id,
            data={
                "patient": patient_ref,
                "resource_types": consent.resource_types,
                "actions": consent.actions,
                "period_start": period_start,
                "period_end": period_end,
                "artifact_hash": consent.artifact_hash,
            },
        )
    return consent


def consent_revoke(*, consent: Consent, actor: Any, reason: str = "", request_id: str = "") -> Consent:
    _authorize(actor, consent.tenant, object_id=str(consent.uid), request_id=request_id)
    with transaction.atomic():
        return _revoke(consent, actor, reason, request_id)


def _revoke(consent: Consent, actor: Any, reason: str, request_id: str) -> Consent:
    consent = Consent.objects.select_for_update().get(pk=consent.pk)
    if consent.status == Consent.Status.REVOKED:
        return consent
    consent.status = Consent.Status.REVOKED
    consent.revoked_at = timezone.now()
    consent.revoked_by = actor if getattr(actor, "pk", None) else None
    consent.revoke_reason = reason
    consent.save(update_fields=["status", "revoked_at", "revoked_by", "revoke_reason"])
    audit.record(
        AuditAction.CONSENT_REVOKED,
        actor=actor,
        tenant=consent.tenant.slug,
        object_type="consent",
        object_id=str(consent.uid),
        request_id=request_id,
        data={"patient": consent.patient_ref, "reason": reason},
    )
    return consent
