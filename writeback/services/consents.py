"""Consent: recorded per patient and tenant, checked at intake and again just before sending.

Fail closed: no consent, a revoked one, an expired one or one whose scope does not cover the write
means no write, with the reason.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from writeback.models import AuditAction, Consent, Tenant
from writeback.services import audit

WRITE_ACTION = "write"


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


def _covers(consent: Consent, resource_types: Iterable[str], action: str) -> bool:
    types_ok = not consent.resource_types or set(resource_types) <= set(consent.resource_types)
    action_ok = not consent.actions or action in consent.actions
    return types_ok and action_ok


def consent_check(
    *,
    tenant: Tenant,
    patient_ref: str,
    resource_types: Iterable[str],
    action: str = WRITE_ACTION,
    at: datetime | None = None,
    consents: list[Consent] | None = None,
) -> ConsentDecision:
    at = at or timezone.now()
    needed = {t for t in resource_types if t not in (tenant.consent_waived_resource_types or [])}
    if not tenant.consent_required or not needed:
        return ConsentDecision(ok=True, waived=True)
    if consents is None:
        consents = list(
            Consent.objects.filter(tenant=tenant, patient_ref=patient_ref).order_by("-created_at")
        )
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
        if not _covers(c, needed, action):
            best_reason = (
                "consent-out-of-scope",
                f"consent {c.uid} does not cover {action} of {', '.join(sorted(needed))}",
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


def consent_create(
    *,
    tenant: Tenant,
    patient_ref: str,
    actor: Any,
    resource_types: list[str] | None = None,
    actions: list[str] | None = None,
    period_start: datetime | None = None,
    period_end: datetime | None = None,
    artifact: dict | None = None,
    request_id: str = "",
) -> Consent:
    _authorize(actor, tenant, request_id=request_id)
    if period_start and period_end and period_end <= period_start:
        raise ValueError("period.end must be after period.start")
    with transaction.atomic():
        consent = Consent.objects.create(
            tenant=tenant,
            patient_ref=patient_ref,
            resource_types=sorted(set(resource_types or [])),
            actions=sorted(set(actions or [])),
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
