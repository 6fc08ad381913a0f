"""Reads: the querysets the API and the console show, scoped to what the person may see."""

import re

from django.db.models import Q, QuerySet

from writeback.models import ApiToken, AuditEntry, BusinessEvent, PractitionerMapping, Tenant, Write
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


def practitioner_mappings(tenant: Tenant) -> list[PractitionerMapping]:
    """Who is which Practitioner at `tenant` (the console's tenant page)."""
    return list(
        PractitionerMapping.objects.filter(tenant=tenant)
        .select_related("user", "set_by")
        .order_by("user__username")
    )
