"""Reads: the querysets the API and the console show, scoped to what the person may see."""

import re

from django.db.models import Count, Q, QuerySet

from writeback.models import (
    ApiToken,
    AuditEntry,
    BusinessEvent,
    ReconciliationFinding,
    ReconciliationRun,
    Tenant,
    Write,
)
from writeback.services.tenants import tenants_for_user


def tenants_visible_to(user, token: ApiToken | None = None) -> QuerySet[Tenant]:
    tenants = tenants_for_user(user)
    if token is not None:
        scoped = list(token.tenants.values_list("pk", flat=True))
        if scoped:
            tenants = tenants.filter(pk__in=scoped)
    return tenants


def writes_visible_to(user, token: ApiToken | None = None) -> QuerySet[Write]:
    return Write.objects.filter(tenant__in=tenants_visible_to(user, token)).select_related("tenant", "event")


def events_visible_to(user, token: ApiToken | None = None) -> QuerySet[BusinessEvent]:
    return BusinessEvent.objects.filter(tenant__in=tenants_visible_to(user, token)).select_related("tenant")


# "Observation/123" or "Observation/123/_history/2", as the console shows an EHR resource.
_EHR_REFERENCE = re.compile(r"([A-Z][A-Za-z]+)/([^/\s]+(?:/_history/[^/\s]+)?)")


def write_search(qs: QuerySet[Write], text: str) -> QuerySet[Write]:
    """Free-text search on ids and clinical keys: write/event id, idempotency key, correlation id,
    patient id or MRN, EHR resource id (optionally `id/_history/version`, or the reference as shown:
    `Type/id` and `Type/id/_history/version`, where the type narrows the match)."""
    text = text.strip()
    if not text:
        return qs
    typed = _EHR_REFERENCE.fullmatch(text)
    if typed is not None:
        return _key_search(qs, text) | _key_search(qs.filter(resource_type=typed[1]), typed[2])
    return _key_search(qs, text)


def _key_search(qs: QuerySet[Write], text: str) -> QuerySet[Write]:
    resource_id, _, version = text.partition("/_history/")
    q = (
        Q(correlation_id=text)
        | Q(patient_ref=text)
        | Q(target_resource_id=resource_id)
        | Q(event__idempotency_key=text)
        | Q(event__source_message_id=text)
        | Q(event__patient_identifier__value=text)
    )
    if version:
        q = Q(target_resource_id=resource_id, target_version=version)
    if _looks_like_uuid(text):
        q |= Q(uid=text) | Q(event__uid=text)
    return qs.filter(q)


def audit_for_write(write: Write) -> QuerySet[AuditEntry]:
    return AuditEntry.objects.filter(write_uid=str(write.uid)).order_by("seq")


def _looks_like_uuid(text: str) -> bool:
    import uuid

    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def reconciliation_findings(
    tenants: QuerySet[Tenant], *, kind: str = "", state: str = "", tenant_slug: str = ""
) -> QuerySet[ReconciliationFinding]:
    """Findings of the tenants a person may see, filtered; open ones first, newest first."""
    qs = ReconciliationFinding.objects.filter(tenant__in=tenants).select_related(
        "tenant", "write", "run", "decided_by", "resolution_write", "task"
    )
    if kind in ReconciliationFinding.Kind.values:
        qs = qs.filter(kind=kind)
    if state in ReconciliationFinding.State.values:
        qs = qs.filter(state=state)
    if tenant_slug:
        qs = qs.filter(tenant__slug=tenant_slug)
    return qs.defer("write__payload", "write__context").order_by("-created_at", "-id")


def reconciliation_counts(tenants: QuerySet[Tenant]) -> dict[str, dict[str, int]]:
    """{kind: {state: n}} over the tenants a person may see (one grouped query)."""
    counts: dict[str, dict[str, int]] = {k: {} for k in ReconciliationFinding.Kind.values}
    rows = (
        ReconciliationFinding.objects.filter(tenant__in=tenants)
        .values("kind", "state")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in rows:
        counts[row["kind"]][row["state"]] = row["n"]
    return counts


def reconciliation_runs(tenants: QuerySet[Tenant], limit: int = 5) -> list[ReconciliationRun]:
    return list(ReconciliationRun.objects.filter(tenant__in=tenants).select_related("tenant")[:limit])
